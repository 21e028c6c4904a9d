"""Bearer-token sign-in, one way for every entry point: HTTP requests, websockets, HTTP streams."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from api.errors import (
    DATABASE_RETRY_AFTER_SECONDS,
    NotAuthenticated,
    database_unavailable,
    database_unavailable_error,
)
from api.selectors import UNKNOWN, Credential, credential_by_token
from api.signals import EXPIRED

# What a client is told about a token that does not sign in, by selectors.credential_by_token's reason.
REFUSED_TOKEN_MESSAGES = {
    EXPIRED: "The bearer token has expired; get a new one with createToken.",
}
REFUSED_TOKEN_MESSAGE = "The bearer token is invalid or has been revoked; get a new one with createToken."


def refused_token_message(reason: str | bool) -> str:
    if isinstance(reason, str):
        return REFUSED_TOKEN_MESSAGES.get(reason, REFUSED_TOKEN_MESSAGE)
    return REFUSED_TOKEN_MESSAGE


def bearer_token(header: str | None) -> str | None:
    """The token in an `Authorization: Bearer <token>` value, or None when there is none."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class TokenRefused(NotAuthenticated):
    """A bearer token was offered and does not sign in; `reason` is selectors.credential_by_token's."""

    def __init__(self, reason: str) -> None:
        super().__init__(refused_token_message(reason))
        self.reason = reason


def sign_in(authorization: object, *, bearer_only: bool = False) -> Credential | None:
    """The credential an `Authorization` value signs in with; None when it offers no bearer token.

    TokenRefused when it offers one that does not sign in (unknown, revoked, expired, its author
    deactivated). A value of another scheme belongs to someone else (a proxy's Basic auth) and
    signs nobody in, unless `bearer_only`: where the value can only mean a bearer token (a
    websocket's `connection_init`), anything else is refused too. Queries the database.
    """
    if authorization is None:
        return None
    token = bearer_token(authorization) if isinstance(authorization, str) else None
    if token is None:
        if bearer_only or not isinstance(authorization, str):
            raise TokenRefused(UNKNOWN)
        return None
    credential = credential_by_token(token)
    if not isinstance(credential, Credential):
        raise TokenRefused(credential or UNKNOWN)
    return credential


class BearerTokenMiddleware:
    """Sets `request.user` and `request.credential` from an `Authorization: Bearer` token.

    A token that does not sign in leaves `request.token_invalid` set to why (a reason of
    selectors.credential_by_token); False otherwise.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.token_invalid = False  # type: ignore[attr-defined]
        request.credential = None  # type: ignore[attr-defined]
        try:
            credential = sign_in(request.headers.get("Authorization"))
        except TokenRefused as refused:
            request.token_invalid = refused.reason  # type: ignore[attr-defined]
        except Exception as error:
            if not database_unavailable(error):
                raise
            # Before any GraphQL runs, so answered here, as GraphQL errors are: the client can
            # tell a passing outage (retry) from a fault.
            response = JsonResponse({"errors": [database_unavailable_error(error)]}, status=503)
            response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
            return response
        else:
            if credential is not None:
                request.user = credential.author
                request.credential = credential  # type: ignore[attr-defined]
        return self.get_response(request)
