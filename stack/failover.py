"""A Redis failover drill on a running Sentinel stack, measured from outside.

    python -m stack.failover [--rounds 2] [--subscribers 6] [--rate 10]

Subscribers connect through the balancer until every instance holds some (told apart by the
`connection_ack` payload's `instance`), all following one author. A publisher writes `createBlog`
through the balancer at a steady rate, one request at a time, and keeps every response. Each round, the
master the sentinels name is SIGKILLed mid-stream; the drill waits for the sentinels to promote the
replica, for every subscriber to receive a publication sent after the kill, and then restarts the
killed node as a replica of the new master (as an operator would), so the next round fails back.
Every instance's /readyz is polled throughout.

tests/test_sentinel.py asserts on the report; `make bench` prints its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

from stack.deployment import Stack
from stack.sentinel import (
    ELECTION_RETRY_DESYNC_S,
    FAILED_ELECTION,
    SentinelRedis,
    SentinelTimings,
    failed_elections,
    sentinel_log_lines,
)
from stack.services import StackError

SIGN_UP = """
mutation SignUp($username: String!, $password: String!) {
  createAuthor(input: {username: $username, password: $password}) { token }
}
"""
CREATE_BLOG = """
mutation CreateBlog($title: String!) {
  createBlog(input: {title: $title, content: "failover drill"}) { blog { id title } }
}
"""
SUBSCRIPTION = """
subscription Drill($author: String) { blogPublished(author: $author) { cursor blog { id title } } }
"""
PROTOCOLS = ("graphql-transport-ws", "graphql-ws")
# Lines of the instances' logs that tell what the hubs did (reported, never asserted: their wording
# belongs to notifications/hub/hub.py).
SENTINEL_EVENTS = ("+odown", FAILED_ELECTION, "+elected-leader", "+promoted-slave", "+switch-master")
HUB_LOG = re.compile(r"Hub |channel layer|broadcast|Rate limit|Event .* failed", re.IGNORECASE)


@dataclass
class Response:
    """One createBlog, as the publisher saw it."""

    title: str
    sent: float  # time.time() before the request
    answered: float
    status: int  # HTTP status; 0 when no HTTP answer came at all
    codes: list[str]  # extensions.code of each GraphQL error
    published: bool  # data.createBlog came back: the blog is committed and must be delivered
    error: str = ""


@dataclass
class Event:
    title: str
    cursor: str
    received: float


@dataclass
class Subscriber:
    index: int
    protocol: str
    instance: str = ""
    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # error/complete messages, an unexpected close

    def first_after(self, moment: float, titles: set[str]) -> Event | None:
        return next((event for event in self.events if event.title in titles and event.received >= moment), None)


@dataclass
class Probe:
    """One GET /readyz of one instance."""

    at: float
    instance: str
    status: int
    seconds: float
    problems: dict[str, str]


@dataclass
class Round:
    killed: str
    promoted: str = ""
    killed_at: float = 0.0
    sentinel_switch_s: float = 0.0  # kill → every sentinel names the new master, and it says it is one
    # Per subscriber: kill → the first publication sent after the kill arrives (None: never).
    first_delivery_s: list[float | None] = field(default_factory=list)
    broadcast_failures: int = 0  # blogpush_broadcast_failures_total, summed over instances, during the round
    published_during_switch: int = 0
    rejoin_s: float = 0.0
    failed_elections: int = 0  # split votes Sentinel had to retry before this failover


@dataclass
class Report:
    subscribers: list[Subscriber]
    responses: list[Response]
    rounds: list[Round]
    readyz: list[Probe]
    sentinel_events: list[str]
    hub_log: list[str]

    @property
    def published_titles(self) -> list[str]:
        return published_titles(self.responses)

    def summary(self) -> dict[str, Any]:
        published = self.published_titles
        return {
            "instances": sorted({s.instance for s in self.subscribers}),
            "subscribers": len(self.subscribers),
            "mutations": len(self.responses),
            "published": len(published),
            "mutation_failures": [asdict(r) for r in self.responses if not r.published],
            "subscribers_complete_in_order": sum(
                [event.title for event in s.events] == published for s in self.subscribers
            ),
            "rounds": [
                {
                    "killed": r.killed,
                    "promoted": r.promoted,
                    "sentinel_switch_s": round(r.sentinel_switch_s, 2),
                    "first_delivery_max_s": _max(r.first_delivery_s),
                    "first_delivery_min_s": _min(r.first_delivery_s),
                    "broadcast_failures": r.broadcast_failures,
                    "published_during_switch": r.published_during_switch,
                    "rejoin_s": round(r.rejoin_s, 1),
                    "failed_elections": r.failed_elections,
                }
                for r in self.rounds
            ],
            "readyz_503": sum(probe.status == 503 for probe in self.readyz),
            "readyz_other": sorted({probe.status for probe in self.readyz} - {200, 503}),
            "readyz_slowest_s": round(max((probe.seconds for probe in self.readyz), default=0.0), 2),
        }


def published_titles(responses: list[Response]) -> list[str]:
    """What must reach every subscriber, in this order: the blogs whose createBlog succeeded."""
    return [response.title for response in responses if response.published]


def _max(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(max(known), 2) if known and len(known) == len(values) else None


def _min(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(min(known), 2) if known else None


Hook = Callable[[int], Awaitable[None]]

# The bound on "kill -> the first publication delivered live after it" (docs/scaling.md):
# - Sentinel: down-after-milliseconds, plus up to 1 s until its first unanswered ping (one a
#   second), the quorum and the vote (milliseconds), and up to 1 s until the promoted replica
#   confirms its role (INFO, polled once a second during a failover);
# - the project: each hub retries the channel layer with a backoff capped at 1 s, then rejoins
#   its group, reads the publication log and fans out what it missed.
# When the sentinels split their vote (each candidate voted for itself first), the election is
# lost and tried again: each such round adds 2 x failover-timeout and Sentinel's random delay.
SENTINEL_ALLOWANCE_S = 2.5
PROJECT_ALLOWANCE_S = 1.5


def delivery_bound_s(timings: SentinelTimings, failed_elections: int = 0) -> float:
    retry_s = 2 * timings.failover_timeout_ms / 1000 + ELECTION_RETRY_DESYNC_S
    return timings.down_after_ms / 1000 + SENTINEL_ALLOWANCE_S + PROJECT_ALLOWANCE_S + failed_elections * retry_s


class Drill:
    def __init__(self, stack: Stack, *, subscribers: int = 6, rate: float = 10.0, pre_roll: float = 1.5) -> None:
        if stack.sentinel is None:
            raise StackError("the drill needs a stack started with sentinel=True")
        self.stack = stack
        self.group: SentinelRedis = stack.sentinel
        self.subscriber_count = subscribers
        self.interval = 1 / rate
        self.pre_roll = pre_roll
        self.author = f"drill_{secrets.token_hex(4)}"
        self.token = ""
        self.subscribers: list[Subscriber] = []
        self.responses: list[Response] = []
        self.readyz: list[Probe] = []
        self.rounds: list[Round] = []
        self._sockets: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._publishing = asyncio.Event()

    # --- the parts ---------------------------------------------------------------------------

    async def _sign_up(self, http: httpx.AsyncClient) -> None:
        variables = {"username": self.author, "password": secrets.token_urlsafe(12)}
        answer = (await http.post("/graphql/", json={"query": SIGN_UP, "variables": variables})).json()
        if answer.get("errors"):
            raise StackError(f"createAuthor failed: {answer['errors']}")
        self.token = answer["data"]["createAuthor"]["token"]

    async def _subscribe(self, index: int, protocol: str) -> Subscriber:
        """A subscriber through the balancer; returns once the server has registered its subscription."""
        subscriber = Subscriber(index, protocol)
        ws = await websockets.connect(self.stack.ws_url, subprotocols=[Subprotocol(protocol)], open_timeout=10)
        self._sockets.append(ws)
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if ack.get("type") != "connection_ack":
            raise StackError(f"expected connection_ack, got {ack}")
        subscriber.instance = (ack.get("payload") or {}).get("instance", "")
        start = "subscribe" if protocol == PROTOCOLS[0] else "start"
        payload = {"query": SUBSCRIPTION, "variables": {"author": self.author}}
        await ws.send(json.dumps({"type": start, "id": "drill", "payload": payload}))
        # The server registers a subscription before it reads the socket's next message: the
        # answer to a query sent after it means the subscription is live.
        await ws.send(json.dumps({"type": start, "id": "barrier", "payload": {"query": "{ __typename }"}}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("id") == "barrier" and message.get("type") in ("next", "data"):
                break
            if message.get("type") == "ping":
                await ws.send(json.dumps({"type": "pong"}))
        self._tasks.append(asyncio.create_task(self._listen(ws, subscriber)))
        return subscriber

    async def _listen(self, ws: Any, subscriber: Subscriber) -> None:
        try:
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind in ("next", "data") and message.get("id") == "drill":
                    data = (message.get("payload") or {}).get("data") or {}
                    published = data.get("blogPublished")
                    if published is None:
                        subscriber.problems.append(f"event without data: {message}")
                        continue
                    subscriber.events.append(Event(published["blog"]["title"], published["cursor"], time.time()))
                elif kind in ("error", "complete", "connection_error") and message.get("id") != "barrier":
                    subscriber.problems.append(json.dumps(message)[:300])
        except websockets.ConnectionClosed as closed:
            subscriber.problems.append(f"socket closed: {closed}")

    async def _connect_subscribers(self) -> None:
        """Through the balancer until every instance holds at least its share (round robin gets there)."""
        names = {instance.name for instance in self.stack.instances}
        per_instance = max(1, self.subscriber_count // len(names))
        counts = dict.fromkeys(names, 0)
        attempts = 0
        while min(counts.values()) < per_instance:
            attempts += 1
            if attempts > 20 * self.subscriber_count:
                raise StackError(f"the balancer spread no subscribers evenly enough: {counts}")
            subscriber = await self._subscribe(len(self.subscribers), PROTOCOLS[attempts % 2])
            if counts[subscriber.instance] >= per_instance:
                await self._sockets.pop().close()
                self._tasks.pop().cancel()
                continue
            counts[subscriber.instance] += 1
            self.subscribers.append(subscriber)

    async def _publish(self, http: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        number = 0
        while self._publishing.is_set():
            number += 1
            title = f"drill {number}"
            sent = time.time()
            try:
                reply = await http.post(
                    "/graphql/", json={"query": CREATE_BLOG, "variables": {"title": title}}, headers=headers
                )
            except httpx.HTTPError as error:
                self.responses.append(Response(title, sent, time.time(), 0, [], False, repr(error)))
            else:
                self.responses.append(_response(title, sent, reply))
            await asyncio.sleep(max(0.0, sent + self.interval - time.time()))

    async def _poll_readyz(self, http: httpx.AsyncClient) -> None:
        async def one(name: str, url: str) -> None:
            began = time.monotonic()
            try:
                reply = await http.get(f"{url}/readyz", timeout=10)
                status, body = reply.status_code, reply.json()
            except (httpx.HTTPError, ValueError) as error:
                status, body = 0, {"problems": {"request": repr(error)}}
            self.readyz.append(Probe(time.time(), name, status, time.monotonic() - began, body.get("problems", {})))

        while True:
            await asyncio.gather(*(one(i.name, i.url) for i in self.stack.instances))
            await asyncio.sleep(0.2)

    async def _broadcast_failures(self, http: httpx.AsyncClient) -> int:
        total = 0
        for instance in self.stack.instances:
            text = (await http.get(f"{instance.url}/metrics")).text
            for line in text.splitlines():
                if line.startswith("blogpush_broadcast_failures_total"):
                    total += int(float(line.rsplit(" ", 1)[1]))
        return total

    async def _until_delivered(self, titles: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(titles <= {event.title for event in s.events} for s in self.subscribers):
                return
            await asyncio.sleep(0.05)

    # --- a round -------------------------------------------------------------------------------

    async def _round(
        self, number: int, http: httpx.AsyncClient, before_kill: Hook | None, after_switch: Hook | None
    ) -> Round:
        await asyncio.to_thread(self.group.wait_vote_cooldown)
        if before_kill is not None:
            await before_kill(number)
        await asyncio.sleep(self.pre_roll)  # the stream flows on the old master
        await asyncio.to_thread(self.group.wait_replicated)
        victim = self.group.master()
        record = Round(killed=victim.name)
        failures_before = await self._broadcast_failures(http)
        elections_before = failed_elections(self.group.sentinels)
        record.killed_at = time.time()
        victim.kill()
        new, _ = await asyncio.to_thread(self.group.wait_for_failover, victim)
        record.promoted = new.name
        record.failed_elections = failed_elections(self.group.sentinels) - elections_before
        record.sentinel_switch_s = time.time() - record.killed_at
        switched_at = time.time()
        record.published_during_switch = sum(
            1 for r in self.responses if r.published and record.killed_at <= r.sent < switched_at
        )
        # Live again: every subscriber received a publication that was sent after the kill.
        after: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            after = {r.title for r in self.responses if r.published and r.sent >= record.killed_at}
            firsts = [s.first_after(record.killed_at, after) for s in self.subscribers]
            if after and all(firsts):
                break
            await asyncio.sleep(0.05)
        record.first_delivery_s = [
            None if event is None else event.received - record.killed_at
            for event in (s.first_after(record.killed_at, after) for s in self.subscribers)
        ]
        if after_switch is not None:
            await after_switch(number)
        await asyncio.sleep(1.0)
        record.broadcast_failures = await self._broadcast_failures(http) - failures_before
        began = time.monotonic()
        await asyncio.to_thread(self.group.rejoin, victim)
        record.rejoin_s = time.monotonic() - began
        return record

    async def run(
        self, rounds: int = 2, *, before_kill: Hook | None = None, after_switch: Hook | None = None
    ) -> Report:
        # No proxy from the environment: every request goes to loopback.
        async with (
            httpx.AsyncClient(base_url=self.stack.url, timeout=30, trust_env=False) as http,
            httpx.AsyncClient(timeout=10, trust_env=False) as direct,
        ):
            await self._sign_up(http)
            await self._connect_subscribers()
            self._publishing.set()
            publisher = asyncio.create_task(self._publish(http))
            poller = asyncio.create_task(self._poll_readyz(direct))
            try:
                for number in range(1, rounds + 1):
                    self.rounds.append(await self._round(number, direct, before_kill, after_switch))
                await asyncio.sleep(self.pre_roll)
            finally:
                self._publishing.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(publisher, 60)
                poller.cancel()
            await self._until_delivered(set(published_titles(self.responses)), timeout=30)
            await asyncio.sleep(0.5)  # anything after the last publication would be a duplicate
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self._sockets), return_exceptions=True)
        return Report(
            self.subscribers,
            self.responses,
            self.rounds,
            self.readyz,
            sentinel_log_lines(self.group.sentinels, SENTINEL_EVENTS),
            self._hub_log(),
        )

    def _hub_log(self) -> list[str]:
        lines = []
        for instance in self.stack.instances:
            if instance.log_path.exists():
                for line in instance.log_path.read_text(errors="replace").splitlines():
                    if HUB_LOG.search(line) and "http_request" not in line:
                        lines.append(f"{instance.name}: {line[:400]}")
        return lines


def _response(title: str, sent: float, reply: httpx.Response) -> Response:
    answered = time.time()
    try:
        body = reply.json()
    except ValueError:
        return Response(title, sent, answered, reply.status_code, [], False, reply.text[:200])
    codes = [(error.get("extensions") or {}).get("code", "") for error in body.get("errors") or []]
    published = bool(((body.get("data") or {}).get("createBlog") or {}).get("blog")) and not codes
    return Response(title, sent, answered, reply.status_code, codes, published)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.failover", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=6)
    parser.add_argument("--rate", type=float, default=10.0, help="createBlog per second")
    args = parser.parse_args(argv)
    with Stack(instances=3, postgres=True, sentinel=True, env={"RATE_LIMIT_MUTATIONS": "off"}) as stack:
        drill = Drill(stack, subscribers=args.subscribers, rate=args.rate)
        report = asyncio.run(drill.run(args.rounds))
    summary = report.summary()
    print(json.dumps({**summary, "sentinel_events": report.sentinel_events, "hub_log": report.hub_log}, indent=2))
    ok = summary["subscribers_complete_in_order"] == summary["subscribers"] and not summary["mutation_failures"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
