"""The balancer routes by readiness, natively: HAProxy (deploy/haproxy.cfg) in front of three
Daphne instances, while steady traffic flows through it.

An instance frozen with SIGSTOP (its kernel still accepts connections, nothing answers: a hung
replica) and an instance whose Redis is gone (/readyz says 503) each leave rotation within the
bound the config states, no request waits past its bound meanwhile, no new websocket lands on
them, and they come back by themselves once they answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import websockets

from stack.deployment import Stack
from stack.services import HAPROXY_CONFIG, HAProxy, RedisServer, Service
from tests.live import wait_readyz
from tests.wsclient import GraphQLWSClient

pytestmark = pytest.mark.slow

QUERY_RATE = 20  # GET requests per second through the balancer
OWN_TIME = 1.0  # a request's own time on this shared machine, far above what it takes (printed)


def seconds(name: str) -> float:
    """A timeout or check setting of deploy/haproxy.cfg, in seconds (`timeout server 5s`, `inter 1s`)."""
    text = HAPROXY_CONFIG.read_text()
    match = re.search(rf"^\s*(?:default-server .*?\b)?{re.escape(name)} (\d+)(ms|s)\b", text, re.MULTILINE)
    assert match, f"{name} not found in {HAPROXY_CONFIG}"
    return int(match.group(1)) / (1000 if match.group(2) == "ms" else 1)


def count(name: str) -> int:
    match = re.search(rf"^\s*default-server .*\b{name} (\d+)\b", HAPROXY_CONFIG.read_text(), re.MULTILINE)
    assert match, f"{name} not found in {HAPROXY_CONFIG}"
    return int(match.group(1))


# The stated bounds (deploy/haproxy.cfg's header, docs/scaling.md), from the config itself.
CHECK = seconds("timeout check")
OUT_BOUND = seconds("inter") + CHECK + (count("fall") - 1) * (seconds("fastinter") + CHECK)
BACK_BOUND = seconds("downinter") + (count("rise") - 1) * seconds("fastinter")
REQUEST_BOUND = seconds("timeout server")
SLACK = 1.0  # the checks' own answer time and scheduling on a loaded machine


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(instances=3, postgres=False) as running:
        yield running


@dataclass
class Request:
    started: float
    seconds: float
    status: int | str


class Traffic:
    """Steady `{ __typename }` queries over GET through the balancer, a fresh connection each."""

    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=url, timeout=30, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.done: list[Request] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _one(self) -> None:
        started = time.monotonic()
        try:
            response = await self.client.get("/graphql/", params={"query": "{ __typename }"})
            status: int | str = response.status_code
        except httpx.HTTPError as error:
            status = repr(error)
        self.done.append(Request(started, time.monotonic() - started, status))

    async def _run(self) -> None:
        tasks, began, sent = [], time.monotonic(), 0
        while not self.stop.is_set():
            tasks.append(asyncio.create_task(self._one()))
            sent += 1
            await asyncio.sleep(max(0.0, began + sent / QUERY_RATE - time.monotonic()))
        await asyncio.gather(*tasks)
        await self.client.aclose()

    def __enter__(self) -> Traffic:
        self.task = asyncio.create_task(self._run())
        return self

    async def finish(self) -> list[Request]:
        self.stop.set()
        assert self.task is not None
        await self.task
        return self.done

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()


def log_size(lb: HAProxy) -> int:
    return lb.log_path.stat().st_size


async def wait_for_log(lb: HAProxy, line: str, timeout: float, since: int) -> float:
    """Seconds until `line` is in the balancer's log past offset `since` (HAProxy writes each
    state change there)."""
    began = time.monotonic()
    while line.encode() not in lb.log_path.read_bytes()[since:]:
        assert time.monotonic() - began < timeout, f"not within {timeout:g}s in the balancer's log: {line!r}"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def new_sockets(url: str, number: int) -> list[str | None]:
    """`number` new websockets through the balancer, one after the other: the instance each was
    acknowledged by, or None when it was not acknowledged within the request bound."""
    instances = []
    for _ in range(number):
        client = GraphQLWSClient(url)
        try:
            await asyncio.wait_for(client.connect(), REQUEST_BOUND + OWN_TIME)
            instances.append(client.instance)
        except (OSError, TimeoutError, websockets.InvalidStatus, websockets.ConnectionClosed):
            instances.append(None)
        finally:
            await client.close()
    return instances


async def until_a_socket_lands_on(url: str, name: str, timeout: float) -> float:
    began = time.monotonic()
    while name not in await new_sockets(url, 3):
        assert time.monotonic() - began < timeout, f"no new websocket reached {name} within {timeout:g}s"
    return time.monotonic() - began


def assert_bounded(requests: list[Request]) -> float:
    """Every request answered 200 within its bound; the slowest one's time."""
    assert requests
    assert [r for r in requests if r.status != 200] == []
    slowest = max(r.seconds for r in requests)
    assert slowest <= REQUEST_BOUND + OWN_TIME, sorted(r.seconds for r in requests)[-5:]
    return slowest


@contextlib.contextmanager
def frozen(instance: Service) -> Iterator[None]:
    instance.freeze()
    try:
        yield
    finally:
        instance.thaw()


async def test_a_frozen_instance_leaves_rotation_and_comes_back(stack: Stack):
    lb, victim = stack.lb, stack.instances[1]
    assert lb is not None
    name = lb.server_name(victim.port)
    with Traffic(stack.url) as traffic:
        await asyncio.sleep(1)
        frozen_at, mark = time.monotonic(), log_size(lb)
        with frozen(victim):
            out = await wait_for_log(lb, f"Server web/{name} is DOWN", OUT_BOUND + SLACK, mark)
            # Out of rotation: new websockets all land elsewhere, and at once.
            landed = await new_sockets(stack.ws_url, 6)
            assert None not in landed and name not in landed, landed
            await asyncio.sleep(max(0.0, frozen_at + REQUEST_BOUND + OWN_TIME - time.monotonic()))
        thawed, mark = time.monotonic(), log_size(lb)
        back = await wait_for_log(lb, f"Server web/{name} is UP", BACK_BOUND + SLACK, mark)
        again = await until_a_socket_lands_on(stack.ws_url, name, 10)
        requests = await traffic.finish()
    slowest = assert_bounded(requests)
    print(
        f"\nfrozen: out of rotation after {out:.2f}s (bound {OUT_BOUND:g}s), back {back:.2f}s after SIGCONT "
        f"(bound {BACK_BOUND:g}s), a new websocket on it {again:.2f}s after that; {len(requests)} requests, "
        f"slowest {slowest:.2f}s (5 s on it, then a retry), {sum(r.seconds > 1 for r in requests)} over 1 s; "
        f"frozen for {thawed - frozen_at:.1f}s"
    )


async def test_an_instance_whose_redis_is_gone_leaves_rotation_and_comes_back(stack: Stack):
    """The instance is moved onto a Redis of its own, which is then killed: its /readyz says 503
    (the others' do not), so it leaves rotation; the Redis restarts and it is back."""
    lb, victim = stack.lb, stack.instances[2]
    assert lb is not None
    name = lb.server_name(victim.port)
    own = RedisServer(name="redis-own")
    original = victim.env.get("REDIS_URL", "")
    try:
        own.start()
        victim.env["REDIS_URL"] = own.url
        victim.restart()
        await asyncio.to_thread(lb.wait_in_rotation)
        with Traffic(stack.url) as traffic:
            await asyncio.sleep(1)
            mark = log_size(lb)
            own.kill()
            out = await wait_for_log(lb, f"Server web/{name} is DOWN", OUT_BOUND + SLACK + 3, mark)
            body = (await wait_readyz([victim.url], 503, timeout=5))[victim.url]
            assert "channel_layer" in body["problems"], body
            landed = await new_sockets(stack.ws_url, 6)
            assert None not in landed and name not in landed, landed
            restarted, mark = time.monotonic(), log_size(lb)
            own.start()
            await wait_for_log(lb, f"Server web/{name} is UP", 30, mark)
            back = time.monotonic() - restarted
            again = await until_a_socket_lands_on(stack.ws_url, name, 10)
            requests = await traffic.finish()
        slowest = assert_bounded(requests)
        print(
            f"\nRedis gone: out of rotation after {out:.2f}s (bound {OUT_BOUND:g}s plus the app's Redis timeout), "
            f"back {back:.2f}s after Redis restarted, a new websocket on it {again:.2f}s later; "
            f"{len(requests)} requests, slowest {slowest:.2f}s"
        )
    finally:
        own.stop()
        victim.env["REDIS_URL"] = original
        victim.restart()


async def test_the_balancers_own_health_is_answered_while_every_instance_hangs(stack: Stack):
    """/lb-healthz (the lb container's healthcheck) never goes through an instance."""
    with contextlib.ExitStack() as frozen_all:
        for instance in stack.instances:
            frozen_all.enter_context(frozen(instance))
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            began = time.monotonic()
            answer = await client.get(f"{stack.url}/lb-healthz")
            took = time.monotonic() - began
    assert answer.status_code == 200 and took < 1, (answer.status_code, took)
