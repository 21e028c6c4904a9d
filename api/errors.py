"""Domain errors and the one place that turns any resolver error into a GraphQL error with a code.

Services raise Django's own exceptions (ValidationError, PermissionDenied, ObjectDoesNotExist)
or NotAuthenticated; clients see `extensions.code` and a message they can act on, never internals.
"""

import logging
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from graphql import GraphQLError

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
    else:
        request_id = current_request_id()
        logger.error("Unexpected error in GraphQL resolver (request %s)", request_id, exc_info=original)
        formatted["message"] = f"Internal server error (request {request_id})."
        extensions = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}

    if not settings.GRAPHQL_INTROSPECTION:
        formatted["message"] = _SUGGESTION.sub("", formatted["message"])
    formatted["extensions"] = extensions
    return formatted
