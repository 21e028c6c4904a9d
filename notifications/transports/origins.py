"""Refuse websocket upgrades from foreign web pages (cross-site websocket hijacking).

Channels' AllowedHostsOriginValidator also refuses clients that send no Origin at all; those
are not browsers (CLI tools, servers, tests) and cannot be hijacked that way, so they pass here.
"""

from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator as BaseOriginValidator
from django.conf import settings


def allowed_origins() -> list[str]:
    if settings.WEBSOCKET_ALLOWED_ORIGINS:
        return settings.WEBSOCKET_ALLOWED_ORIGINS
    # Like AllowedHostsOriginValidator: the hosts this site answers to.
    return ["*"] if settings.DEBUG and not settings.ALLOWED_HOSTS else list(settings.ALLOWED_HOSTS)


class OriginValidator(BaseOriginValidator):
    def __init__(self, application: Any) -> None:
        super().__init__(application, allowed_origins())

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


def origin_allowed(origin: str | None) -> bool:
    """The same rule for an HTTP subscription stream's `Origin` (absent: not a browser, or a same-origin GET)."""
    if origin is None:
        return True
    return OriginValidator(None).valid_origin(urlparse(origin))
