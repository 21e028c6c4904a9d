"""Direct access to a subscriber's connection under Daphne, for the fan-out hot path and for endings.

The ASGI path costs several coroutine hops per message and cannot tell how much a client has
left unread. Daphne hands every application a `send` that is `partial(server.handle_reply,
protocol)`; this wraps that protocol so the hub can write a frame in one call, see how many bytes
wait in the socket's buffer (a stalled reader), and close with codes Autobahn's sendClose refuses
(1001 going away, 1013 try again later). For a websocket the protocol is Autobahn's; for a
streamed HTTP response (SSE, multipart) it is Daphne's WebRequest, whose events are written to
the same socket the same way (DirectStream). Under any other server both fall back to ASGI sends.

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

from django.conf import settings

from notifications.hub.subscription import EventFrames

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
            f"Twisted's write buffer changed ({error}); notifications/transports/direct.py must follow it. "
            "Pin Twisted back to the version in requirements.txt."
        ) from error


def nothing_queued(transport: Any) -> bool:
    """Twisted holds no bytes for this transport, and it is not closing: a send() may go first."""
    return not transport._tempDataLen and transport.offset == len(transport.dataBuffer) and not transport.disconnecting


def daphne_http_request(send: Any) -> Any | None:
    """Daphne's WebRequest behind an HTTP `send`, when it answers over a plain HTTP/1 channel; else None."""
    if isinstance(send, functools.partial) and send.args and getattr(send.func, "__name__", "") == "handle_reply":
        request = send.args[0]
        try:
            from twisted.web.http import HTTPChannel
        except ImportError:
            return None
        if hasattr(request, "handle_reply") and isinstance(getattr(request, "channel", None), HTTPChannel):
            return request
    return None


def http_reply(request: Any, message: dict[str, Any]) -> None:
    """One ASGI response message, handled at once: what Daphne's Server.handle_reply does after its await."""
    if not request.finished and not request._disconnected and getattr(request, "channel", None) is not None:
        request.handle_reply(message)


def http_response_open(request: Any) -> bool:
    """The response has started and is neither finished nor cut off: its body may be written."""
    return bool(
        request.startedWriting
        and not request.finished
        and not request._disconnected
        and getattr(request, "channel", None) is not None
    )


def http_transport(request: Any) -> Any:
    return request.channel.transport


def close_when_flushed(transport: Any) -> None:
    """Close a TCP transport once Twisted has sent what it holds for it.

    Twisted's HTTPChannel is its transport's streaming producer, paused while the write buffer is
    full; when the buffer drains, a transport with a producer resumes it rather than closing, so
    loseConnection() alone never closes a stalled reader's connection.
    """
    transport.unregisterProducer()
    transport.loseConnection()


def http_chunked(request: Any) -> bool:
    """Twisted frames this response's body in chunks (HTTP/1.1 without Content-Length)."""
    return bool(request.chunked)


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


# ---------------------------------------------------------------- writing to a subscriber's socket


class _DirectWrites:
    """Every byte to a subscriber goes out here, so the slow-reader policy is applied here, once:
    more than WS_MAX_BUFFERED_BYTES unread, and the connection's `on_stalled` ends it (a websocket
    closes with 1013, a stream ends "too slow"); the client resumes with its last cursor. Nothing
    is buffered for a reader without bound."""

    __slots__ = ("_socket", "_socket_looked_up", "max_unread", "on_stalled")

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._socket_looked_up = False
        self.max_unread = int(settings.WS_MAX_BUFFERED_BYTES)  # once, not per write
        self.on_stalled: Callable[[int], None] | None = None

    def _write_to(self, transport: Any, frame: bytes) -> int:
        """Hand the bytes to the kernel at once when nothing is queued before them; returns the bytes unread.

        Twisted's transport.write queues the bytes and registers the socket for writing (an
        epoll_ctl), then writes and unregisters on the next loop turn (another): two system calls
        per socket and event besides the send, which dominate a fan-out. One send() is enough when
        the socket's buffer has room, which it has for a client that keeps reading. Whatever does
        not fit, and anything written while older bytes still wait, goes through Twisted's queue,
        so order is kept.
        """
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
        unread = unread_bytes(transport)
        if unread > self.max_unread and self.on_stalled is not None:
            stalled, self.on_stalled = self.on_stalled, None  # ended once
            logger.warning("Ending a connection that stopped reading (%d bytes unread)", unread)
            stalled(unread)
        return unread


# ---------------------------------------------------------------- one websocket


class DirectSocket(_DirectWrites):
    __slots__ = ("asgi_send", "pending", "protocol")

    def __init__(self, send: Send) -> None:
        super().__init__()
        self.asgi_send = send
        self.protocol = daphne_protocol(send)
        self.pending: set[asyncio.Future[None]] = set()  # ASGI sends in flight (not under Daphne)

    def _asgi(self, message: dict[str, Any]) -> None:
        future = asyncio.ensure_future(self.asgi_send(message))
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    def send_event(self, frames: EventFrames, kind: str, op_id: str) -> int:
        """Write one event; returns the bytes still unread by the client."""
        if self.protocol is not None:
            if websocket_is_open(self.protocol):
                return self._write_to(self.protocol.transport, message_frame(frames, kind, op_id))
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
        assert self.protocol is not None
        return self._write_to(self.protocol.transport, frame)

    def close(self, code: int, reason: str = "", handshake_timeout: float = 30) -> None:
        """Send a close frame; the client reads it after what is already buffered for it."""
        if self.protocol is not None:
            if websocket_is_open(self.protocol):
                send_close_frame(self.protocol, code, reason, handshake_timeout)
        else:
            self._asgi({"type": "websocket.close", "code": code, "reason": reason})


# ---------------------------------------------------------------- one streamed HTTP response


def _cut_if_still_open(transport: Any) -> None:
    if not getattr(transport, "disconnected", True):
        transport.abortConnection()


class DirectStream(_DirectWrites):
    """One long HTTP response (an SSE or multipart subscription) under Daphne, or any ASGI server.

    Its start and its end go through Daphne's request at once (no await: the hub calls from a
    fan-out, and a refusal or an ending must not wait for a turn of the loop); the events in
    between are written straight to the socket like a websocket's frames. `chunked` says
    whether the caller must frame them as HTTP/1.1 chunks itself, which Twisted does for
    anything it writes.
    """

    __slots__ = ("_last_send", "asgi_send", "chunked", "headers", "request")

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """`headers`: added to whichever response this becomes (a stream or a refusal), e.g. CORS's."""
        super().__init__()
        self.asgi_send = send
        self.headers = headers or []
        self.request = daphne_http_request(send)
        self.chunked = False
        self._last_send: asyncio.Future[None] | None = None  # ASGI sends, in order (not under Daphne)

    def _reply(self, message: dict[str, Any]) -> None:
        if self.request is not None:
            http_reply(self.request, message)
            return
        previous = self._last_send

        async def send_after_previous() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self.asgi_send(message)

        self._last_send = asyncio.ensure_future(send_after_previous())

    def start(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, more: bool = True) -> None:
        """Send the status, the headers and the first bytes (the whole response when not `more`)."""
        self._reply({"type": "http.response.start", "status": status, "headers": headers + self.headers})
        self._reply({"type": "http.response.body", "body": body, "more_body": more})
        if self.request is not None and more:
            self.chunked = http_chunked(self.request)

    def write(self, data: bytes) -> int:
        """Write body bytes (already framed as a chunk when `chunked`); returns the bytes still unread."""
        if self.request is None:
            self._reply({"type": "http.response.body", "body": data, "more_body": True})
            return 0
        if not http_response_open(self.request):
            return 0
        return self._write_to(http_transport(self.request), data)

    def finish(self, tail: bytes = b"", *, hang_up_after: float | None = None) -> None:
        """The last body bytes, unframed; the server ends the response (and the application hears a disconnect).

        With `hang_up_after`, the connection closes once what is buffered has gone, and is cut
        if the client has not read it within that many seconds (a reader that stopped reading).
        """
        request = self.request
        transport = http_transport(request) if request is not None and http_response_open(request) else None
        self._reply({"type": "http.response.body", "body": tail, "more_body": False})
        if transport is not None and hang_up_after is not None:
            close_when_flushed(transport)
            asyncio.get_running_loop().call_later(hang_up_after, _cut_if_still_open, transport)


class DirectSocketMiddleware:
    """Puts a DirectSocket for this connection into the websocket scope."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> Any:
        if scope["type"] == "websocket":
            scope["direct_socket"] = DirectSocket(send)  # Daphne's scope is this connection's own: no copy
        return await self.app(scope, receive, send)
