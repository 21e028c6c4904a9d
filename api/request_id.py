"""One id per HTTP request or websocket operation, in the response, the error and the log line.

An operator handed the id from a client's INTERNAL_SERVER_ERROR finds the traceback by it.
"""

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
# nginx's $request_id is 32 hex digits; accept similar ids from a proxy, never arbitrary text
# (it ends up in log lines).
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The id of the request or operation being served; a fresh one outside any."""
    return _current.get() or new_request_id()


def bind_request_id(request_id: str) -> None:
    """Make `request_id` current for the rest of this task or thread (websocket operations)."""
    _current.set(request_id)


class RequestIdMiddleware:
    """Sets `request.id` (from a proxy's X-Request-ID when well-formed) and echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get(HEADER, "")
        request_id = offered if _VALID_ID.fullmatch(offered) else new_request_id()
        request.id = request_id  # type: ignore[attr-defined]
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response
