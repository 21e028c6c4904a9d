"""A real GraphQL-over-WebSocket client for tests, speaking either subprotocol."""

import asyncio
import collections
import contextlib
import json
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
LEGACY_WS = Subprotocol("graphql-ws")
PROTOCOLS = (TRANSPORT_WS, LEGACY_WS)


class GraphQLWSClient:
    def __init__(self, url: str, protocol: str = TRANSPORT_WS) -> None:
        self.url = url
        self.protocol = protocol
        self.ws: ClientConnection | None = None
        self.ack_payload: dict[str, Any] = {}
        self.next_id = 0
        # Messages of other operations that arrived while execute() waited for its own.
        self.backlog: collections.deque[dict[str, Any]] = collections.deque()

    @property
    def instance(self) -> str | None:
        return self.ack_payload.get("instance")

    async def connect(self, init_payload: dict[str, Any] | None = None, **connect_kwargs: Any) -> "GraphQLWSClient":
        self.ws = await websockets.connect(
            self.url, subprotocols=[Subprotocol(self.protocol)], open_timeout=10, **connect_kwargs
        )
        await self.send({"type": "connection_init", "payload": init_payload or {}})
        ack = await self.receive(skip_keepalive=True)
        assert ack["type"] == "connection_ack", ack
        self.ack_payload = ack.get("payload") or {}
        return self

    async def send(self, message: Any) -> None:
        assert self.ws is not None
        await self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def receive(self, timeout: float = 10, skip_keepalive: bool = True) -> dict[str, Any]:
        assert self.ws is not None
        if self.backlog:
            return self.backlog.popleft()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"nothing but keep-alives for {timeout}s")
            message = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            if skip_keepalive and message.get("type") in ("ka", "ping", "pong"):
                if message["type"] == "ping":
                    # The server may have closed just after its ping (a refusal with 4403): the
                    # messages it sent before its close are still to be read, and asserted on.
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await self.send({"type": "pong"})
                continue
            return message

    async def start(self, query: str, variables: dict[str, Any] | None = None, op_id: str | None = None) -> str:
        if op_id is None:
            self.next_id += 1
            op_id = str(self.next_id)
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"type": kind, "id": op_id, "payload": {"query": query, "variables": variables or {}}})
        return op_id

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        """Start a subscription and return once the server has registered it.

        The protocols have no "subscribed" acknowledgement, but the server handles one socket's
        messages in order and registers a subscription before reading the next message: the
        answer to a query sent right after it is the barrier.
        """
        op_id = await self.start(query, variables)
        barrier = await self.execute("query SubscriptionBarrier { __typename }")
        assert barrier["payload"] == {"data": {"__typename": "Query"}}, barrier
        return op_id

    async def next_data(self, timeout: float = 10) -> dict[str, Any]:
        """The payload of the next `next`/`data` message; fails on anything else."""
        message = await self.receive(timeout)
        assert message["type"] in ("next", "data"), message
        return message

    async def execute(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 10) -> dict[str, Any]:
        """Run a query or mutation over the socket: its result message, after `complete`."""
        op_id = await self.start(query, variables)
        others: list[dict[str, Any]] = []
        try:
            result = await self._own(op_id, others, timeout)
            if result["type"] in ("next", "data"):
                done = await self._own(op_id, others, timeout)
                assert done == {"type": "complete", "id": op_id}, done
            return result
        finally:
            self.backlog.extend(others)

    async def _own(self, op_id: str, others: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
        while True:
            message = await self.receive(timeout)
            if message.get("id") == op_id:
                return message
            others.append(message)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
