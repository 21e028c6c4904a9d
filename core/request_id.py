"""One id per HTTP request or websocket operation, in the response, the error and the log line.

An operator handed the id from a client's INTERNAL_SERVER_ERROR finds the traceback by it.
core.logs.RequestLogMiddleware sets it for HTTP; notifications.transports.limits for websocket operations.
"""

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-ID"
# The balancer's unique-id is a UUID (nginx's $request_id: 32 hex digits); accept similar ids from
# a proxy, never arbitrary text (it ends up in log lines).
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is well-formed, else a new one."""
    return header if header and _VALID_ID.fullmatch(header) else new_request_id()


def current_request_id() -> str:
    """The id of the request or operation being served; a fresh one outside any."""
    return request_id_var.get() or new_request_id()


def bind_request_id(request_id: str) -> None:
    """Make `request_id` current for the rest of this task or thread (websocket operations)."""
    request_id_var.set(request_id)
