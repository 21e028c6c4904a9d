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
from typing import TYPE_CHECKING, Any

from bench.wire import host_and_port, open_connection, response_head

if TYPE_CHECKING:
    from bench.runner import Bench

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


def sse_phases(bench: Bench) -> None:
    """SSE subscribers on a fresh web-1: fan-out at growing sizes, then what idle streams cost."""
    from bench.runner import RESERVE, combos
    from bench.servers import rss_bytes

    assert bench.pool is not None and bench.publisher is not None
    web1 = bench.instances[0]
    url = f"{web1.url}/graphql/"
    web1.restart()  # a fresh heap, as for the websocket rows
    bench.publisher.reconnect()
    bench.connect(1, [url], combos(1), protocol=SSE)  # lazy imports are not counted per stream
    bench.warm_up(1)
    bench.close_clients()
    rss_empty = rss_bytes(web1.pid)
    connected = 0
    for size in bench.config.sse_fanout_sizes:
        with bench.phase(f"sse_fanout_{size}", needs=(30 if not connected else 60) + RESERVE) as record:
            if record is None:
                break
            record["protocol"] = SSE
            record["connect"] = bench.connect(size - connected, [url], combos(1), protocol=SSE)
            connected = bench.pool.status()["alive"]
            record["connected"] = connected
            record["warm_up"] = bench.warm_up(connected)
            record.update(
                bench.events(bench.config.fanout_events, bench.config.fanout_budget, connected, instances=[web1])
            )
    if not connected:
        return
    with bench.phase("sse_idle", needs=bench.config.idle_seconds + 5 + RESERVE) as record:
        if record is not None:
            record.update(bench.idle(connected, [web1], bench.config.idle_seconds))
            record["protocol"] = SSE
            record["empty_instance_rss_mb"] = round(rss_empty / 2**20, 1)
            record["rss_kb_per_connection"] = round((rss_bytes(web1.pid) - rss_empty) / 1024 / connected, 1)
    with bench.phase("close_sse_clients", needs=-1e9) as record:
        if record is not None:
            record["close_and_settle_s"] = bench.close_clients()
