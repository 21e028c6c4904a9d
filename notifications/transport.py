"""Direct access to the websocket under Daphne, for the fan-out hot path and for close codes.

The ASGI path costs several coroutine hops per message and cannot tell how much a client has
left unread. Daphne hands every application a `send` that is `partial(server.handle_reply,
protocol)`; this wraps that protocol so the hub can write a frame in one call, see how many bytes
wait in the socket's buffer (a stalled reader), and close with codes Autobahn's sendClose refuses
(1001 going away, 1013 try again later). Under any other server it falls back to ASGI sends.
"""

import asyncio
import functools
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _daphne_protocol(send: Any) -> Any | None:
    if isinstance(send, functools.partial) and send.args:
        protocol = send.args[0]
        if hasattr(protocol, "sendMessage") and hasattr(protocol, "sendCloseFrame"):
            return protocol
    return None


def text_frame(data: bytes) -> bytes:
    """A complete, unmasked websocket text frame (RFC 6455 section 5.2), as a server sends it."""
    size = len(data)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + data


@functools.lru_cache(maxsize=8)
def _cached_text_frame(text: str) -> bytes:
    return text_frame(text.encode())


class EventFrames:
    """One event's result, wrapped once per (message type, operation id) and shared by every socket.

    Clients mostly use the same operation id, so thousands of subscribers get the very same
    bytes: framing costs nothing per subscriber, and writing them is one transport call each.
    """

    def __init__(self, payload_json: str) -> None:
        self.payload_json = payload_json
        self._texts: dict[tuple[str, str], str] = {}
        self._frames: dict[tuple[str, str], bytes] = {}

    def text(self, kind: str, op_id: str) -> str:
        key = (kind, op_id)
        text = self._texts.get(key)
        if text is None:
            text = self._texts[key] = f'{{"type":"{kind}","id":{json.dumps(op_id)},"payload":{self.payload_json}}}'
        return text

    def frame(self, kind: str, op_id: str) -> bytes:
        key = (kind, op_id)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = text_frame(self.text(kind, op_id).encode())
        return frame


def _plain_tcp_socket(transport: Any) -> socket.socket | None:
    """The OS socket under a plain (not TLS) Twisted TCP transport, else None."""
    try:
        from twisted.internet.tcp import Connection
    except ImportError:
        return None
    if isinstance(transport, Connection) and not transport.TLS:
        return transport.socket
    return None


class DirectSocket:
    __slots__ = ("_socket", "_socket_looked_up", "asgi_send", "pending", "protocol")

    def __init__(self, send: Send) -> None:
        self.asgi_send = send
        self.protocol = _daphne_protocol(send)
        self.pending: set[asyncio.Future[None]] = set()  # ASGI sends in flight (not under Daphne)
        self._socket: socket.socket | None = None
        self._socket_looked_up = False

    def _asgi(self, message: dict[str, Any]) -> None:
        future = asyncio.ensure_future(self.asgi_send(message))
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    @property
    def is_open(self) -> bool:
        return self.protocol is None or self.protocol.state == self.protocol.STATE_OPEN

    def send_event(self, frames: EventFrames, kind: str, op_id: str) -> int:
        """Write one event; returns the bytes still unread by the client (see buffered_bytes)."""
        if self.protocol is not None:
            if self.protocol.state == self.protocol.STATE_OPEN:
                return self._write(frames.frame(kind, op_id))
            return 0
        self._asgi({"type": "websocket.send", "text": frames.text(kind, op_id)})
        return 0

    def send_text(self, text: str) -> None:
        """A control message of the GraphQL protocol (a keep-alive): same path, no shared frames."""
        if self.protocol is None:
            self._asgi({"type": "websocket.send", "text": text})
        elif self.protocol.state == self.protocol.STATE_OPEN:
            self._write(_cached_text_frame(text))

    def _write(self, frame: bytes) -> int:
        """Hand the frame to the kernel at once when nothing is queued before it.

        Twisted's transport.write queues the bytes and registers the socket for writing (an
        epoll_ctl), then writes and unregisters on the next loop turn (another): two thirds of
        the event loop's time in a fan-out. One send() is enough when the socket's buffer has
        room, which it has for a client that keeps reading. Whatever does not fit, and anything
        written while older bytes still wait, goes through Twisted as before, so order is kept.
        """
        assert self.protocol is not None
        transport = self.protocol.transport
        if not self._socket_looked_up:
            self._socket, self._socket_looked_up = _plain_tcp_socket(transport), True
        if (
            self._socket is not None
            and not transport._tempDataLen  # Twisted's queue is empty: nothing may go before this frame
            and transport.offset == len(transport.dataBuffer)
            and not transport.disconnecting
        ):
            try:
                sent = self._socket.send(frame)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # Twisted's own write finds the error and closes the connection
            if sent == len(frame):
                return 0
            frame = frame[sent:]
        transport.write(frame)
        return self.buffered_bytes()

    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the client's TCP stack (0 when unknown)."""
        transport = getattr(self.protocol, "transport", None)
        if transport is None:
            return 0
        try:
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        except AttributeError:
            return 0

    def close(self, code: int, reason: str = "", handshake_timeout: float = 30) -> None:
        """Send a close frame; the client reads it after what is already buffered for it."""
        if self.protocol is not None:
            if self.protocol.state == self.protocol.STATE_OPEN:
                # Autobahn drops the TCP connection if the client has not answered the close
                # within this time; a slow reader needs long enough to reach the close frame.
                self.protocol.closeHandshakeTimeout = handshake_timeout
                self.protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:120] or None)
        else:
            self._asgi({"type": "websocket.close", "code": code, "reason": reason})


class DirectSocketMiddleware:
    """Puts a DirectSocket for this connection into the websocket scope."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> Any:
        if scope["type"] == "websocket":
            scope["direct_socket"] = DirectSocket(send)  # Daphne's scope is this connection's own: no copy
        return await self.app(scope, receive, send)
