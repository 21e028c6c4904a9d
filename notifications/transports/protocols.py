"""The two GraphQL-over-websocket subprotocols, one small class each, chosen once at connect.

The consumer (consumers.py) asks its protocol wherever the two differ, instead of branching on
the subprotocol's name: graphql-transport-ws (the `graphql-ws` library's protocol) closes the
socket with a 44xx code for a client's mistake, while the legacy graphql-ws (Apollo's
subscriptions-transport-ws) answers with a message and stays open.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import graphql


class Consumer(Protocol):
    """What a protocol needs of the websocket consumer it speaks for."""

    connection_initialised: bool

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None: ...

    async def send_json(self, content: Any, close: bool = False) -> None: ...

    async def send_operation_errors(self, op_id: str, errors: list[graphql.GraphQLError]) -> None: ...

    async def send_complete(self, op_id: str) -> None: ...

    def send_keepalive(self) -> None: ...

    def watch_connection_init(self) -> None: ...


class WsProtocol:
    name: ClassVar[str]
    event_kind: ClassVar[str]  # the message type that carries a subscription's result
    keepalive_text: ClassVar[str]

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def connected(self) -> None:
        """The handshake is accepted."""

    def acknowledged(self) -> None:
        """connection_ack was sent."""

    def start_problem(self) -> str | None:
        """Why a subscribe/start message cannot be handled yet, or None."""
        return None

    async def reject_message(self, message: str, op_id: str | None) -> None:
        raise NotImplementedError

    async def subscribe_unacknowledged(self) -> bool:
        """A subscription before connection_ack: True when it was answered here (and is refused)."""
        return False

    async def duplicate_id(self, op_id: str, error: graphql.GraphQLError) -> None:
        raise NotImplementedError

    async def stopped(self, op_id: str) -> None:
        """The client ended one of its subscriptions."""

    def error_payload(self, formatted: list[dict[str, Any]]) -> Any:
        raise NotImplementedError


class TransportWs(WsProtocol):
    name = "graphql-transport-ws"
    event_kind = "next"
    keepalive_text = '{"type":"ping"}'

    async def reject_message(self, message: str, op_id: str | None) -> None:
        await self.consumer.close(code=4400, reason=message[:120])

    async def subscribe_unacknowledged(self) -> bool:
        await self.consumer.close(code=4401, reason="Unauthorized: subscribe before connection_ack")
        return True

    async def duplicate_id(self, op_id: str, error: graphql.GraphQLError) -> None:
        await self.consumer.close(code=4409, reason=f"Subscriber for {op_id} already exists")

    def error_payload(self, formatted: list[dict[str, Any]]) -> Any:
        return formatted


class LegacyWs(WsProtocol):
    name = "graphql-ws"
    event_kind = "data"
    keepalive_text = '{"type":"ka"}'

    def connected(self) -> None:
        # The library times out a missing connection_init only on graphql-transport-ws.
        self.consumer.watch_connection_init()

    def acknowledged(self) -> None:
        self.consumer.send_keepalive()  # the protocol wants one right after the ack

    def start_problem(self) -> str | None:
        if not self.consumer.connection_initialised:
            return "Send connection_init and wait for connection_ack before starting operations."
        return None

    async def reject_message(self, message: str, op_id: str | None) -> None:
        await self.consumer.send_json({"type": "error", "id": op_id, "payload": {"message": message}})

    async def duplicate_id(self, op_id: str, error: graphql.GraphQLError) -> None:
        await self.consumer.send_operation_errors(op_id, [error])

    async def stopped(self, op_id: str) -> None:
        # graphql-transport-ws sends nothing more for an id the client completed; this protocol
        # confirms a `stop` with `complete`.
        await self.consumer.send_complete(op_id)

    def error_payload(self, formatted: list[dict[str, Any]]) -> Any:
        return {"errors": formatted}


PROTOCOLS: dict[str, type[WsProtocol]] = {TransportWs.name: TransportWs, LegacyWs.name: LegacyWs}
SUBPROTOCOLS = tuple(PROTOCOLS)  # in order of preference
