"""What one websocket may cost: the consumer calls these hooks, so limits stay out of its protocol code.

- connections per client IP, per instance (refused at the handshake); HTTP subscription streams
  (SSE, multipart) take their slots from the same count (`take_connection_slot`);
- message size (the protocol's answer to a bad message: 4400, or the legacy `error`);
- `connection_init` within GRAPHQL_WS_CONNECTION_INIT_TIMEOUT on the legacy protocol too (the
  library enforces it only for graphql-transport-ws);
- every operation passes api/validation.py, the same limits as HTTP, before anything runs it;
- active subscriptions per connection.
"""

import asyncio
import logging
from collections import Counter
from typing import Any

from django.conf import settings

from api import validation
from core.client_ip import scope_ip

logger = logging.getLogger(__name__)

# Open websockets and HTTP subscription streams per client address in this process.
_open_connections: Counter[str] = Counter()


def take_connection_slot(ip: str) -> bool:
    """Count one more live connection for `ip`; False (nothing counted) when it holds the maximum."""
    if _open_connections[ip] >= settings.GRAPHQL_WS_MAX_CONNECTIONS_PER_IP:
        return False
    _open_connections[ip] += 1
    return True


def release_connection_slot(ip: str) -> None:
    _open_connections[ip] -= 1
    if _open_connections[ip] <= 0:
        del _open_connections[ip]


class ConnectionLimits:
    """The limits of one websocket connection; `consumer` is its GraphqlWsConsumer."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.ip = scope_ip(consumer.scope)
        self.admitted = False
        self.init_watch: asyncio.Task[None] | None = None

    def admit(self) -> bool:
        """Count this connection against its IP; False when the IP already holds the maximum."""
        if not take_connection_slot(self.ip):
            limit = settings.GRAPHQL_WS_MAX_CONNECTIONS_PER_IP
            logger.warning("Websocket refused: %s already holds %d connections", self.ip, limit)
            return False
        self.admitted = True
        return True

    def release(self) -> None:
        """The connection is gone: free its slot and stop its timers."""
        if self.init_watch is not None:
            self.init_watch.cancel()
        if self.admitted:
            self.admitted = False
            release_connection_slot(self.ip)

    def watch_connection_init(self, timeout: float) -> None:
        """Close with 4408 unless `connection_init` arrives within `timeout` seconds."""
        if timeout > 0:
            self.init_watch = asyncio.create_task(self._close_unless_initialised(timeout))

    async def _close_unless_initialised(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if not self.consumer.connection_initialised:
            logger.info("Websocket closed: no connection_init within %s s", timeout)
            await self.consumer.close(code=4408)

    @staticmethod
    def message_problem(text_data: str | None, bytes_data: bytes | None) -> str | None:
        """Why a frame is refused for its size, or None."""
        data: str | bytes = text_data if text_data is not None else bytes_data or b""
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        limit = settings.GRAPHQL_WS_MAX_MESSAGE_BYTES
        return f"The message is {size} bytes; at most {limit} are accepted." if size > limit else None

    async def check_document(self, payload: dict[str, Any]) -> validation.Verdict:
        """The limits HTTP enforces too, before anything runs: a known (or oversized) document is
        answered on the event loop, a new one is parsed in a thread."""
        args = (payload.get("query"), payload.get("variables"), payload.get("operationName"))
        verdict = validation.check_if_known(*args)
        if verdict is None:
            verdict = await asyncio.to_thread(validation.check, *args)
        return verdict

    def reserve_subscription(self, op_id: str) -> None:
        """The subscription budget of this connection; raises GraphQLError when it is spent."""
        # The consumer registers subscriptions one at a time (transports/consumers.start_live),
        # so its registry is the whole count.
        active: dict[str, Any] = self.consumer.live
        limit = settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS
        if op_id not in active and len(active) >= limit:
            raise validation.limit_error(
                f"This connection already has {limit} active subscriptions; complete one first.",
                "subscriptionsPerConnection",
                max=limit,
            )
