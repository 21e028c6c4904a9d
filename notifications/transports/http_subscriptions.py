"""The ASGI app in front of Django that turns subscription requests on /graphql/ into HTTP streams.

A request whose `Accept` asks for a stream (graphql_over_http.stream_for: `text/event-stream`, or
Apollo's `multipart/mixed;subscriptionSpec=1.0` on a POST) and whose document is a valid
subscription (`blogPublished` or `blogChanged`) is served here, on the event loop: no Django
request, middleware chain or thread hop per stream, and nothing held while it idles but the stream itself. Every
other request, including a subscription whose document fails a check, goes on to Django with
its body replayed: the view answers it (an SSE-only client in graphql-sse's own way, in an
event stream), so one place words every GraphQL error. Anything unusual (another body type, a
body over DATA_UPLOAD_MAX_MEMORY_SIZE, a host Django would refuse, a plain-HTTP request Django
would redirect) goes to Django too.

A stream counts against the per-address connection limit the websockets count against, is
refused to a foreign `Origin` as a websocket handshake is, signs in with a bearer token as
every entry point does (api/auth.sign_in), resumes after `Last-Event-ID` (what a
browser's EventSource sends when it reconnects) or the `after:` argument, and is not an HTTP
request in flight (notifications/runtime/shutdown.py waits for those; fan-outs leave them the GIL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import graphql
from channels.db import database_sync_to_async
from django.conf import settings
from django.urls import reverse
from graphql.language.ast import OperationType

from api import validation
from api.auth import TokenRefused, sign_in
from api.errors import BadUserInput, format_error
from api.selectors import Credential
from core import graphql_over_http as spec
from core import process
from core.client_ip import scope_ip
from core.request_id import bind_request_id, request_id_from
from notifications.hub import subscribe
from notifications.hub.hub import HubUnavailable
from notifications.transports import connections, origins, revocation
from notifications.transports.direct import DirectStream
from notifications.transports.limits import release_connection_slot, take_connection_slot
from notifications.transports.streams import STREAMS, HttpStream, response_headers

logger = logging.getLogger("notifications.streams")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
PARAMETERS = ("query", "variables", "operationName", "extensions")
TOO_MANY_RETRY_AFTER_SECONDS = 10


class Refusal(Exception):
    """The subscription cannot start: answered before any stream exists."""

    def __init__(self, errors: list[graphql.GraphQLError], status: int | None = None, **headers: str) -> None:
        super().__init__(errors[0].message)
        self.errors = errors
        self.status = status  # None: the status of a GraphQL request error in the negotiated format
        self.headers = headers


class HttpSubscriptions:
    """ASGI: HTTP subscription streams on the GraphQL URL; everything else to `app` (Django)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.path = reverse("graphql")

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> Any:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] not in ("GET", "POST"):
            return await self.app(scope, receive, send)
        headers = origins.scope_headers(scope)
        transport = spec.stream_for(headers.get("accept"), scope["method"])
        if transport is None:
            return await self.app(scope, receive, send)
        # Until it is known to be a stream, it may be a mutation: the SIGTERM drain waits for it. From
        # here to the app's own count (InFlightRequests) nothing is awaited, so there is no gap.
        with process.in_flight():
            read = await _read_body(receive)
            if read is None:
                return None  # the client left before its request arrived
            body, messages = read
            params = _parameters(scope, headers, body) if body is not None and _served_here(scope, headers) else None
            verdict = validation.check_if_known(*params[:3]) if params is not None else None
            if params is not None and verdict is None:
                verdict = await asyncio.to_thread(validation.check, *params[:3])
        if params is None or verdict is None or verdict.errors or verdict.operation is not OperationType.SUBSCRIPTION:
            # Not for here, or not a valid subscription: the view answers, in the negotiated format.
            return await self.app(scope, _replaying(messages, receive), send)
        request_id = request_id_from(headers.get("x-request-id"))
        bind_request_id(request_id)
        await Subscriber(scope, headers, transport, request_id).serve(verdict, params, receive, send)
        return None


class Subscriber:
    """One subscription request, from its checks to the end of its stream."""

    def __init__(self, scope: dict[str, Any], headers: dict[str, str], transport: str, request_id: str) -> None:
        self.scope = scope
        self.headers = headers
        self.transport = transport
        self.request_id = request_id
        self.ip = scope_ip(scope)
        self.credential: Credential | None = None
        self.admission = origins.admit(scope, headers)  # the page's right to subscribe, its CORS headers

    async def serve(self, verdict: validation.Verdict, params: tuple[Any, ...], receive: Receive, send: Send) -> None:
        direct = DirectStream(send, self.admission.headers)
        try:
            subscribing = await self.check(verdict, params)
        except Refusal as refusal:
            self.answer_refusal(direct, refusal)
            await _until_disconnected(receive)
            return
        # check() took a connection slot for this address; it is given back whatever happens.
        try:
            stream = STREAMS[self.transport](direct, self.ip, self.request_id)
            stream.subscription = subscribing.on(stream, "1")
        except BaseException:
            release_connection_slot(self.ip)
            raise
        connections.register(stream)  # nothing awaited since the stopping check: the drain sees it
        if self.credential is not None:
            revocation.sign_in(stream, self.credential)  # a revoked or expired token ends the stream
        began = time.monotonic()
        self.log_opened(subscribing)
        try:
            try:
                await subscribe.start(stream.subscription)
            except HubUnavailable as error:
                logger.warning("Refusing a %s stream: the delivery hub is not running (%s)", self.transport, error)
                stream.end("unavailable")
            except Exception:
                logger.exception("Starting a %s stream failed", self.transport)
                stream.end("error")
            else:
                stream.open()  # unless a replay opened it already, or the stream was ended meanwhile
            await _until_disconnected(receive)
        finally:
            stream.closed()
            revocation.forget(stream)
            connections.unregister(stream)
            release_connection_slot(self.ip)
            self.log_closed(stream, began)

    async def check(self, verdict: validation.Verdict, params: tuple[Any, ...]) -> subscribe.Subscribing:
        """The checks a websocket subscription passes too, then the one subscribe flow; or Refusal."""
        _, variables, operation_name = params[:3]
        process.install()
        if not self.admission.allowed:  # as websocket handshakes are (403)
            message = "Subscriptions are not served to pages of this origin."
            raise Refusal([graphql.GraphQLError(message, extensions=_code("FORBIDDEN"))], 403)
        try:
            try:
                if "authorization" in self.headers:
                    self.credential = await database_sync_to_async(sign_in)(self.headers["authorization"])
            except TokenRefused as refused:
                raise Refusal(
                    [graphql.GraphQLError(str(refused), extensions=_code("UNAUTHENTICATED"))],
                    401,
                    www_authenticate='Bearer error="invalid_token"',
                ) from None
            # A reconnecting EventSource sends the id of the last event it saw: that is where it resumes.
            subscribing = await subscribe.prepare(
                verdict, variables, operation_name, resume_cursor=self.headers.get("last-event-id") or None
            )
        except graphql.GraphQLError as error:  # variables that do not fit the operation
            raise Refusal([error]) from None
        except BadUserInput as error:  # a cursor it cannot resume from
            raise Refusal([graphql.GraphQLError(str(error), original_error=error)]) from None
        except Refusal:
            raise
        except Exception as error:  # the database, most likely: masked, logged with the request id
            raise Refusal([graphql.GraphQLError(str(error), original_error=error)], 500) from None
        # Nothing awaited from here until the stream is registered: a SIGTERM cannot slip in between.
        if process.stopping():
            message = "The server is shutting down: subscribe again (another instance will answer)."
            raise Refusal(
                [graphql.GraphQLError(message, extensions=_code("SERVICE_UNAVAILABLE"))], 503, retry_after="1"
            )
        if not take_connection_slot(self.ip):
            limit = settings.GRAPHQL_WS_MAX_CONNECTIONS_PER_IP
            logger.warning("HTTP stream refused: %s already holds %d connections", self.ip, limit)
            message = f"This address already holds {limit} subscription connections here; close one first."
            extensions = {**_code("RATE_LIMITED"), "limit": "connectionsPerAddress", "max": limit}
            raise Refusal(
                [graphql.GraphQLError(message, extensions=extensions)],
                429,
                retry_after=str(TOO_MANY_RETRY_AFTER_SECONDS),
            )
        return subscribing

    def answer_refusal(self, direct: DirectStream, refusal: Refusal) -> None:
        """In the negotiated format: JSON, or (a GraphQL request error to an SSE-only client) graphql-sse's stream."""
        body = json.dumps({"errors": [format_error(error) for error in refusal.errors]})
        chosen = spec.response_format(self.headers.get("accept"))
        if chosen is None and self.transport == spec.SSE and refusal.status in (None, 401):
            status, content_type, text = 200, spec.EVENT_STREAM_RESPONSE.content_type, spec.sse_result(body)
        else:
            chosen = chosen or spec.UNSPECIFIED
            status = refusal.status or chosen.status(has_data=False, well_formed=True)
            content_type, text = chosen.content_type, body
        headers = response_headers(content_type, self.request_id)
        headers += [(name.replace("_", "-").encode(), value.encode()) for name, value in refusal.headers.items()]
        direct.start(status, headers, text.encode(), more=False)
        logger.info(
            "%s subscription refused (%s)",
            self.transport,
            refusal.errors[0].message,
            extra={"event": "stream_refused", "protocol": self.transport, "status": status, "client": self.ip},
        )

    def log_opened(self, subscribing: subscribe.Subscribing) -> None:
        logger.info(
            "%s stream opened",
            self.transport,
            extra={
                "event": "stream_open",
                "protocol": self.transport,
                "client": self.ip,
                "path": self.scope.get("path"),
                "resumes_after_seq": subscribing.after_seq,
                "user_agent": self.headers.get("user-agent"),
            },
        )

    def log_closed(self, stream: HttpStream, began: float) -> None:
        logger.info(
            "%s stream closed (%s)",
            self.transport,
            stream.ended_by,
            extra={
                "event": "stream_close",
                "protocol": self.transport,
                "ended_by": stream.ended_by,
                "events_sent": stream.events,
                "duration_s": round(time.monotonic() - began, 3),
            },
        )


def _code(code: str) -> dict[str, Any]:
    return {"code": code}


async def _read_body(receive: Receive) -> tuple[bytes | None, list[dict[str, Any]]] | None:
    """The whole body and the messages it came in, or (None, messages) past Django's upload limit.

    None when the client disconnected first.
    """
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    messages: list[dict[str, Any]] = []
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        messages.append(message)
        parts.append(message.get("body", b""))
        size += len(parts[-1])
        if limit is not None and size > limit:
            return None, messages  # Django refuses it (and reads the rest)
        if not message.get("more_body", False):
            return b"".join(parts), messages


def _replaying(messages: list[dict[str, Any]], receive: Receive) -> Receive:
    """A `receive` that hands out the messages already read, then the live ones."""
    pending = list(messages)

    async def replay() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replay


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _served_here(scope: dict[str, Any], headers: dict[str, str]) -> bool:
    """Django would answer this request itself (a host it refuses, a redirect to HTTPS) when False."""
    origin = origins.site_origin(scope, headers)
    if origin is None:
        return False
    return origin.startswith("https:") or not getattr(settings, "SECURE_SSL_REDIRECT", False)


def _parameters(scope: dict[str, Any], headers: dict[str, str], body: bytes) -> tuple[Any, ...] | None:
    """(query, variables, operationName, extensions) of a well-formed request this app serves, else None."""
    query_string = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    given = {name: values[-1] for name, values in query_string.items() if name in PARAMETERS}
    if scope["method"] == "GET":
        raw: dict[str, Any] = {name: value or None for name, value in given.items()}
        for name in ("variables", "extensions"):
            if isinstance(raw.get(name), str):
                try:
                    raw[name] = json.loads(raw[name])
                except (ValueError, RecursionError):
                    return None
    else:
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != spec.JSON or given:
            return None  # other bodies, and parameters in the URL too, are graphene-django's to read
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(raw, dict):
            return None
        if isinstance(raw.get("variables"), str):  # graphene-django accepts them as JSON text
            try:
                raw["variables"] = json.loads(raw["variables"]) if raw["variables"] else None
            except (ValueError, RecursionError):
                return None
    params = tuple(raw.get(name) for name in PARAMETERS)
    if not spec.well_formed(*params) or spec.extensions_error(params[3]) is not None:
        return None
    return params
