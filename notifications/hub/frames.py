"""One event's result, serialized once and wrapped once per transport message, shared by every socket.

Thousands of subscribers of one cohort get the very same bytes: each transport (websocket
frames, SSE events, multipart parts) builds its wrapping on first use and every later member
reuses it, so writing an event costs one lookup and one write per subscriber.
"""

from collections.abc import Hashable
from typing import Any


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
