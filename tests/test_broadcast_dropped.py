"""A broadcast that never leaves: the writer still answers at once, and the subscriber still gets
the blog (the hubs' log check delivers it).

The writing instance's Redis is a black hole (it accepts connections and never answers, as a hung
server or a lost network path does), so its broadcast goes nowhere; the subscriber's instance has
a working Redis and reads the publication log every second.
"""

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from stack.services import DaphneInstance, RedisServer, free_port
from tests.live import BLOG_PUBLISHED, LiveApi
from tests.wsclient import GraphQLWSClient

BROADCAST_WAIT = 0.5


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose listener completes TCP handshakes (the kernel does) and never says a word."""
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        yield port


@pytest.mark.timeout(120)
def test_a_dropped_broadcast_neither_holds_the_writer_nor_loses_the_blog(live_env: dict[str, str], black_hole: int):
    with RedisServer() as redis:
        common = {**live_env, "BROADCAST_WAIT_SECONDS": str(BROADCAST_WAIT), "HUB_LOG_CHECK_SECONDS": "1"}
        writer_env = {**common, "REDIS_URL": f"redis://127.0.0.1:{black_hole}/0", "RATE_LIMIT_MUTATIONS": "off"}
        with (
            DaphneInstance("hub-reader", {**common, "REDIS_URL": redis.url}) as reader,
            DaphneInstance("dropping-writer", writer_env) as writer,
        ):
            api = LiveApi(writer.url)
            username, token = api.sign_up()

            async def scenario() -> tuple[float, str]:
                client = await GraphQLWSClient(reader.ws_url).connect()
                try:
                    await client.subscribe(BLOG_PUBLISHED, {"author": username})
                    began = time.monotonic()
                    await asyncio.to_thread(api.create_blog, token, "never broadcast")
                    answered = time.monotonic() - began
                    message = await client.next_data(timeout=15)
                    return answered, message["payload"]["data"]["blogPublished"]["blog"]["title"]
                finally:
                    await client.close()

            answered, title = asyncio.run(scenario())
            # Committed and answered after the bounded wait, not after Redis's socket timeouts.
            assert answered < BROADCAST_WAIT + 2.5, answered
            assert title == "never broadcast"
