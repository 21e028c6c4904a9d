"""What the hub and a transport share: a subscriber, and the frames of one event.

A subscriber is one `blogPublished` or `blogChanged` operation (a `LiveSubscription`) on one
`Connection`. The hub writes to a subscription's connection and nothing else of its transport;
the transports (notifications/transports/) implement `Connection`.

An event's result (`EventFrames`) is serialized once and wrapped once per transport message,
shared by every socket: thousands of subscribers of one cohort get the very same bytes. Each
transport (websocket frames, SSE events, multipart parts) builds its wrapping on first use and
every later member reuses it, so writing an event costs one lookup and one write per subscriber.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

import graphql


class EventFrames:
    __slots__ = ("_encoded", "cursor", "payload_json")

    def __init__(self, payload_json: str, cursor: str | None = None) -> None:
        self.payload_json = payload_json  # the GraphQL result: {"data": ..., "errors": ...}
        # The publication's cursor, whatever the document selects: SSE streams send it as the
        # event's `id:`, which a reconnecting EventSource hands back as Last-Event-ID.
        self.cursor = cursor
        self._encoded: dict[Hashable, Any] = {}

    def get(self, key: Hashable) -> Any:
        """The wrapping stored under `key`, or None when it has not been built yet."""
        return self._encoded.get(key)

    def put(self, key: Hashable, encoded: Any) -> Any:
        self._encoded[key] = encoded
        return encoded


class Connection(Protocol):
    """A subscriber's connection, whatever the transport (a websocket, an SSE stream, a multipart
    response): what the hub writes events to, and what keep-alives, the SIGTERM drain and the
    metrics walk (transports/connections.py). Every transport implements all of it."""

    @property
    def protocol_name(self) -> str:
        """The transport's name, as metrics label it (e.g. graphql-transport-ws)."""

    def subscription_count(self) -> int:
        """Subscriptions this connection is serving now."""

    @property
    def keepalive_seconds(self) -> float:
        """How often transports/keepalive.py sends this connection its keep-alive."""

    def send_keepalive(self) -> None:
        """The transport's keep-alive, if it is ready for one."""

    def going_away(self) -> None:
        """The process is shutting down: end the connection so the client reconnects elsewhere."""

    def send_event(self, subscription: LiveSubscription, frames: EventFrames) -> None:
        """Write one event for `subscription` (a reader that stopped reading is ended where bytes are
        written: transports/direct.py)."""

    def send_failed(self, subscription: LiveSubscription, error: Exception) -> None:
        """Writing raised: end this connection (it resumes with its cursor); others go on."""


class LiveSubscription:
    __slots__ = (
        "active",
        "author",
        "cohort_key",
        "connection",
        "document",
        "held",
        "op_id",
        "operation_name",
        "position",
        "variables",
    )

    def __init__(
        self,
        connection: Connection,
        op_id: str,
        cohort_key: Hashable,
        document: graphql.DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any],
        author: str | None,
        after_seq: int | None,
    ) -> None:
        self.connection = connection
        self.op_id = op_id
        self.cohort_key = cohort_key
        self.document = document
        self.operation_name = operation_name
        self.variables = variables
        self.author = author
        # The last sequence number this subscriber has (None: it takes whatever comes from now on).
        # Anything at or below it is never sent again, wherever it comes from.
        self.position = after_seq
        # While it catches up from the log, live events wait here, in order.
        self.held: list[tuple[int, EventFrames]] | None = None
        self.active = True

    def deliver(self, seq: int, frames: EventFrames) -> bool:
        """Send a live event now (True), hold it during catch-up, or drop it (already had, or gone)."""
        if not self.active:
            return False
        if self.held is not None:
            self.held.append((seq, frames))
            return False
        if self.position is not None:
            if seq <= self.position:
                return False
            self.position = seq
        self.connection.send_event(self, frames)
        return True
