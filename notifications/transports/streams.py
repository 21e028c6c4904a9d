"""Subscriptions over HTTP: a graphql-sse event stream or an Apollo multipart response per subscription.

Each stream is one subscription (`blogPublished` or `blogChanged`) on one HTTP response, a `hub.subscription.Connection`
as a websocket is, so the hub, keep-alives, the SIGTERM drain and the metrics treat both alike.
Events are written straight to the socket under Daphne (transports/direct.DirectStream) from
bytes built once per event and transport (`frames.EventFrames`), so a fan-out costs one lookup and
one write per stream, as on websockets.

- graphql-sse, "distinct connections mode": `text/event-stream`, one `next` event per
  publication whose `id:` is its cursor (a reconnecting EventSource sends it back as
  `Last-Event-ID` and resumes after it), comments as heartbeats.
- Apollo's multipart subscriptions: `multipart/mixed; boundary="graphql"`, each event a part
  `{"payload": <result>}`, `{}` parts as heartbeats, and a last part with `payload: null` and
  `errors` when the server ends the stream.

The server ends a stream (it never completes one: subscriptions are endless) when the process
shuts down, when the client stopped reading (more than WS_MAX_BUFFERED_BYTES unread: the stream
is ended, never buffered forever) and when writing failed. Clients reconnect and resume after
their last cursor, exactly as websocket clients do after a 1001, 1013 or 1011 close.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from typing import Any, ClassVar

from django.conf import settings

from api.signals import REASONS
from core import graphql_over_http as spec
from notifications.hub import subscribe
from notifications.hub.subscription import EventFrames, LiveSubscription
from notifications.transports import keepalive
from notifications.transports.direct import DirectStream

logger = logging.getLogger("notifications.streams")

NEW, OPEN, ENDED = "new", "open", "ended"
# A stream ended for a stalled reader keeps its connection this long for the reader to take
# what is buffered (and the ending), then the connection is cut.
SLOW_READER_GRACE_SECONDS = 30
RETRY_AFTER_SECONDS = 2
ENDINGS = {  # why the server ended a stream -> (extensions.code, message)
    "shutdown": ("SERVICE_UNAVAILABLE", "The server is shutting down: reconnect and resume after your last cursor."),
    "slow": ("TOO_SLOW", "The stream was not read fast enough: reconnect and resume after your last cursor."),
    "error": ("INTERNAL_SERVER_ERROR", "Internal error: reconnect and resume after your last cursor."),
    "unavailable": ("SERVICE_UNAVAILABLE", "Subscriptions cannot be delivered here now: retry after your last cursor."),
}
# The stream's sign-in ended (transports/revocation.py): the subscription is public, so the
# client may subscribe again without a token (or with a new one).
ENDINGS.update(
    {
        reason: ("UNAUTHENTICATED", f"Sign-in ended ({reason}): subscribe again without a token or with a new one.")
        for reason in REASONS
    }
)


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 section 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


@functools.lru_cache(maxsize=4)
def _chunked_once(data: bytes) -> bytes:
    return chunk(data)


def error_result(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


def response_headers(content_type: str, request_id: str) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", content_type.encode()),
        (b"cache-control", b"no-cache"),
        (b"vary", b"Accept"),
        (b"x-request-id", request_id.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if content_type.startswith((spec.EVENT_STREAM, spec.MULTIPART_MIXED)):
        headers.append((b"x-accel-buffering", b"no"))  # nginx: pass every event on at once
    return headers


class HttpStream:
    """One subscription on one streamed HTTP response. Subclasses give the wire format."""

    protocol_name: ClassVar[str]
    content_type: ClassVar[str]
    heartbeat: ClassVar[bytes]  # the keep-alive, as it goes out unframed

    __slots__ = (
        "__weakref__",
        "direct",
        "ended_by",
        "events",
        "ip",
        "opened_at",
        "request_id",
        "state",
        "subscription",
    )

    def __init__(self, direct: DirectStream, ip: str, request_id: str) -> None:
        self.direct = direct
        self.ip = ip
        self.request_id = request_id
        self.subscription: LiveSubscription | None = None
        self.state = NEW
        self.events = 0
        self.ended_by: str | None = None
        self.opened_at = time.monotonic()
        direct.on_stalled = self._stalled

    # ------------------------------------------------------------------ wire format (subclasses)

    def preamble(self) -> bytes:
        raise NotImplementedError

    def encode_event(self, frames: EventFrames) -> bytes:
        raise NotImplementedError

    def tail(self, reason: str) -> bytes:
        raise NotImplementedError

    def event_bytes(self, frames: EventFrames) -> bytes:
        """This event as written to the socket: built by the first stream of its kind, reused by all."""
        key = (self.protocol_name, self.direct.chunked)
        encoded = frames.get(key)
        if encoded is None:
            event = self.encode_event(frames)
            encoded = frames.put(key, chunk(event) if self.direct.chunked else event)
        return bytes(encoded)

    def heartbeat_bytes(self) -> bytes:
        return _chunked_once(self.heartbeat) if self.direct.chunked else self.heartbeat

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Status and headers, then the preamble: from now on the client may count on every event."""
        if self.state == NEW:
            self.state = OPEN
            self.direct.start(200, response_headers(self.content_type, self.request_id), self.preamble())
            keepalive.ensure_running(self.keepalive_seconds)

    def refuse(self, status: int, body: str, *, retry_after: int | None = None) -> None:
        """Answer with an error instead of a stream (only before it opened)."""
        if self.state != NEW:
            return
        self.state = ENDED
        headers = response_headers("application/json; charset=utf-8", self.request_id)
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        self.direct.start(status, headers, body.encode(), more=False)

    def end(self, reason: str) -> None:
        """The server ends the stream (`reason` in ENDINGS); the client resumes with its last cursor."""
        if self.state == ENDED:
            return
        self._stop_subscription()
        self.ended_by = reason
        if self.state == NEW:
            code, message = ENDINGS[reason]
            self.refuse(503, json.dumps(error_result(code, message)), retry_after=RETRY_AFTER_SECONDS)
            return
        self.state = ENDED
        self.direct.finish(self.tail(reason), hang_up_after=SLOW_READER_GRACE_SECONDS if reason == "slow" else None)

    def closed(self) -> None:
        """The response is over, whoever ended it: nothing more is sent."""
        self._stop_subscription()
        self.state = ENDED
        self.ended_by = self.ended_by or "client"

    def _stop_subscription(self) -> None:
        if self.subscription is not None and self.subscription.active:
            subscribe.stop(self.subscription)

    # ------------------------------------------------------------------ hub.subscription.Connection

    def send_event(self, subscription: LiveSubscription, frames: EventFrames) -> None:
        if self.state == NEW:
            self.open()  # the first event of a replay: the response starts with it
        if self.state != OPEN:
            return
        self.direct.write(self.event_bytes(frames))
        self.events += 1

    def _stalled(self, unread: int) -> None:
        """The client stopped reading (transports/direct.py): ended, it resumes with its last cursor."""
        self.end("slow")

    def send_failed(self, subscription: LiveSubscription, error: Exception) -> None:
        self.end("error")

    def subscription_count(self) -> int:
        return int(self.state != ENDED and self.subscription is not None and self.subscription.active)

    @property
    def keepalive_seconds(self) -> float:
        raise NotImplementedError

    def send_keepalive(self) -> None:
        if self.state == OPEN:
            self.direct.write(self.heartbeat_bytes())

    def going_away(self) -> None:
        self.end("shutdown")

    # ------------------------------------------------------------------ revocation.SignedIn

    def access_ended(self, reason: str) -> None:
        self.end(reason)


# ---------------------------------------------------------------------- graphql-sse


class SseStream(HttpStream):
    protocol_name = spec.SSE
    content_type = spec.EVENT_STREAM_RESPONSE.content_type
    heartbeat = b":\n\n"
    __slots__ = ()

    @property
    def keepalive_seconds(self) -> float:
        return float(settings.SSE_HEARTBEAT_SECONDS)

    def preamble(self) -> bytes:
        # Some browsers show nothing of a stream before its first bytes; `retry:` spreads the
        # reconnections of a browser's EventSource when an instance goes away.
        retry_ms = random.randint(1000, 4000)
        return f": subscribed\nretry: {retry_ms}\n\n".encode()

    def encode_event(self, frames: EventFrames) -> bytes:
        return spec.sse_event("next", frames.payload_json, frames.cursor).encode()

    def tail(self, reason: str) -> bytes:
        # No `complete`: that would tell the client the subscription is over. The stream just
        # ends, which graphql-sse's client and EventSource both answer by reconnecting.
        code, message = ENDINGS[reason]
        return f": {code}: {message}\n\n".encode()


# ---------------------------------------------------------------------- Apollo's multipart


def multipart_part(json_text: str) -> bytes:
    """One part and the delimiter after it: Apollo Client reads a part once the next delimiter arrives."""
    return (
        f"\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{json_text}\r\n--{spec.MULTIPART_BOUNDARY}".encode()
    )


class MultipartStream(HttpStream):
    protocol_name = spec.MULTIPART
    content_type = f'{spec.MULTIPART_MIXED}; boundary="{spec.MULTIPART_BOUNDARY}"; subscriptionSpec="1.0"'
    heartbeat = multipart_part("{}")
    __slots__ = ()

    @property
    def keepalive_seconds(self) -> float:
        return float(settings.MULTIPART_HEARTBEAT_SECONDS)

    def preamble(self) -> bytes:
        return f"--{spec.MULTIPART_BOUNDARY}".encode() + self.heartbeat

    def encode_event(self, frames: EventFrames) -> bytes:
        return multipart_part(f'{{"payload":{frames.payload_json}}}')

    def tail(self, reason: str) -> bytes:
        # Apollo's protocol: a transport error is a part with `payload: null` and top-level
        # `errors`; the closing delimiter then ends the response.
        code, message = ENDINGS[reason]
        return multipart_part(json.dumps({"payload": None, **error_result(code, message)})) + b"--\r\n"


STREAMS: dict[str, type[HttpStream]] = {spec.SSE: SseStream, spec.MULTIPART: MultipartStream}
