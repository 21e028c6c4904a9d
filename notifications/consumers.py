"""The websocket endpoint: django-channels-graphql-ws's consumer, hardened at its edges.

The library speaks both `graphql-transport-ws` and the legacy `graphql-ws`; this subclass adds
what it leaves out: malformed frames answered by the protocol instead of a crashed consumer,
bearer-token auth in `connection_init`, error codes shared with HTTP, and ORM resolvers moved
off the event loop.
"""

import json
import logging
from typing import Any

import channels_graphql_ws
import graphql
from channels.db import database_sync_to_async
from django.conf import settings
from graphql.language.ast import OperationType

from api.auth import bearer_token
from api.errors import format_error
from api.selectors import author_by_token
from notifications import telemetry
from project.schema import schema

logger = logging.getLogger(__name__)

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
SUBPROTOCOLS = (TRANSPORT_WS, LEGACY_WS)
OPERATION_MESSAGES = {"subscribe", "start", "complete", "stop"}


def _named_type_name(graphql_type: Any) -> str:
    while graphql.is_wrapping_type(graphql_type):
        graphql_type = graphql_type.of_type
    return graphql_type.name


def run_orm_resolvers_in_thread(next_: Any, root: Any, info: graphql.GraphQLResolveInfo, **args: Any) -> Any:
    """Keep the event loop free of the ORM without slowing subscription fan-out.

    The library executes GraphQL on the event loop. Queries and mutations sent over the socket
    run their (sync, ORM-backed) resolvers in Django's thread instead. Subscription events are
    built from broadcast data, so only connection fields (which query the database) leave the loop.
    """
    if info.operation.operation is OperationType.SUBSCRIPTION and not _named_type_name(info.return_type).endswith("Connection"):
        return next_(root, info, **args)
    return database_sync_to_async(next_)(root, info, **args)


class GraphqlConsumer(channels_graphql_ws.GraphqlWsConsumer):
    schema = schema
    send_ping_every = settings.GRAPHQL_WS_PING_SECONDS
    connection_init_wait_timeout = settings.GRAPHQL_WS_CONNECTION_INIT_TIMEOUT
    middleware = [run_orm_resolvers_in_thread]

    @property
    def subprotocol(self) -> str | None:
        offered = [p.decode() if isinstance(p, bytes) else p for p in self.scope.get("subprotocols", [])]
        return next((p for p in SUBPROTOCOLS if p in offered), None)

    async def connect(self) -> None:
        if self.subprotocol is None:
            # Refuse the handshake: a client that speaks neither protocol cannot be answered in one.
            logger.info("Websocket refused: no GraphQL subprotocol offered (%s)", self.scope.get("subprotocols"))
            await self.close()
            return
        self.connection_initialised = False
        await super().connect()
        telemetry.websocket_connected(self)

    async def disconnect(self, code: int) -> None:
        telemetry.websocket_disconnected(self, code)
        await super().disconnect(code)

    async def _send_gql_connection_ack(self) -> None:
        # Both protocols allow an ack payload; it tells clients, operators and tests which
        # instance holds the socket (Daphne cannot add handshake headers).
        await self.send_json({"type": "connection_ack", "payload": {"instance": settings.INSTANCE_NAME}})

    async def on_connect(self, payload: Any) -> None:
        """`connection_init`: an `authorization: Bearer <token>` in the payload signs the socket in."""
        if payload is not None and not isinstance(payload, dict):
            raise ValueError("The connection_init payload must be an object.")
        raw = (payload or {}).get("authorization") or (payload or {}).get("Authorization")
        if raw is not None:
            token = bearer_token(raw) if isinstance(raw, str) else None
            author = await database_sync_to_async(author_by_token)(token) if token else None
            if author is None:
                raise PermissionError("The bearer token is invalid or has been revoked.")
            self.scope["user"] = author
        self.connection_initialised = True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            await self.reject_message("Binary frames are not part of the GraphQL over WebSocket protocol.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
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
            if self.subprotocol == TRANSPORT_WS:
                await self.close(code=4409, reason=f"Subscriber for {content.get('id')} already exists")
            else:
                await self._send_gql_error(content.get("id"), [error])

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
            if self.subprotocol == LEGACY_WS and not self.connection_initialised:
                return "Send connection_init and wait for connection_ack before starting operations."
        return None

    async def reject_message(self, message: str, op_id: str | None = None) -> None:
        """graphql-transport-ws closes with 4400; the legacy protocol answers with an error message."""
        logger.info("Bad websocket message (%s): %s", self.subprotocol, message)
        if self.subprotocol == TRANSPORT_WS:
            await self.close(code=4400, reason=message[:120])
        else:
            await self.send_json({"type": "error", "id": op_id, "payload": {"message": message}})

    @staticmethod
    def _format_error(error: Exception) -> Any:
        return format_error(error)
