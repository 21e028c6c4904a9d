"""The deployment topology, natively: HAProxy (deploy/haproxy.cfg) in front of three Daphne
instances on PostgreSQL and Redis, started by the code behind `make stack` (the stack these modules
share: tests/fixtures_stack.py).

Everything goes through the balancer the way a client's traffic does, except where a test needs to
reach one particular instance.
"""

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from notifications.publishing.log import seq_from_cursor
from stack import Stack
from tests.live import BLOG_PUBLISHED, LiveApi, wait_readyz
from tests.reconnect import connect_with_retry, messages_until_closed
from tests.wsclient import PROTOCOLS, GraphQLWSClient

pytestmark = pytest.mark.slow

INSTANCES = 3


@pytest.fixture
def stack(pg_stack: Stack) -> Stack:
    """The shared PostgreSQL stack (tests/fixtures_stack.py): GraphiQL on, whole at the start of each test."""
    return pg_stack


# --- helpers -------------------------------------------------------------------------------


def publish(api: LiveApi, token: str, titles: list[str]) -> list[str]:
    """Create the blogs one after the other (so publish order is this order)."""
    for title in titles:
        api.create_blog(token, title)
    return titles


def titles_of(messages: list[dict[str, Any]]) -> list[str]:
    return [message["payload"]["data"]["blogPublished"]["blog"]["title"] for message in messages]


def seqs_of(messages: list[dict[str, Any]]) -> list[int]:
    return [seq_from_cursor(message["payload"]["data"]["blogPublished"]["cursor"]) for message in messages]


async def next_events(client: GraphQLWSClient, count: int) -> list[dict[str, Any]]:
    messages = [await client.next_data(timeout=20) for _ in range(count)]
    for message in messages:
        assert "errors" not in message["payload"], message
    return messages


async def no_more_events(client: GraphQLWSClient, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await client.receive(timeout=within)


async def subscribers(url: str, count: int, author: str) -> list[GraphQLWSClient]:
    """`count` subscribers to `author`, alternating the two subprotocols, connected one by one."""
    clients: list[GraphQLWSClient] = []
    try:
        for index in range(count):
            client = await GraphQLWSClient(url, PROTOCOLS[index % len(PROTOCOLS)]).connect()
            clients.append(client)
            await client.subscribe(BLOG_PUBLISHED, {"author": author})
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def connect_to_instance(url: str, instance: str, timeout: float = 30) -> GraphQLWSClient:
    """Open sockets through the balancer until one lands on `instance` (round robin gets there)."""
    deadline = time.monotonic() + timeout
    while True:
        client = await connect_with_retry(url, PROTOCOLS[0])
        if client.instance == instance:
            return client
        await client.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"no connection through the balancer reached {instance} within {timeout:g}s")
        await asyncio.sleep(0.1)


async def close_all(clients: list[GraphQLWSClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


# --- tests ---------------------------------------------------------------------------------


async def test_thirty_subscribers_on_every_instance_get_fifty_blogs_once_in_order(stack: Stack):
    api = LiveApi(stack.url)
    username, token = await asyncio.to_thread(api.sign_up)
    clients = await subscribers(stack.ws_url, 30, username)
    try:
        names = {instance.name for instance in stack.instances}
        assert {client.instance for client in clients} == names
        for protocol in PROTOCOLS:
            assert {client.instance for client in clients if client.protocol == protocol} == names

        receiving = [asyncio.create_task(next_events(client, 50)) for client in clients]
        titles = await asyncio.to_thread(publish, api, token, [f"fan-out {n}" for n in range(50)])
        received = await asyncio.gather(*receiving)

        for messages in received:
            assert titles_of(messages) == titles
            seqs = seqs_of(messages)
            assert seqs == sorted(set(seqs))
        await asyncio.gather(*(no_more_events(client) for client in clients))
    finally:
        await close_all(clients)


async def test_a_blog_created_on_any_instance_reaches_subscribers_on_every_other(stack: Stack):
    writers = [LiveApi(instance.url) for instance in stack.instances]
    username, token = await asyncio.to_thread(writers[0].sign_up)
    clients = []
    try:
        for instance, protocol in zip(stack.instances, PROTOCOLS * INSTANCES, strict=False):
            client = await GraphQLWSClient(instance.ws_url, protocol).connect()
            clients.append(client)
            assert client.instance == instance.name
            await client.subscribe(BLOG_PUBLISHED, {"author": username})

        titles = []
        for instance, writer in zip(stack.instances, writers, strict=True):
            titles += await asyncio.to_thread(publish, writer, token, [f"written on {instance.name}"])
        for client in clients:
            assert titles_of(await next_events(client, len(titles))) == titles
    finally:
        await close_all(clients)


def test_graphiql_loads_with_its_static_script_through_the_balancer(stack: Stack):
    """DEBUG is off, as in the image: whitenoise serves only collected static files."""
    with httpx.Client(base_url=stack.url, trust_env=False, timeout=10) as browser:
        page = browser.get("/graphql/", headers={"Accept": "text/html"})
        assert page.status_code == 200
        scripts = re.findall(r'<script[^>]* src="(/static/[^"]+)"', page.text)
        assert scripts
        for script in scripts:
            served = browser.get(script)
            assert served.status_code == 200, script
            assert "javascript" in served.headers["content-type"]


async def test_killed_instance_clients_reconnect_elsewhere_and_restart_rejoins(stack: Stack):
    api = LiveApi(stack.url)
    username, token = await asyncio.to_thread(api.sign_up)
    clients = await subscribers(stack.ws_url, 12, username)
    reconnected: list[GraphQLWSClient] = []
    try:
        victim = stack.instances[1]
        doomed = [client for client in clients if client.instance == victim.name]
        survivors = [client for client in clients if client.instance != victim.name]
        assert doomed and survivors

        # Mid-stream: the kill follows a mutation at once, before its events are delivered.
        before = await asyncio.to_thread(publish, api, token, [f"before {n}" for n in range(5)])
        victim.kill()
        during = await asyncio.to_thread(publish, api, token, [f"during {n}" for n in range(5)])

        for client in doomed:
            got = titles_of(await messages_until_closed(client))
            assert got == before[: len(got)]  # whatever arrived before the kill, in order
        for client in doomed:
            replacement = await connect_with_retry(stack.ws_url, client.protocol)
            reconnected.append(replacement)
            assert replacement.instance not in (None, victim.name)
            await replacement.subscribe(BLOG_PUBLISHED, {"author": username})
        after = await asyncio.to_thread(publish, api, token, [f"after {n}" for n in range(5)])

        for client in survivors:
            assert titles_of(await next_events(client, 15)) == before + during + after
        for client in reconnected:
            assert titles_of(await next_events(client, 5)) == after
        await asyncio.gather(*(no_more_events(client) for client in survivors + reconnected))

        victim.restart()
        back = await connect_to_instance(stack.ws_url, victim.name)
        reconnected.append(back)
        await back.subscribe(BLOG_PUBLISHED, {"author": username})
        rejoined = await asyncio.to_thread(publish, api, token, ["rejoined"])
        assert titles_of(await next_events(back, 1)) == rejoined
    finally:
        await close_all(clients + reconnected)


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_readyz_answers_503_while_redis_is_out_and_200_once_it_is_back(stack: Stack, outage: str):
    """Stopped: connections are refused. Frozen (SIGSTOP): they hang, as behind a lost network."""
    redis = stack.redis
    assert redis is not None
    urls = [stack.url] + [instance.url for instance in stack.instances]
    await wait_readyz(urls, 200)

    if outage == "stopped":
        redis.terminate()
        redis.wait(10)
    else:
        redis.freeze()
    try:
        began = time.monotonic()
        answers = await wait_readyz(urls, 503)
        print(f"Redis {outage}: /readyz answered 503 everywhere within {time.monotonic() - began:.1f}s")
        for body in answers.values():
            assert body["status"] == "unavailable"
            # An instance whose hub runs also says its subscriptions cannot be delivered.
            assert "channel_layer" in body["problems"]
            assert set(body["problems"]) <= {"channel_layer", "subscriptions"}, body
    finally:
        redis.start() if outage == "stopped" else redis.thaw()
    began = time.monotonic()
    await wait_readyz(urls, 200)
    print(f"Redis {outage}: /readyz answered 200 everywhere within {time.monotonic() - began:.1f}s of its return")

    # Ready means usable: a new subscriber on every instance hears a new blog again.
    api = LiveApi(stack.url)
    username, token = await asyncio.to_thread(api.sign_up)
    clients = []
    try:
        for instance in stack.instances:
            clients.append(await GraphQLWSClient(instance.ws_url).connect())
            await clients[-1].subscribe(BLOG_PUBLISHED, {"author": username})
        await asyncio.to_thread(publish, api, token, ["after the outage"])
        for client in clients:
            assert titles_of(await next_events(client, 1)) == ["after the outage"]
    finally:
        await close_all(clients)
