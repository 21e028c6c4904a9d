"""The websocket endpoint: django-channels-graphql-ws's consumer, hardened at its edges.

The library speaks both `graphql-transport-ws` and the legacy `graphql-ws` and runs queries and
mutations sent over the socket. This subclass adds what it leaves out: malformed frames answered
by the protocol instead of a crashed consumer, bearer-token auth in `connection_init`, error
codes shared with HTTP, ORM resolvers moved off the event loop, and its own delivery path for
subscriptions (notifications/hub/hub.py): one execution per distinct subscription per process
instead of one per subscriber, strict cursor order, and `after:` resume.
"""

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any

import channels_graphql_ws
import graphql
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from graphql.language.ast import OperationType

from api import validation
from api.auth import sign_in
from api.errors import BadUserInput, format_error
from api.selectors import Credential, credential_problem
from api.validation import Verdict
from core import metrics, process
from core.request_id import bind_request_id, new_request_id
from core.schema import root_schema
from notifications.hub import subscribe
from notifications.hub.execution import run_orm_resolvers_in_thread
from notifications.hub.hub import HubUnavailable
from notifications.hub.subscription import EventFrames, LiveSubscription
from notifications.transports import connections, keepalive, revocation, telemetry
from notifications.transports.direct import DirectSocket
from notifications.transports.limits import ConnectionLimits
from notifications.transports.protocols import PROTOCOLS, SUBPROTOCOLS, WsProtocol

logger = logging.getLogger(__name__)

OPERATION_MESSAGES = {"subscribe", "start", "complete", "stop"}
# Both protocols' clients (graphql-ws, subscriptions-transport-ws, ours) reconnect after 1013
# and resubscribe: the way to tell them "not here, not now" without ending their subscriptions.
UNAVAILABLE_CLOSE = 1013
INTERNAL_ERROR_CLOSE = 1011
OPERATIONS_GRACE_SECONDS = 1.0


class GraphqlConsumer(channels_graphql_ws.GraphqlWsConsumer):
    """One websocket: the library's protocol handling, subscriptions through the process's hub.

    It is the `hub.subscription.Connection` of its subscriptions, and once signed in a
    `revocation.SignedIn`: it closes with 4403 when its credential ends, and checks the credential
    again before each mutation it runs.

    Private parts of django-channels-graphql-ws used here, and only here (the library is pinned
    in requirements-nodeps.txt; tests/test_internals.py fails when a bump changes them):
    `_subscriptions` and `_operation_locks` (operations the library runs, for duplicate ids; a
    lock is held while its operation runs, which access_ended waits on),
    and the `_send_gql_connection_ack`, `_send_gql_complete`, `_send_gql_error`,
    `_format_error` and `_on_gql_subscribe__parse_query` hooks.
    """

    # No channel per socket (our __call__ sets no channel layer): the process's hub is the only
    # channel-layer receiver. Sockets then cost no Redis work while idle, and a Redis outage
    # cannot crash them (a consumer holding channels-redis's shared BRPOP would die with it).
    channel_name = None  # the library puts it into every operation's context
    send_ping_every = None  # keep-alives come from notifications/transports/keepalive.py, not a task per socket
    connection_init_wait_timeout = settings.GRAPHQL_WS_CONNECTION_INIT_TIMEOUT
    # One manager for every connection (given a list, the library builds one per connection).
    middleware = graphql.MiddlewareManager(run_orm_resolvers_in_thread)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.schema = root_schema()
        super().__init__(*args, **kwargs)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' consumer loop, without what a socket with no channel layer does not need.

        Channels waits on each incoming message through a fresh task and asyncio.wait (memory
        held by every idle connection), and hops to a thread before every message to recycle
        database connections; here database work already runs through database_sync_to_async,
        which recycles them itself.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                handler = getattr(self, get_handler_name(message), None)
                if handler is None:
                    raise ValueError(f"No handler for message type {message['type']}")
                await handler(message)
        except StopConsumer:
            pass

    @functools.cached_property
    def subprotocol(self) -> str | None:
        offered = [p.decode() if isinstance(p, bytes) else p for p in self.scope.get("subprotocols", [])]
        return next((p for p in SUBPROTOCOLS if p in offered), None)

    # ------------------------------------------------------------------ hub.subscription.Connection

    @property
    def protocol_name(self) -> str:
        return self.subprotocol or "none"

    def subscription_count(self) -> int:
        return len(self.live) + len(self._subscriptions)

    @property
    def keepalive_seconds(self) -> float:
        return float(settings.GRAPHQL_WS_PING_SECONDS)

    def send_keepalive(self) -> None:
        if self.acknowledged:
            self.socket.send_text(self.protocol.keepalive_text)

    def going_away(self) -> None:
        """The server is shutting down: 1001, so the client reconnects elsewhere and resumes."""
        self.stop_all_live()
        self.socket.close(1001, "Server shutting down: reconnect and resume with your last cursor", handshake_timeout=1)

    # ------------------------------------------------------------------ connection lifecycle

    async def connect(self) -> None:
        self.limits = ConnectionLimits(self)
        self.live: dict[str, LiveSubscription] = {}
        chosen = PROTOCOLS.get(self.subprotocol or "")
        if chosen is None:
            # Refuse the handshake: a client that speaks neither protocol cannot be answered in one.
            logger.info("Websocket refused: no GraphQL subprotocol offered (%s)", self.scope.get("subprotocols"))
            await self.close()
            return
        if not self.limits.admit():
            await self.close()
            return
        self.protocol: WsProtocol = chosen(self)
        self.connection_initialised = False
        self.acknowledged = False
        self.socket: DirectSocket = self.scope.get("direct_socket") or DirectSocket(self.base_send)
        self.socket.on_stalled = self._stalled
        process.install()
        await super().connect()
        self.protocol.connected()
        connections.register(self)
        telemetry.websocket_connected(self)
        user, session_key = self.scope.get("user"), getattr(self.scope.get("session"), "session_key", None)
        if user is not None and user.is_authenticated and session_key:
            self._sign_in(Credential(user, session_key=session_key))  # a browser, by its cookie

    def _sign_in(self, credential: Credential) -> None:
        self.scope["user"] = credential.author
        self.scope["credential"] = credential
        revocation.sign_in(self, credential)

    def access_ended(self, reason: str) -> None:
        """revocation.SignedIn: the credential ended. Nothing more runs as its author; 4403.

        Operations already running (a signOut sent over this very socket, a write checked just
        before the revocation) get up to OPERATIONS_GRACE_SECONDS to send their result first.
        """
        self.scope["user"] = AnonymousUser()
        self.scope.pop("credential", None)
        self.stop_all_live()
        running = [lock for lock in list(self._operation_locks.values()) if lock.locked()]
        if running:
            self._closing = asyncio.ensure_future(self._close_after(running, reason))
        else:
            self.socket.close(revocation.ACCESS_ENDED_CLOSE, revocation.reason_text(reason))

    async def _close_after(self, running: list[asyncio.Lock], reason: str) -> None:
        async def finished() -> None:
            for lock in running:
                async with lock:
                    pass

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished(), OPERATIONS_GRACE_SECONDS)
        self.socket.close(revocation.ACCESS_ENDED_CLOSE, revocation.reason_text(reason))

    async def disconnect(self, code: int) -> None:
        revocation.forget(self)
        connections.unregister(self)
        telemetry.websocket_disconnected(self, code)
        self.limits.release()
        self.stop_all_live()
        await super().disconnect(code)

    async def _send_gql_connection_ack(self) -> None:
        # Both protocols allow an ack payload; it tells clients, operators and tests which
        # instance holds the socket (Daphne cannot add handshake headers).
        await self.send_json({"type": "connection_ack", "payload": {"instance": settings.INSTANCE_NAME}})
        self.acknowledged = True
        self.protocol.acknowledged()
        keepalive.ensure_running()

    async def on_connect(self, payload: Any) -> None:
        """`connection_init`: an `authorization: Bearer <token>` in the payload signs the socket in."""
        if payload is not None and not isinstance(payload, dict):
            raise BadUserInput("The connection_init payload must be an object.")
        raw = (payload or {}).get("authorization") or (payload or {}).get("Authorization")
        credential = await database_sync_to_async(sign_in)(raw, bearer_only=True) if raw is not None else None
        if credential is not None:
            self._sign_in(credential)
        self.connection_initialised = True

    # ------------------------------------------------------------------ incoming messages

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        too_big = self.limits.message_problem(text_data, bytes_data)
        if too_big:
            await self.reject_message(too_big)
            return
        if text_data is None:
            await self.reject_message("Binary frames are not part of the GraphQL over WebSocket protocol.")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.reject_message("The message is not valid JSON.")
            return
        problem = self.message_problem(content)
        if problem:
            await self.reject_message(problem, content.get("id") if isinstance(content, dict) else None)
            return
        telemetry.message_received(self, content)
        try:
            await self.receive_json(content)
        except graphql.GraphQLError as error:
            # The library raises this for an operation id that is still being started.
            await self.protocol.duplicate_id(str(content.get("id")), error)

    def message_problem(self, content: Any) -> str | None:
        """Why a message cannot be handled, or None when it can."""
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            return "A message must be a JSON object with a string 'type'."
        kind = content["type"].lower()
        if kind in OPERATION_MESSAGES and not (isinstance(content.get("id"), str) and content["id"]):
            return f"A '{kind}' message needs a non-empty string 'id'."
        if kind in ("subscribe", "start"):
            payload = content.get("payload")
            if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
                return f"A '{kind}' message needs a payload with a string 'query'."
            if not isinstance(payload.get("variables") or {}, dict):
                return "'variables' must be an object."
            if not isinstance(payload.get("operationName") or "", str):
                return "'operationName' must be a string."
            return self.protocol.start_problem()
        return None

    async def reject_message(self, message: str, op_id: str | None = None) -> None:
        """graphql-transport-ws closes with 4400; the legacy protocol answers with an error message."""
        logger.info("Bad websocket message (%s): %s", self.subprotocol, message)
        await self.protocol.reject_message(message, op_id)

    @staticmethod
    def _format_error(error: Exception) -> Any:
        return format_error(error)

    async def _on_gql_subscribe__parse_query(
        self, op_name: str | None, query: str
    ) -> tuple[graphql.DocumentNode | None, graphql.OperationDefinitionNode | None, Any]:
        """The library's parse step, served from the one prepared-document cache (api/documents.py).

        The library keeps an LRU cache of its own, keyed on the consumer as well as the text:
        it held closed connections and up to 128 large documents alive.
        """
        prepared = validation.prepared_if_known(query, op_name)
        if prepared is None:
            prepared = await asyncio.to_thread(validation.prepare, query, op_name)
        if prepared.document is not None:
            return prepared.document, prepared.operation, None
        if prepared.errors:
            return None, None, list(prepared.errors)
        return None, None, await asyncio.to_thread(validation.executor_errors, query)

    async def receive_json(self, content: dict[str, Any]) -> None:
        """Every operation passes the shared limits first; subscriptions then go to the hub.

        Documents are measured before they are parsed (api/validation.py): a known one is
        answered on the event loop, a new one is parsed in a thread. Queries and mutations, and
        documents the executor must report on, go on to the library.
        """
        kind = content["type"].lower()
        if kind in ("subscribe", "start"):
            bind_request_id(new_request_id())  # this operation's errors and log lines carry it
            payload = content["payload"]
            verdict = await self.limits.check_document(payload)
            if verdict.errors:
                await self.send_operation_errors(content["id"], verdict.errors)
                return
            if verdict.operation is OperationType.SUBSCRIPTION:
                await self.start_live(content["id"], payload, verdict)
                return
            if verdict.operation is OperationType.MUTATION and not await self.still_signed_in(content["id"]):
                return
        elif kind in ("complete", "stop") and content.get("id") in self.live:
            self.stop_live(content["id"])
            await self.protocol.stopped(content["id"])
            return
        await super().receive_json(content)

    async def still_signed_in(self, op_id: str) -> bool:
        """A write runs only while the socket's credential holds: checked now, not at sign-in.

        One query per mutation on a signed-in socket. An ended credential is refused with
        UNAUTHENTICATED and the socket closed with 4403, even on a process that missed the
        announcement.
        """
        credential = self.scope.get("credential")
        if credential is None:
            return True  # anonymous: the mutation's own check answers
        problem = await database_sync_to_async(credential_problem)(credential)
        if problem is None:
            return True
        metrics.socket_write_refused(problem)
        message = f"{revocation.REASON_TEXT.get(problem, 'Sign-in ended')}: nothing was written. Sign in again."
        await self.send_operation_errors(op_id, [graphql.GraphQLError(message, extensions={"code": "UNAUTHENTICATED"})])
        revocation.close(self, problem)
        return False

    # ------------------------------------------------------------------ subscriptions via the hub

    async def start_live(self, op_id: str, payload: dict[str, Any], verdict: Verdict) -> None:
        assert verdict.prepared is not None and verdict.operation_node is not None
        if not self.acknowledged and await self.protocol.subscribe_unacknowledged():
            return
        if op_id in self.live or op_id in self._subscriptions or op_id in self._operation_locks:
            await self.protocol.duplicate_id(
                op_id, graphql.GraphQLError(f"Subscription with id '{op_id}' already exists.")
            )
            return
        try:
            self.limits.reserve_subscription(op_id)
            subscribing = await subscribe.prepare(verdict, payload.get("variables"), payload.get("operationName"))
        except Exception as error:
            if not isinstance(error, graphql.GraphQLError):
                error = graphql.GraphQLError(str(error), original_error=error)
            await self.send_operation_errors(op_id, [error])
            return
        subscription = self.live[op_id] = subscribing.on(self, op_id)
        try:
            await subscribe.start(subscription)
        except HubUnavailable as error:
            self._unavailable(f"the delivery hub is not running ({error})")
        except Exception as error:
            logger.exception("Starting subscription %s failed", op_id)
            self._unavailable(f"{type(error).__name__}")

    def _unavailable(self, why: str) -> None:
        """Subscriptions cannot be served here now: close so the client retries (another instance, later)."""
        logger.warning("Closing a websocket with %d: %s", UNAVAILABLE_CLOSE, why)
        self.stop_all_live()
        self.socket.close(UNAVAILABLE_CLOSE, "Subscriptions unavailable here: reconnect and resume")

    def stop_live(self, op_id: str) -> None:
        subscription = self.live.pop(op_id, None)
        if subscription is not None:
            subscribe.stop(subscription)

    def stop_all_live(self) -> None:
        for op_id in list(self.live):
            self.stop_live(op_id)

    def send_event(self, subscription: LiveSubscription, frames: EventFrames) -> None:
        self.socket.send_event(frames, self.protocol.event_kind, subscription.op_id)

    def _stalled(self, unread: int) -> None:
        """The client stopped reading (transports/direct.py): 1013, it resumes with its last cursor."""
        self.stop_all_live()
        self.socket.close(UNAVAILABLE_CLOSE, "Too slow: reconnect and resume with your last cursor")

    def send_failed(self, subscription: LiveSubscription, error: Exception) -> None:
        self.stop_all_live()
        self.socket.close(INTERNAL_ERROR_CLOSE, "Internal error: reconnect and resume with your last cursor")

    async def send_operation_errors(self, op_id: str, errors: list[graphql.GraphQLError]) -> None:
        """An operation failed before it started: an `error` message, its payload shaped per protocol."""
        formatted = [format_error(error) for error in errors]
        await self.send_json({"type": "error", "id": op_id, "payload": self.protocol.error_payload(formatted)})

    # ------------------------------------------------------------------ what protocols.WsProtocol asks of it

    async def send_complete(self, op_id: str) -> None:
        await self._send_gql_complete(op_id)

    def watch_connection_init(self) -> None:
        self.limits.watch_connection_init(self.connection_init_wait_timeout)
