"""The reference clients of both HTTP transports, through the real HAProxy of the native stack.

graphql-sse's own client (tests/js/sse-subscribe.mjs) and Apollo Client's HttpLink
(tests/js/apollo-subscribe.mjs), in Node as pinned in tests/js/package-lock.json, subscribe
through HAProxy (deploy/haproxy.cfg) to instances other than the one every mutation is
sent to, and must print every blog exactly once, in publish order, while the instance holding
one of them is killed (SIGKILL: the stream is cut) or drained (SIGTERM: the server ends it).
"""

import asyncio
import contextlib
import json
import shutil
from typing import Any

import httpx
import pytest
import websockets

from core import graphql_over_http as spec
from stack import Stack
from stack.services import REPO_ROOT, DaphneInstance
from tests.fixtures_stack import FRONT_END
from tests.live import LATEST_CURSOR, LiveApi, assert_no_errors, scrape, value
from tests.streamclient import APOLLO_ACCEPT, SSE_ACCEPT, StreamClient
from tests.wsclient import GraphQLWSClient

pytestmark = pytest.mark.slow

JS = REPO_ROOT / "tests" / "js"
BLOGS = 40
FOLLOW = "subscription Follow($author: String) { blogPublished(author: $author) { cursor blog { title } } }"


@pytest.fixture
def stack(pg_stack: Stack) -> Stack:
    """The shared PostgreSQL stack (tests/fixtures_stack.py): heartbeats every 2 s, whole at the start of each test."""
    return pg_stack


class NodeSubscriber:
    """One Node process running a reference client; its events and status lines as they come."""

    def __init__(self, script: str, url: str, author: str, after: str) -> None:
        self.args = [script, url, author, after]
        self.events: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self.readers: list[asyncio.Task[None]] = []
        self.changed = asyncio.Event()

    async def start(self) -> "NodeSubscriber":
        node = shutil.which("node")
        assert node, "node is missing: scripts/ensure-system-packages.sh installs Debian's nodejs"
        assert (JS / "node_modules" / "graphql-sse").is_dir(), "tests/js/node_modules is missing: run `make js-deps`"
        self.process = await asyncio.create_subprocess_exec(
            node, *self.args, cwd=JS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.readers = [
            asyncio.create_task(self._read(self.process.stdout, self.events)),
            asyncio.create_task(self._read(self.process.stderr, self.statuses)),
        ]
        return self

    async def _read(self, stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
        while line := await stream.readline():
            try:
                into.append(json.loads(line))
            except ValueError:
                into.append({"status": "unparsed", "line": line.decode(errors="replace")})
            self.changed.set()

    async def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"{what} not seen within {timeout:g}s: {self.statuses[-5:]} {self.events[-3:]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))

    @property
    def titles(self) -> list[str]:
        return [event["title"] for event in self.events]

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


def streams_on(instances: list[DaphneInstance], protocol: str) -> dict[str, float]:
    return {
        instance.name: value(scrape(instance), "blogpush_http_streams", protocol=protocol) for instance in instances
    }


async def subscribers_spread(
    stack: Stack, script: str, protocol: str, author: str, after: str, writer: DaphneInstance
) -> list[tuple[NodeSubscriber, str]]:
    """Three subscribers through the balancer, each on the instance the metrics say it landed on; at least
    two of them on instances the writer is not."""
    placed: list[tuple[NodeSubscriber, str]] = []
    try:
        for _ in range(12):
            before = await asyncio.to_thread(streams_on, stack.instances, protocol)
            subscriber = await NodeSubscriber(script, f"{stack.url}/graphql/", author, after).start()
            placed.append((subscriber, ""))
            for _ in range(100):
                now = await asyncio.to_thread(streams_on, stack.instances, protocol)
                grown = [name for name in now if now[name] > before[name]]
                if grown:
                    placed[-1] = (subscriber, grown[0])
                    break
                await asyncio.sleep(0.1)
            assert placed[-1][1], f"{script}'s stream never showed up in any instance's metrics: {subscriber.statuses}"
            elsewhere = [name for _, name in placed if name != writer.name]
            if len(placed) >= 3 and len(elsewhere) >= 2:
                return placed
        raise AssertionError(f"the balancer never spread the subscribers beyond the writer: {[n for _, n in placed]}")
    except BaseException:
        await asyncio.gather(*(subscriber.stop() for subscriber, _ in placed))
        raise


async def publish_while(api: LiveApi, token: str, titles: list[str], at: int, fault: Any) -> None:
    def run() -> None:
        for index, title in enumerate(titles):
            api.create_blog(token, title)
            if index == at:
                fault()

    await asyncio.to_thread(run)


@pytest.mark.parametrize(
    ("script", "protocol", "fault"),
    [
        ("sse-subscribe.mjs", spec.SSE, "kill"),  # the stream is cut: the client retries with Last-Event-ID
        ("apollo-subscribe.mjs", spec.MULTIPART, "terminate"),  # the server ends it: resubscribe after:
        ("sse-subscribe.mjs", spec.SSE, "terminate"),
        ("apollo-subscribe.mjs", spec.MULTIPART, "kill"),
    ],
)
async def test_reference_clients_through_the_balancer_get_every_blog_once_in_order_across_a_lost_instance(
    stack: Stack, script: str, protocol: str, fault: str
):
    writer = stack.instances[0]
    api = LiveApi(writer.url)  # every mutation goes to this one instance, never through the balancer
    username, token = await asyncio.to_thread(api.sign_up)
    after = assert_no_errors(await asyncio.to_thread(api.post, LATEST_CURSOR))["latestCursor"]
    placed = await subscribers_spread(stack, script, protocol, username, after, writer)
    try:
        victim_name = next(name for _, name in placed if name != writer.name)
        victim = next(instance for instance in stack.instances if instance.name == victim_name)
        titles = [f"{script} {fault} {n}" for n in range(BLOGS)]
        await publish_while(api, token, titles, BLOGS // 3, getattr(victim, fault))
        for subscriber, instance in placed:
            await subscriber.wait_for(
                lambda s: len(s.events) >= BLOGS, 60, f"{BLOGS} blogs at the subscriber on {instance}"
            )
        await asyncio.sleep(1)  # anything extra (a duplicate) would arrive by now
        for subscriber, instance in placed:
            assert subscriber.titles == titles, (instance, subscriber.statuses[-10:])
        cut_off = [subscriber for subscriber, instance in placed if instance == victim.name]
        reconnects = [
            status
            for subscriber in cut_off
            for status in subscriber.statuses
            if status.get("reconnecting") or status.get("status") in ("ended", "error")
        ]
        assert reconnects, "the subscriber on the lost instance never had to reconnect"
        if fault == "terminate":
            assert await asyncio.to_thread(victim.wait, 15) is not None
    finally:
        await asyncio.gather(*(subscriber.stop() for subscriber, _ in placed))


@pytest.mark.parametrize("transport", ["sse", "multipart"])
async def test_the_balancer_passes_heartbeats_and_events_on_at_once(stack: Stack, transport: str):
    """Through deploy/haproxy.cfg (HAProxy forwards as it receives; streams also send X-Accel-Buffering: no)
    every heartbeat reaches the client on time, and an event within moments of its mutation."""
    api = LiveApi(stack.instances[0].url)
    username, token = await asyncio.to_thread(api.sign_up)
    accept = SSE_ACCEPT if transport == "sse" else APOLLO_ACCEPT
    async with StreamClient(stack.url, FOLLOW, {"author": username}, accept=accept) as client:
        loop = asyncio.get_running_loop()
        began = loop.time()
        beats = [await client.next(timeout=5, skip=()) for _ in range(3)]  # the opening one, then every 2 s
        assert all(beat.kind in ("comment", "part") for beat in beats), beats
        assert loop.time() - began < 7
        sent = loop.time()
        await asyncio.to_thread(api.create_blog, token, "through the balancer")
        [result] = await client.results(1, timeout=5)
        assert result["data"]["blogPublished"]["blog"]["title"] == "through the balancer"
        took = (loop.time() - sent) * 1000
        print(f"\n{transport} through the balancer: the event arrived {took:.0f} ms after the mutation was sent")


async def test_the_balancer_passes_preflights_and_cors_headers_untouched_and_keeps_the_one_list(stack: Stack):
    """Through the load balancer, a listed front end's preflight, queries and streams get their
    headers, its websocket opens, the site's own pages (the balancer's origin) too, and any other page is refused."""
    preflight = httpx.options(
        f"{stack.url}/graphql/",
        headers={
            "Origin": FRONT_END,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,last-event-id",
        },
        timeout=30,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == FRONT_END
    assert {"authorization", "content-type", "last-event-id"} <= set(
        preflight.headers["access-control-allow-headers"].split(", ")
    )
    query = httpx.post(f"{stack.url}/graphql/", json={"query": "{ __typename }"}, headers={"Origin": FRONT_END})
    assert query.headers["access-control-allow-origin"] == FRONT_END
    for accept in (SSE_ACCEPT, APOLLO_ACCEPT):
        async with StreamClient(stack.url, FOLLOW, accept=accept, headers={"Origin": FRONT_END}) as client:
            assert client.response is not None and client.streaming
            assert client.response.headers["access-control-allow-origin"] == FRONT_END

    for origin in (FRONT_END, stack.url):
        socket = await GraphQLWSClient(stack.ws_url).connect(additional_headers={"Origin": origin})
        await socket.close()
    for origin in ("https://evil.example", f"{FRONT_END}:8443", stack.url.replace("http:", "https:")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await GraphQLWSClient(stack.ws_url).connect(additional_headers={"Origin": origin})
        assert refused.value.response.status_code == 403, origin
