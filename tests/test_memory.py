"""Distinct hostile documents cannot grow a process: measured before parsing, cached by bytes.

One instance gets nearly two hundred distinct oversized and near-limit documents over HTTP and
over the websocket while a subscriber on the same process must receive every event published
meanwhile. Its resident memory after warm-up must stay within a stated bound.

The cache is small so that a short warm-up fills it; the flood is sized so that the same traffic
with no bound on the cache grows the process by well over twice GROWTH_BOUND (each cached
near-limit document holds most of a megabyte of syntax tree), and a bounded process by a fraction
of it.
"""

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from stack.services import DaphneInstance
from tests.live import BLOG_PUBLISHED, LiveApi
from tests.wsclient import GraphQLWSClient

pytestmark = pytest.mark.slow

CACHE_BYTES = 4 * 1024 * 1024
# The cache's budget, plus what allocator fragmentation and Django's per-request garbage may
# keep: well under what the same traffic grows a process by when nothing bounds the cache.
GROWTH_BOUND = CACHE_BYTES + 16 * 1024 * 1024
MAX_CHARS = 20_000
WARM_UP_ROUNDS = 6  # a dozen near-limit documents: more than the cache holds
FLOOD_ROUNDS = 30


@pytest.fixture(scope="module")
def instance(live_env: dict[str, str]) -> Iterator[DaphneInstance]:
    env = {**live_env, "GRAPHQL_DOCUMENT_CACHE_BYTES": str(CACHE_BYTES), "GRAPHQL_MAX_DOCUMENT_CHARS": str(MAX_CHARS)}
    with DaphneInstance("memory", env) as running:
        yield running


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def oversized(i: int, size: int) -> str:
    return f"query Q{i} {{ viewer {{ username }} }} # " + "x" * size


def near_limit(i: int) -> str:
    """A valid document just under the size and token limits: it passes, so it may be cached."""
    body = " ".join(f"a{i}_{n}: __typename" for n in range(620))
    return f"query Near{i} {{ {body} }}"[:MAX_CHARS]


def too_many_tokens(i: int) -> str:
    return f"query T{i} {{ " + " ".join(f"f{n}" for n in range(2100)) + " }"


def codes(result: dict) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in result.get("errors") or []]


def http_round(client: httpx.Client, start: int, count: int) -> None:
    for i in range(start, start + count):
        big = client.post("/graphql/", json={"query": oversized(i, 1_500_000)}).json()
        assert codes(big) == ["BAD_USER_INPUT"], big
        near = client.post("/graphql/", json={"query": near_limit(i)}).json()
        assert "errors" not in near, near
        tokens = client.post("/graphql/", json={"query": too_many_tokens(i)}).json()
        assert codes(tokens) == ["BAD_USER_INPUT"], tokens


async def ws_round(client: GraphQLWSClient, start: int, count: int) -> None:
    for i in range(start, start + count):
        await client.start(oversized(i, 400_000))
        reply = await client.receive()
        assert reply["type"] == "error" and reply["payload"][0]["extensions"]["limit"] == "documentSize", reply
        result = await client.execute(near_limit(100_000 + i))
        assert "errors" not in result["payload"], result


@pytest.mark.timeout(300)  # about a hundred megabytes of documents; slow on a busy machine
async def test_distinct_hostile_documents_do_not_grow_the_process_and_subscribers_keep_hearing(
    instance: DaphneInstance,
):
    api = LiveApi(instance.url)
    username, token = api.sign_up()
    subscriber = await GraphQLWSClient(instance.ws_url).connect()
    hostile = await GraphQLWSClient(instance.ws_url).connect()
    published: list[str] = []
    stop = threading.Event()

    def publish() -> None:  # a steady stream of events while the flood goes on
        while not stop.wait(0.3):
            published.append(api.create_blog(token, f"during the flood {len(published)}")["title"])

    received: list[str] = []

    async def listen() -> None:  # read as events arrive, as a live client does
        while True:
            message = await subscriber.next_data(timeout=60)
            received.append(message["payload"]["data"]["blogPublished"]["blog"]["title"])

    http = httpx.Client(base_url=instance.url, timeout=60, trust_env=False)
    listener: asyncio.Task[None] | None = None
    try:
        await subscriber.subscribe(BLOG_PUBLISHED, {"author": username})
        listener = asyncio.ensure_future(listen())
        await asyncio.to_thread(http_round, http, 0, WARM_UP_ROUNDS)  # warm-up: caches fill to their bound
        await ws_round(hostile, 0, WARM_UP_ROUNDS)
        warm = rss_bytes(instance.pid or 0)
        writer = threading.Thread(target=publish)
        writer.start()
        await asyncio.gather(
            asyncio.to_thread(http_round, http, WARM_UP_ROUNDS, FLOOD_ROUNDS),
            ws_round(hostile, WARM_UP_ROUNDS, FLOOD_ROUNDS),
        )
        stop.set()
        await asyncio.to_thread(writer.join)
        after = rss_bytes(instance.pid or 0)
        growth = after - warm
        print(f"RSS after warm-up {warm / 2**20:.1f} MiB, after the flood {after / 2**20:.1f} MiB")
        assert growth < GROWTH_BOUND, f"grew {growth / 2**20:.1f} MiB"
        async with asyncio.timeout(10):
            while len(received) < len(published) and not listener.done():
                await asyncio.sleep(0.05)
        assert received == published and len(published) > 5
    finally:
        stop.set()
        if listener is not None:
            listener.cancel()
        http.close()
        await subscriber.close()
        await hostile.close()
