"""Fuzz one Daphne instance with malformed frames and hostile documents while a subscriber listens.

Every frame must be answered with an error or a close (the fuzzing client reconnects after each
close), the subscriber must get every event, and the server's memory must stay flat. The run is
reproducible: FUZZ_SEED picks the frames, FUZZ_FRAMES how many. Numbers go to
test-artifacts/fuzz.json.
"""

import asyncio
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from stack.services import REPO_ROOT, DaphneInstance, http_ok
from tests.live import BLOG_PUBLISHED, LiveApi
from tests.wsclient import PROTOCOLS, TRANSPORT_WS, GraphQLWSClient

SEED = int(os.environ.get("FUZZ_SEED", "20261125"))
FRAMES = int(os.environ.get("FUZZ_FRAMES", "300"))
WARM_UP = FRAMES // 3
EVENTS = 10
# Closing codes a hostile frame may earn: bad message, unauthorised, duplicate id, second init,
# and 1000 for a legacy connection_terminate.
CLOSE_CODES = {1000, 4400, 4401, 4403, 4409, 4429}
DEEP_FIELDS = "author { blogs(first: 1) { edges { node { "

Frame = str | bytes


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def random_json(rng: random.Random, depth: int = 3) -> Any:
    """Any JSON value except a well-formed protocol message (objects get no 'type')."""
    kind = rng.randrange(7 if depth else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**63), 2**63)
    if kind == 3:
        return rng.uniform(-1e308, 1e308)
    if kind == 4:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(40)))
    if kind == 5:
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(5))]
    return {f"k{rng.randrange(99)}": random_json(rng, depth - 1) for _ in range(rng.randrange(5))}


def operation(start: str, op_id: str, query: Any, **payload: Any) -> str:
    return json.dumps({"type": start, "id": op_id, "payload": {"query": query, **payload}})


def deep_query(levels: int) -> str:
    """Valid but deeper than GRAPHQL_MAX_DEPTH."""
    return "{ blogs(first: 1) { edges { node { " + DEEP_FIELDS * levels + "title " + "} " * (4 + 4 * levels)


def nested_selections(levels: int) -> str:
    """Deeper than graphql-core's parser nests (200)."""
    return "{ " + "a { " * levels + "b" + " }" * (levels + 1)


def hostile_frames(start: str) -> list[Callable[[random.Random, str], Frame]]:
    """Frame makers, each for something a server must refuse; `start` is subscribe or start."""
    return [
        lambda rng, op: json.dumps(random_json(rng)),
        lambda rng, op: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
        lambda rng, op: "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 80))),
        lambda rng, op: "[" * 100_000 + "]" * 100_000,
        lambda rng, op: json.dumps({"type": rng.choice([7, None, ["subscribe"], {"t": 1}])}),
        lambda rng, op: json.dumps({"type": rng.choice(["launch", "SUBSCRIBE_ALL", "", "next"]), "id": op}),
        lambda rng, op: json.dumps(
            {"type": start, "id": rng.choice([7, "", None, ["1"]]), "payload": {"query": "{ viewer { id } }"}}
        ),
        lambda rng, op: json.dumps(
            {"type": start, "id": op, "payload": rng.choice(["{ viewer { id } }", 5, [], None])}
        ),
        lambda rng, op: operation(start, op, rng.choice([42, None, ["{ viewer { id } }"], {"q": 1}])),
        lambda rng, op: operation(start, op, "{ viewer { id } }", variables=rng.choice([[1], "x", 3])),
        lambda rng, op: operation(start, op, "{ viewer { id } }", operationName=rng.choice([5, ["a"], {"b": 1}])),
        lambda rng, op: operation(start, op, "query A { viewer { id } }", operationName="B"),
        lambda rng, op: operation(start, op, "query A { viewer { id } } query B { viewer { id } }"),
        lambda rng, op: operation(
            start, op, rng.choice(["{ viewer {", "query ($: Int) {}", "}{", "subscription", "{ blogs(first: ) }"])
        ),
        lambda rng, op: operation(
            start, op, "{ " + rng.choice(["blgs", "viewr", "node", "__schema { types { name } }"]) + " }"
        ),
        lambda rng, op: operation(start, op, deep_query(rng.randrange(3, 12))),
        lambda rng, op: operation(start, op, nested_selections(rng.randrange(201, 400))),
        lambda rng, op: operation(start, op, "{ authors { edges { node { blogs { edges { node { title } } } } } } }"),
        lambda rng, op: operation(
            start, op, "{ blogs(first: " + str(rng.choice([-1, 101, 2**31 - 1])) + ") { edges { cursor } } }"
        ),
        lambda rng, op: operation(start, op, "{ viewer { id } }" + " " * rng.randrange(20_001, 400_000)),
        lambda rng, op: operation(start, op, "{ viewer { " + "id " * rng.randrange(2_001, 5_000) + "} }"),
        # Over the message limit:
        lambda rng, op: operation(start, op, "{" + "a" * rng.randrange(600_000, 900_000) + "}"),
        lambda rng, op: operation(
            start,
            op,
            "query($n: Int!) { blogs(first: $n) { edges { cursor } } }",
            variables={"n": rng.choice(["x", 1.5, None, [1]])},
        ),
        lambda rng, op: operation(
            start, op, "subscription { blogPublished(author: " + rng.choice(["5", "true", "[1]"]) + ") { cursor } }"
        ),
        lambda rng, op: operation(
            start, op, 'mutation { createBlog(input: {title: "t", content: "c"}) { blog { id } } }'
        ),
        lambda rng, op: operation(
            start,
            op,
            'mutation { createToken(input: {username: "nobody_'
            + str(rng.randrange(10**9))
            + '", password: "nope"}) { token } }',
        ),
    ]


def is_refusal(message: dict[str, Any]) -> bool:
    if message["type"] in ("error", "connection_error"):
        return True
    return message["type"] in ("next", "data") and bool((message.get("payload") or {}).get("errors"))


async def answer_to(client: GraphQLWSClient, op_id: str) -> dict[str, Any] | int:
    """The reply to one frame, or the close code if the server closed instead."""
    assert client.ws is not None
    try:
        while True:
            message = await client.receive(timeout=20)
            earlier = (
                isinstance(message.get("id"), str) and message["id"].startswith("fuzz-") and message["id"] != op_id
            )
            if message["type"] == "complete" or earlier:
                continue  # the tail of an earlier operation's answer
            return message
    except websockets.ConnectionClosed:
        return client.ws.close_code or 0


@pytest.fixture(scope="module")
def fuzz_server(live_env):
    """An instance of its own, so its memory reflects the fuzzing alone."""
    with DaphneInstance("fuzz", live_env) as server:
        yield server


async def test_fuzzed_connection_is_answered_and_the_subscriber_misses_nothing(fuzz_server, redis_server):
    rng = random.Random(SEED)
    publisher = LiveApi(fuzz_server.url)
    author, token = publisher.sign_up()
    subscriber = await GraphQLWSClient(fuzz_server.ws_url, TRANSPORT_WS).connect()
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        while True:
            received.append(await subscriber.receive(timeout=300))

    # One fuzzing connection per protocol, each replaced whenever the server closes it.
    fuzzers: dict[str, GraphQLWSClient] = {}
    await subscriber.subscribe(BLOG_PUBLISHED, {"author": author})
    listener = asyncio.create_task(listen())
    answers: dict[str, int] = {}
    try:
        published: list[str] = []
        rss_before = rss_after_warm_up = rss_kib(fuzz_server.pid)
        began = time.monotonic()
        rss_series = []
        for number in range(FRAMES):
            if number == WARM_UP:
                rss_after_warm_up = rss_kib(fuzz_server.pid)
            if number % 100 == 0:
                rss_series.append(rss_kib(fuzz_server.pid))
            if number % (FRAMES // EVENTS) == 0 and len(published) < EVENTS:
                published.append(publisher.create_blog(token, f"event {len(published)}")["id"])
            protocol = rng.choice(PROTOCOLS)
            if protocol not in fuzzers or fuzzers[protocol].ws is None:
                fuzzers[protocol] = await GraphQLWSClient(fuzz_server.ws_url, protocol).connect()
            fuzzer = fuzzers[protocol]
            start = "subscribe" if fuzzer.protocol == TRANSPORT_WS else "start"
            makers = hostile_frames(start)
            maker = rng.randrange(len(makers))
            op_id = f"fuzz-{number}"
            frame = makers[maker](rng, op_id)
            await fuzzer.send(frame)
            answer = await answer_to(fuzzer, op_id)
            described = f"frame {number} (maker {maker}, seed {SEED}, {protocol}): {str(frame)[:200]!r} -> {answer}"
            if isinstance(answer, int):
                assert answer in CLOSE_CODES, described
                fuzzer.ws = None
                kind = f"{protocol} close {answer}"
            else:
                assert is_refusal(answer), described
                kind = f"{protocol} {answer['type']}"
            answers[kind] = answers.get(kind, 0) + 1
        elapsed = time.monotonic() - began
        rss_after = rss_kib(fuzz_server.pid)

        deadline = time.monotonic() + 30
        while len(received) < EVENTS and time.monotonic() < deadline and not listener.done():
            await asyncio.sleep(0.05)
        events = [message["payload"]["data"]["blogPublished"]["blog"] for message in received]
        assert [event["id"] for event in events] == published
        assert all("errors" not in message["payload"] for message in received)
        assert fuzz_server.running and http_ok(f"{fuzz_server.url}/healthz")

        growth_mib = (rss_after - rss_after_warm_up) / 1024
        stats = {
            "seed": SEED,
            "frames": FRAMES,
            "seconds": round(elapsed, 2),
            "frames_per_second": round(FRAMES / elapsed, 1),
            "answers": answers,
            "rss_kib": {
                "start": rss_before,
                "after_warm_up": rss_after_warm_up,
                "end": rss_after,
                "every_100_frames": rss_series,
            },
        }
        (REPO_ROOT / "test-artifacts" / "fuzz.json").write_text(json.dumps(stats, indent=2))
        assert growth_mib < 16, f"the server grew by {growth_mib:.1f} MiB after warm-up: {stats}"
    finally:
        listener.cancel()
        await subscriber.close()
        for fuzzer in fuzzers.values():
            await fuzzer.close()
