"""What the websocket side logs: one line per connect, disconnect and operation start, each
carrying the connection's id. The consumer calls one function per event; what the hub counts
goes to core.metrics directly.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from core.client_ip import scope_ip
from core.logs import connection_id_var
from core.request_id import new_request_id

logger = logging.getLogger("notifications.websocket")

_OPERATION_KIND = re.compile(r"^\s*(?:#[^\n]*\n\s*)*(query|mutation|subscription)\b")
_STARTED_AT = "telemetry.connected_at"


def _client(scope: dict[str, Any]) -> str:
    return scope_ip(scope)  # the address every per-client rule uses, behind the balancer too


def websocket_connected(consumer: Any) -> None:
    """The handshake was accepted: name the connection; every later line of it carries the id."""
    connection_id = new_request_id()
    consumer.scope["connection_id"] = connection_id
    consumer.scope[_STARTED_AT] = time.monotonic()
    # Channels runs all of a connection's handlers in one task, so this sticks to the connection.
    connection_id_var.set(connection_id)
    logger.info(
        "websocket connected (%s)",
        consumer.subprotocol,
        extra={
            "event": "ws_connect",
            "connection_id": connection_id,
            "protocol": consumer.subprotocol,
            "path": consumer.scope.get("path"),
            "client": _client(consumer.scope),
            "origin": dict(consumer.scope.get("headers") or []).get(b"origin", b"").decode("latin-1") or None,
        },
    )


def websocket_disconnected(consumer: Any, code: int | None) -> None:
    connection_id = consumer.scope.get("connection_id")
    if connection_id is None:
        return  # refused during the handshake: never counted as connected
    started = consumer.scope.get(_STARTED_AT)
    logger.info(
        "websocket disconnected (code %s)",
        code,
        extra={
            "event": "ws_disconnect",
            "connection_id": connection_id,
            "protocol": consumer.subprotocol,
            "code": code,
            "duration_s": round(time.monotonic() - started, 3) if started is not None else None,
            "active_subscriptions": consumer.subscription_count(),
        },
    )


def message_received(consumer: Any, message: dict[str, Any]) -> None:
    """Log the start of an operation (subscribe/start); other messages are not worth a line."""
    if str(message.get("type")).lower() not in ("subscribe", "start"):
        return
    payload = message.get("payload") or {}
    kind = _OPERATION_KIND.match(payload.get("query") or "")
    logger.info(
        "websocket %s %s started (id %s)",
        kind.group(1) if kind else "operation",
        payload.get("operationName") or "(anonymous)",
        message.get("id"),
        extra={
            "event": "ws_subscribe",
            "connection_id": consumer.scope.get("connection_id"),
            "protocol": consumer.subprotocol,
            "operation_id": message.get("id"),
            "operation_name": payload.get("operationName"),
            "operation_type": kind.group(1) if kind else None,
        },
    )
