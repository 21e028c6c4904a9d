"""Which web pages may use the API: one list of origins for HTTP, HTTP streams and websockets.

A browser names the page that opens a request or a socket in `Origin`. A page of the site's own
origin (its scheme and a Host this site answers to, port included) and the pages django-cors-headers
lets read answers (CORS_ALLOWED_ORIGINS; while developing, loopback pages) may subscribe; any other
page is refused: a websocket handshake and an HTTP stream with 403, as cross-site websocket
hijacking requires, while ordinary HTTP answers it just leaves without CORS headers (the browser
then keeps them from the page). A request with no `Origin` is not a page's (a CLI tool, a server)
or is a same-origin GET, and passes.

The list's decision is django-cors-headers' own (`CorsMiddleware.origin_found_in_white_lists`, the
one internal this uses: tests/test_internals.py), so a page the HTTP answers admit is exactly a
page the sockets admit.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.http import HttpResponse
from django.http.request import split_domain_port, validate_host

from core.origins import as_origin

_cors = CorsMiddleware(lambda request: HttpResponse())


def scope_headers(scope: dict[str, Any]) -> dict[str, str]:
    """Request headers by lower-case name; repeated ones joined as RFC 9110 allows."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def site_origin(scope: dict[str, Any], headers: dict[str, str]) -> str | None:
    """This site's origin as the request reached it (Django's rules for the Host and for TLS behind
    a proxy), or None for a Host this site does not answer to."""
    host = headers.get("host", "")
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # what Django allows then
    if not domain or not validate_host(domain, allowed):
        return None
    proxy_header, secure_value = settings.SECURE_PROXY_SSL_HEADER or (None, None)
    forwarded_proto = headers.get(proxy_header[5:].replace("_", "-").lower()) if proxy_header else None
    secure = scope.get("scheme") in ("https", "wss") or (forwarded_proto or "").split(",")[0].strip() == secure_value
    return as_origin(f"{'https' if secure else 'http'}://{host}")


def listed(origin: str) -> bool:
    """A page of `origin` may read the API's HTTP answers (CORS_ALLOWED_ORIGINS and its patterns)."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return _cors.origin_found_in_white_lists(origin, parts)


@dataclass(frozen=True, slots=True)
class Admission:
    """May the page that sent a request or handshake use the API, and the CORS headers for its answer."""

    allowed: bool
    headers: list[tuple[bytes, bytes]]


VARY = (b"vary", b"Origin")  # answers differ by Origin, as django-cors-headers marks them


def admit(scope: dict[str, Any], headers: dict[str, str]) -> Admission:
    """The rule for streams and handshakes; `headers` are what django-cors-headers would add to an
    answer of `/graphql/` (for responses made outside Django: HTTP streams)."""
    origin = headers.get("origin")
    if origin is None:  # not a page, or a same-origin GET
        return Admission(True, [VARY])
    if not listed(origin):
        return Admission(origin == site_origin(scope, headers), [VARY])  # same-origin needs no CORS
    cors = [VARY, (b"access-control-allow-origin", origin.encode("latin-1"))]
    if settings.CORS_ALLOW_CREDENTIALS:
        cors.append((b"access-control-allow-credentials", b"true"))
    if settings.CORS_EXPOSE_HEADERS:
        cors.append((b"access-control-expose-headers", ", ".join(settings.CORS_EXPOSE_HEADERS).encode()))
    return Admission(True, cors)


class OriginValidator:
    """ASGI: refuse a websocket handshake from a page that may not use the API (HTTP 403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not admit(scope, scope_headers(scope)).allowed:
            return await WebsocketDenier()(scope, receive, send)  # type: ignore[arg-type]
        return await self.application(scope, receive, send)
