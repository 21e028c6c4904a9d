"""A minimal websocket client (RFC 6455) for the benchmark's thousands of subscribers.

On a 2-core machine the subscribers share the cores with the servers they measure: with the
`websockets` library each received message cost ~46 µs of client CPU (a task wake-up and its
generator-based frame parser), 2.4 times the server's cost of sending it, so the clients, not
the server, set the time to the last push. Here frames are parsed in `data_received` and handed
to a callback at once: no task per message. Only what the benchmark needs: one subprotocol,
text frames, answers to pings and closes, no extensions. Real clients in the test suite still
use `websockets`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame, as clients must send them (section 5.3)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    mask = os.urandom(4)
    repeated = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")
    return header + mask + masked


class Opening(Protocol):
    opened: asyncio.Future[None]


P = TypeVar("P", bound=Opening)


def host_and_port(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


async def open_connection(factory: Callable[[], P], host: str, port: int, timeout: float) -> P:
    """Connect, and wait until the protocol says it is open (a response head was accepted)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(factory, host, port)  # type: ignore[type-var]
        await protocol.opened
    return protocol


def response_head(buffer: bytearray) -> str | None:
    """The HTTP response head, taken off the front of `buffer`, once it is all there."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1")
    del buffer[: end + 4]
    return head


class LightSocket(asyncio.Protocol):
    """One client connection. Texts go to `on_text` once set, to `recv()` before that."""

    def __init__(self, host: str, path: str, subprotocol: str) -> None:
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.fragments: list[bytes] = []
        self.early: asyncio.Queue[str] = asyncio.Queue()
        self.on_text: Callable[[str], None] | None = None

    @classmethod
    async def connect(cls, url: str, subprotocol: str, timeout: float) -> LightSocket:
        host, port, path = host_and_port(url)
        return await open_connection(lambda: cls(f"{host}:{port}", path, subprotocol), host, port, timeout)

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            head = response_head(self.buffer)
            if head is None:
                return
            if not head.startswith("HTTP/1.1 101"):
                self._fail(ConnectionError(f"handshake refused: {head.splitlines()[0] if head else head!r}"))
                return
            self.upgraded = True
            self.opened.set_result(None)
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- frames -------------------------------------------------------------------------------
    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            size = second & 0x7F
            start = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            del buffer[: start + size]
            self._frame(first & 0x80, first & 0x0F, payload)

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            self.fragments.append(payload)
            if fin:
                text = b"".join(self.fragments).decode()
                self.fragments = []
                if self.on_text is not None:
                    self.on_text(text)
                else:
                    self.early.put_nowait(text)
        elif opcode == OP_PING:
            self._write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._write(client_frame(OP_CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, error: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    # --- what bench.clients uses --------------------------------------------------------------
    async def send(self, text: str) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the socket is closed")
        self.transport.write(client_frame(OP_TEXT, text.encode()))

    async def recv(self) -> str:
        """The next text message, before `on_text` takes over."""
        getter = asyncio.ensure_future(self.early.get())
        waiting: list[asyncio.Future[Any]] = [getter, self.closed]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        raise ConnectionError("the socket closed")

    def listen(self, on_text: Callable[[str], None]) -> None:
        """From now on every text goes straight to `on_text` (those already queued first)."""
        while not self.early.empty():
            on_text(self.early.get_nowait())
        self.on_text = on_text

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)
