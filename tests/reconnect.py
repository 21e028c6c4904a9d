"""What a well-behaved websocket client does when its server dies: notice, then reconnect."""

import asyncio
import time
from typing import Any

import websockets

from tests.wsclient import GraphQLWSClient

# Connecting through the balancer to an instance that is down fails in these ways: it answers
# the upgrade with 502, or the socket closes before connection_ack.
CONNECT_FAILURES = (OSError, asyncio.TimeoutError, websockets.InvalidStatus, websockets.ConnectionClosed)


async def messages_until_closed(client: GraphQLWSClient, timeout: float = 15) -> list[dict[str, Any]]:
    """Read until the far end closes the socket; the data messages that arrived before that.

    Reading is what detects the close: an unread receive queue stops websockets from
    reading the transport, so a client that never reads may never see its server die.
    """
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the socket to {client.instance} was not closed within {timeout:g}s")
        try:
            message = await client.receive(timeout=remaining)
        except websockets.ConnectionClosed:
            return received
        except TimeoutError:
            continue
        if message.get("type") in ("next", "data"):
            received.append(message)


async def connect_with_retry(
    url: str,
    protocol: str,
    timeout: float = 20,
    init_payload: dict[str, Any] | None = None,
) -> GraphQLWSClient:
    """Connect, retrying with a short backoff until connection_ack or `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        client = GraphQLWSClient(url, protocol)
        try:
            return await client.connect(init_payload)
        except CONNECT_FAILURES as error:
            await client.close()
            if time.monotonic() + delay > deadline:
                raise AssertionError(f"could not reconnect to {url} within {timeout:g}s: {error!r}") from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
