"""Bearer-token authentication for HTTP."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from api.models import Author
from api.selectors import author_by_token


def bearer_token(header: str | None) -> str | None:
    """The token in an `Authorization: Bearer <token>` value, or None when there is none."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class BearerTokenMiddleware:
    """Sets `request.user` from an `Authorization: Bearer` token; flags a token that does not authenticate."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = bearer_token(request.headers.get("Authorization"))
        request.token_invalid = False  # type: ignore[attr-defined]
        if token is not None:
            author: Author | None = author_by_token(token)
            if author is None:
                request.token_invalid = True  # type: ignore[attr-defined]
            else:
                request.user = author
        return self.get_response(request)
