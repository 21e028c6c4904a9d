"""Direct access to the websocket under Daphne, for the fan-out hot path and for close codes.

The ASGI path costs several coroutine hops per message and cannot tell how much a client has
left unread. Daphne hands every application a `send` that is `partial(server.handle_reply,
protocol)`; this wraps that protocol so the hub can write a frame in one call, see how many bytes
wait in the socket's buffer (a stalled reader), and close with codes Autobahn's sendClose refuses
(1001 going away, 1013 try again later). Under any other server it falls back to ASGI sends.

Everything here that reads a private attribute of Daphne, Twisted or Autobahn sits in the
section marked below, and nowhere else; those three are pinned in requirements.txt and
tests/test_internals.py fails loudly when a version bump changes what this relies on. At run
time a transport lacking them raises instead of quietly turning the slow-reader guard off.
"""

import asyncio
import functools
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from notifications.frames import EventFrames

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


# ---------------------------------------------------------------- private internals (pinned)


def daphne_protocol(send: Any) -> Any | None:
    """The Autobahn protocol behind Daphne's `send` (a partial of Server.handle_reply), else None."""
    if isinstance(send, functools.partial) and send.args and getattr(send.func, "__name__", "") == "handle_reply":
        protocol = send.args[0]
        if hasattr(protocol, "sendCloseFrame") and hasattr(protocol, "STATE_OPEN"):
            return protocol
    return None


def plain_tcp_socket(transport: Any) -> socket.socket | None:
    """The OS socket under a plain (not TLS) Twisted TCP transport, else None."""
    try:
        from twisted.internet.tcp import Connection
    except ImportError:
        return None
    if isinstance(transport, Connection) and not transport.TLS:
        return transport.socket
    return None


TWISTED_WRITE_BUFFER = ("dataBuffer", "offset", "_tempDataLen", "disconnecting")


def unread_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport that its peer has not taken yet.

    Raises (never returns 0) when Twisted's buffer attributes are gone: a silent 0 would turn
    the slow-reader close off for good.
    """
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError as error:
        raise RuntimeError(
            f"Twisted's write buffer changed ({error}); notifications/transport.py must follow it. "
            "Pin Twisted back to the version in requirements.txt."
        ) from error


def nothing_queued(transport: Any) -> bool:
    """Twisted holds no bytes for this transport, and it is not closing: a send() may go first."""
    return not transport._tempDataLen and transport.offset == len(transport.dataBuffer) and not transport.disconnecting


def websocket_is_open(protocol: Any) -> bool:
    return bool(protocol.state == protocol.STATE_OPEN)


def send_close_frame(protocol: Any, code: int, reason: str, handshake_timeout: float) -> None:
    """A close frame with any code (Autobahn's public sendClose refuses 1001 and 1013)."""
    # Autobahn drops the TCP connection if the client has not answered the close within this
    # time; a slow reader needs long enough to reach the close frame.
    protocol.closeHandshakeTimeout = handshake_timeout
    protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:120] or None)


# ---------------------------------------------------------------- frames


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


def message_text(frames: EventFrames, kind: str, op_id: str) -> str:
    """The protocol message carrying this event for one operation id (shared by every socket using it)."""
    key = ("ws-text", kind, op_id)
    text = frames.get(key)
    if text is None:
        text = frames.put(key, f'{{"type":"{kind}","id":{json.dumps(op_id)},"payload":{frames.payload_json}}}')
    return str(text)


def message_frame(frames: EventFrames, kind: str, op_id: str) -> bytes:
    key = ("ws-frame", kind, op_id)
    frame = frames.get(key)
    if frame is None:
        frame = frames.put(key, text_frame(message_text(frames, kind, op_id).encode()))
    return bytes(frame)


@functools.lru_cache(maxsize=8)
def _control_frame(text: str) -> bytes:
    return text_frame(text.encode())


# ---------------------------------------------------------------- one websocket


class DirectSocket:
    __slots__ = ("_socket", "_socket_looked_up", "asgi_send", "pending", "protocol")

    def __init__(self, send: Send) -> None:
        self.asgi_send = send
        self.protocol = daphne_protocol(send)
        self.pending: set[asyncio.Future[None]] = set()  # ASGI sends in flight (not under Daphne)
        self._socket: socket.socket | None = None
        self._socket_looked_up = False

    def _asgi(self, message: dict[str, Any]) -> None:
        future = asyncio.ensure_future(self.asgi_send(message))
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    def send_event(self, frames: EventFrames, kind: str, op_id: str) -> int:
        """Write one event; returns the bytes still unread by the client."""
        if self.protocol is not None:
            if websocket_is_open(self.protocol):
                return self._write(message_frame(frames, kind, op_id))
            return 0
        self._asgi({"type": "websocket.send", "text": message_text(frames, kind, op_id)})
        return 0

    def send_text(self, text: str) -> None:
        """A control message of the GraphQL protocol (a keep-alive): same path, no shared frames."""
        if self.protocol is None:
            self._asgi({"type": "websocket.send", "text": text})
        elif websocket_is_open(self.protocol):
            self._write(_control_frame(text))

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
            self._socket, self._socket_looked_up = plain_tcp_socket(transport), True
        if self._socket is not None and nothing_queued(transport):
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
        return unread_bytes(transport)

    def close(self, code: int, reason: str = "", handshake_timeout: float = 30) -> None:
        """Send a close frame; the client reads it after what is already buffered for it."""
        if self.protocol is not None:
            if websocket_is_open(self.protocol):
                send_close_frame(self.protocol, code, reason, handshake_timeout)
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
