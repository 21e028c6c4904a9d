"""Origins written the one way browsers send them in an `Origin` header, so they compare as strings."""

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def as_origin(value: str) -> str | None:
    """`scheme://host[:port]` in lower case without its scheme's default port; None if `value` is
    not an origin (no scheme or host, a path, a query, credentials, a wildcard, a bad port)."""
    parts = urlsplit(value.strip().lower())
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or "@" in parts.netloc or "*" in parts.netloc:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, DEFAULT_PORTS.get(parts.scheme)) else "")
