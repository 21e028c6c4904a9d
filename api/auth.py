"""Bearer-token authentication for HTTP."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

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


class BearerTokenMiddleware:
    """Sets `request.user` and `request.credential` from an `Authorization: Bearer` token.

    A token that does not sign in leaves `request.token_invalid` set to why (a reason of
    selectors.credential_by_token); False otherwise.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = bearer_token(request.headers.get("Authorization"))
        request.token_invalid = False  # type: ignore[attr-defined]
        request.credential = None  # type: ignore[attr-defined]
        if token is not None:
            credential = credential_by_token(token)
            if isinstance(credential, Credential):
                request.user = credential.author
                request.credential = credential  # type: ignore[attr-defined]
            else:
                request.token_invalid = credential or UNKNOWN  # type: ignore[attr-defined]
        return self.get_response(request)
