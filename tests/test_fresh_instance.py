"""A freshly started instance: its hub delivers before anyone subscribes, a connect storm through
the balancer is refused nothing, and only a real outage answers 1013.

After a deploy every instance is new and every client reconnects at once. What a client sees:
whether it got an event, or a close code.
"""

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import websockets

from stack.services import DaphneInstance, HAProxy, RedisServer, free_port, running
from tests.live import BLOG_PUBLISHED, LiveApi
from tests.wsclient import GraphQLWSClient

STORM = 400  # subscribers connecting at once, split by the balancer over two fresh instances


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def fresh_env(live_env: dict[str, str], redis_url: str) -> dict[str, str]:
    # A short wait for a hub that failed to start: long waits would hide a refusal in a test's timeout.
    return {**live_env, "REDIS_URL": redis_url, "HUB_START_WAIT_SECONDS": "0.2"}


async def readyz(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        response = await client.get(f"{url}/readyz")
        return response.status_code, response.json()


@pytest.mark.timeout(120)
def test_the_hub_joins_at_process_start_before_any_subscriber(live_env: dict[str, str], own_redis: RedisServer):
    with DaphneInstance("fresh", fresh_env(live_env, own_redis.url)) as server:

        async def ready_within(seconds: float) -> tuple[int, dict]:
            deadline = asyncio.get_running_loop().time() + seconds
            while True:
                status, body = await readyz(server.url)
                if status == 200 or asyncio.get_running_loop().time() > deadline:
                    return status, body
                await asyncio.sleep(0.05)

        assert asyncio.run(ready_within(20)) == (200, {"status": "ok"})
        # The hub's membership of the instances' group, in Redis, though nobody ever subscribed here.
        client = own_redis.client()
        groups = list(client.keys("asgi:group:*"))
        assert groups and all(client.zcard(key) == 1 for key in groups), groups


@pytest.fixture(scope="module")
def without_redis(live_env: dict[str, str]) -> Iterator[DaphneInstance]:
    """An instance whose Redis is down from the start (nothing listens on its port)."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with DaphneInstance("no-redis", fresh_env(live_env, nowhere)) as server:
        yield server


@pytest.mark.timeout(120)
def test_readyz_is_503_while_the_hub_cannot_start(without_redis: DaphneInstance):
    """Not ready, and the hub says why, though nobody subscribed."""
    status, body = asyncio.run(readyz(without_redis.url))
    assert status == 503
    assert "subscriptions" in body["problems"] and "channel_layer" in body["problems"], body


@pytest.mark.timeout(120)
def test_a_real_outage_still_closes_subscribers_with_1013(without_redis: DaphneInstance):
    async def subscribe() -> int | None:
        client = await GraphQLWSClient(without_redis.ws_url).connect()
        try:
            await client.start(BLOG_PUBLISHED)
            await client.receive(timeout=20)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        finally:
            await client.close()
        return None

    assert asyncio.run(subscribe()) == 1013


@pytest.mark.timeout(240)
def test_a_connect_storm_on_fresh_instances_through_the_balancer_is_refused_nothing(
    live_env: dict[str, str], own_redis: RedisServer
):
    env = fresh_env(live_env, own_redis.url)
    with (
        running([DaphneInstance(f"storm-{i}", env) for i in (1, 2)]) as instances,
        HAProxy([instance.port for instance in instances]) as lb,
    ):
        url = lb.ws_url

        async def storm() -> tuple[list[str], list[GraphQLWSClient]]:
            async def one() -> GraphQLWSClient | str:
                client = GraphQLWSClient(url)
                try:
                    await client.connect()
                    await client.subscribe(BLOG_PUBLISHED)
                except websockets.ConnectionClosed as closed:
                    return f"closed {closed.rcvd.code if closed.rcvd else None}"
                except Exception as error:
                    return f"{type(error).__name__}: {error}"
                return client

            outcomes = await asyncio.gather(*(one() for _ in range(STORM)))
            return [o for o in outcomes if isinstance(o, str)], [o for o in outcomes if not isinstance(o, str)]

        async def scenario() -> None:
            problems, clients = await storm()
            try:
                assert not problems, f"{len(problems)} of {STORM} refused: {sorted(set(problems))[:5]}"
                assert {client.instance for client in clients} == {"storm-1", "storm-2"}
                api = LiveApi(instances[0].url)
                _, token = await asyncio.to_thread(api.sign_up)
                await asyncio.to_thread(api.create_blog, token, "after the storm")
                received = await asyncio.gather(*(client.next_data(30) for client in clients))
                titles = {m["payload"]["data"]["blogPublished"]["blog"]["title"] for m in received}
                assert titles == {"after the storm"}
            finally:
                await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)

        asyncio.run(scenario())
