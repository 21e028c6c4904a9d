"""Who is on the other end: the peer address, or behind a trusted proxy the client it names.

Per-IP limits are only as good as this. X-Forwarded-For is believed only from TRUSTED_PROXIES
(the balancer), and only its right-most entries that no trusted proxy added; anything further left
was written by the client and could be forged.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from core.networks import address_in


def client_ip(peer: str | None, forwarded_for: str | None, trusted_proxies: Iterable[str] = ()) -> str:
    """The client address: `peer`, unless `peer` is a trusted proxy naming someone else.

    X-Forwarded-For is walked from the right: each entry was written by the hop after it, so an
    entry is believed only while every hop to its right is a trusted proxy. The first address
    that is not a trusted proxy is the client; anything to its left was written by the client.
    """
    trusted = tuple(trusted_proxies)
    address = peer or "unknown"
    if not forwarded_for or not address_in(address, trusted):
        return address
    for hop in reversed([hop.strip() for hop in forwarded_for.split(",")]):
        if not hop:
            break
        address = hop
        if not address_in(hop, trusted):
            break
    return address


def request_ip(request: HttpRequest) -> str:
    return client_ip(
        request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"), settings.TRUSTED_PROXIES
    )


def scope_ip(scope: Mapping[str, Any]) -> str:
    """The client address of an ASGI (websocket) connection."""
    peer = (scope.get("client") or [None])[0]
    forwarded = ",".join(
        value.decode("latin-1") for name, value in scope.get("headers", []) if name.lower() == b"x-forwarded-for"
    )
    return client_ip(peer, forwarded or None, settings.TRUSTED_PROXIES)


def context_ip(context: Any) -> str:
    """The client address behind a GraphQL context: an HttpRequest, or the websocket's scope."""
    if isinstance(context, HttpRequest):
        return request_ip(context)
    return scope_ip(getattr(context, "channels_scope", None) or {})
