"""Domain errors and the one place that turns any resolver error into a GraphQL error with a code.

Services raise Django's own exceptions (ValidationError, PermissionDenied, ObjectDoesNotExist)
or NotAuthenticated; clients see `extensions.code` and a message they can act on, never internals.
"""

import logging
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.db import InterfaceError, InternalError, OperationalError
from graphql import GraphQLError
from psycopg_pool import PoolTimeout

from api.ratelimit import RateLimited
from core.request_id import current_request_id

logger = logging.getLogger(__name__)

# graphql-core's suggestions (" Did you mean 'blogs'?") map the schema for whoever asks.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


class NotAuthenticated(Exception):
    """The operation needs a valid `Authorization: Bearer <token>`."""


class BadUserInput(Exception):
    """The input is well-formed GraphQL but not acceptable (e.g. a malformed ID)."""


def _validation_message(error: ValidationError) -> tuple[str, dict[str, list[str]]]:
    if hasattr(error, "error_dict"):
        fields = {field: [str(m) for m in ValidationError(errs).messages] for field, errs in error.error_dict.items()}
        message = "; ".join(
            f"{field}: {' '.join(msgs)}" if field != "__all__" else " ".join(msgs) for field, msgs in fields.items()
        )
        return message, fields
    return " ".join(str(m) for m in error.messages), {}


# How long a client should wait before retrying after DATABASE_UNAVAILABLE: a failover's promotion
# takes about a second (docs/scaling.md has the measured bound).
DATABASE_RETRY_AFTER_SECONDS = 1
# "cannot execute ... in a read-only transaction": connected to a standby (a primary just demoted).
_READ_ONLY_SQLSTATE = "25006"


def database_unavailable(error: BaseException) -> bool:
    """The database could not be reached or cannot write right now (down, failing over, restarting):
    a passing condition the client should retry, not a fault in this server."""
    if isinstance(error, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    cause = error.__cause__
    return isinstance(error, InternalError) and getattr(cause, "sqlstate", None) == _READ_ONLY_SQLSTATE


def database_unavailable_error(error: BaseException) -> dict[str, Any]:
    """The GraphQL error a client gets while the database is unavailable (logged here, once)."""
    request_id = current_request_id()
    logger.warning(
        "Database unavailable (request %s): %s: %s; the client was told to retry",
        request_id,
        type(error).__name__,
        error,
    )
    return {
        "message": (
            f"The database is unavailable for a moment (a failover or a restart): retry in "
            f"{DATABASE_RETRY_AFTER_SECONDS} s. A mutation answered this way may or may not have been "
            "applied: check before repeating one that must not happen twice."
        ),
        "extensions": {
            "code": "DATABASE_UNAVAILABLE",
            "retryAfter": DATABASE_RETRY_AFTER_SECONDS,
            "requestId": request_id,
        },
    }


def format_error(error: Exception) -> dict[str, Any]:
    """Format one error for the response; unexpected exceptions are logged and masked."""
    if not isinstance(error, GraphQLError):
        error = GraphQLError(str(error), original_error=error)
    original = error.original_error
    formatted: dict[str, Any] = dict(error.formatted)
    extensions: dict[str, Any] = dict(formatted.get("extensions") or {})

    if original is None:
        # Parse and validation errors come from graphql-core itself.
        if "code" not in extensions:
            extensions["code"] = (
                "GRAPHQL_PARSE_FAILED" if error.message.startswith("Syntax Error") else "GRAPHQL_VALIDATION_FAILED"
            )
    elif isinstance(original, GraphQLError) and original.extensions and "code" in original.extensions:
        extensions.update(original.extensions)
        formatted["message"] = original.message
    elif isinstance(original, GraphQLError) and error.path is None:
        # A variable's value of the wrong type: graphql-core wraps the coercion error, before any
        # resolver ran (resolver errors have a path). The client's input, not a server fault.
        extensions["code"] = "GRAPHQL_VALIDATION_FAILED"
    elif isinstance(original, NotAuthenticated):
        extensions["code"] = "UNAUTHENTICATED"
    elif isinstance(original, PermissionDenied):
        extensions["code"] = "FORBIDDEN"
        formatted["message"] = str(original) or "You are not allowed to do this."
    elif isinstance(original, ObjectDoesNotExist):
        extensions["code"] = "NOT_FOUND"
    elif isinstance(original, ValidationError):
        message, fields = _validation_message(original)
        formatted["message"] = message
        extensions["code"] = "BAD_USER_INPUT"
        if fields:
            extensions["fields"] = fields
    elif isinstance(original, BadUserInput):
        extensions["code"] = "BAD_USER_INPUT"
    elif isinstance(original, RateLimited):
        extensions.update(code="RATE_LIMITED", limit=original.scope, retryAfter=original.retry_after)
    elif database_unavailable(original):
        unavailable = database_unavailable_error(original)
        formatted["message"] = unavailable["message"]
        extensions = unavailable["extensions"]
    else:
        request_id = current_request_id()
        logger.error("Unexpected error in GraphQL resolver (request %s)", request_id, exc_info=original)
        formatted["message"] = f"Internal server error (request {request_id})."
        extensions = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}

    if not settings.GRAPHQL_INTROSPECTION:
        formatted["message"] = _SUGGESTION.sub("", formatted["message"])
    formatted["extensions"] = extensions
    return formatted
