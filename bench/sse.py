"""SSE subscribers for the benchmark (graphql-sse's distinct connections mode), and their phases.

`LightSse` is `bench.wire.LightSocket`'s counterpart for HTTP streams: one POST with
`Accept: text/event-stream`, the response's chunked framing and SSE events parsed in
`data_received`, each `next` event handed to the worker as the websocket message it would have
been (`{"type": "next", "id": "1", "payload": ...}`), so bench.clients measures both alike.

`sse_phases(bench)` runs after the websocket fan-out, on a fresh `web-1`: SSE subscribers
connected straight to it at growing sizes (`sse_fanout_<n>`, one event at a time as in
`fanout_<n>`), then `sse_idle` (RSS per stream over the fresh instance, CPU, DB).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from bench.wire import host_and_port, open_connection, response_head

SSE = "graphql-sse"


class LightSse(asyncio.Protocol):
    """One SSE subscription. Events go to `on_text` once set, to a queue before that."""

    def __init__(self, host: str, path: str, body: bytes) -> None:
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()  # bytes as received (chunk framing included)
        self.stream = bytearray()  # the body, unframed
        self.head_done = False
        self.chunked = False
        self.early: list[str] = []
        self.on_text: Callable[[str], None] | None = None

    @classmethod
    async def connect(cls, url: str, query: str, variables: dict[str, Any], timeout: float) -> LightSse:
        host, port, path = host_and_port(url)
        body = json.dumps({"query": query, "variables": variables}).encode()
        return await open_connection(lambda: cls(f"{host}:{port}", path, body), host, port, timeout)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.raw += data
        if not self.head_done:
            head = response_head(self.raw)
            if head is None:
                return
            if not head.startswith("HTTP/1.1 200") or "text/event-stream" not in head:
                self._fail(ConnectionError(f"refused: {head.splitlines()[0] if head else head!r}"))
                return
            self.head_done = True
            self.chunked = "transfer-encoding: chunked" in head.lower()
            self.opened.set_result(None)
        self._unframe()
        self._events()

    def _unframe(self) -> None:
        raw = self.raw
        if not self.chunked:
            self.stream += raw
            raw.clear()
            return
        while True:
            line_end = raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(raw[:line_end]).split(b";")[0], 16)
            if len(raw) < line_end + 2 + size + 2:
                return
            self.stream += raw[line_end + 2 : line_end + 2 + size]
            del raw[: line_end + 2 + size + 2]

    def _events(self) -> None:
        stream = self.stream
        while True:
            end = stream.find(b"\n\n")
            if end < 0:
                return
            block = bytes(stream[:end])
            del stream[: end + 2]
            if not block.startswith(b":") and b"event: next" in block:
                data = block[block.index(b"data: ") + 6 :].decode()
                text = f'{{"type":"next","id":"1","payload":{data}}}'
                if self.on_text is not None:
                    self.on_text(text)
                else:
                    self.early.append(text)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the stream opened"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, error: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def listen(self, on_text: Callable[[str], None]) -> None:
        for text in self.early:
            on_text(text)
        self.early.clear()
        self.on_text = on_text

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)
