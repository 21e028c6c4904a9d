"""DATABASE_URL as Django's DATABASES entry, including libpq's multi-host form.

    postgresql://blog:secret@db-1:5432,db-2:5432/blog?target_session_attrs=read-write

names a primary and its standby: libpq tries the hosts in order and keeps the first one that
accepts writes, so after a failover new connections find the promoted standby by themselves.
dj-database-url parses one host only; the host list is taken apart here and handed to libpq as
its comma-separated `host` and `port` parameters (what Django passes on unchanged).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dj_database_url

DEFAULT_PORT = "5432"
# Seconds libpq waits for one host before trying the next: a dead host's address may never
# answer at all (a vanished container), and the next host is the one that matters then.
DEFAULT_CONNECT_TIMEOUT = 3


def database_settings(url: str) -> dict[str, Any]:
    """The DATABASES["default"] entry for `url` (any scheme dj-database-url knows)."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        parsed: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
        if parsed["ENGINE"] == "django.db.backends.postgresql":
            parsed.setdefault("OPTIONS", {}).setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        return parsed
    if not parts.scheme.startswith("postgres"):
        raise ValueError(f"DATABASE_URL: several hosts are only understood for PostgreSQL, not {parts.scheme}")
    names, ports = [], []
    for host in hosts.split(","):
        if host.startswith("["):  # an IPv6 address: [::1]:5432
            name, _, rest = host[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            name, _, port = host.partition(":")
        if not name:
            raise ValueError(f"DATABASE_URL: empty host in {hosts!r}")
        names.append(name)
        ports.append(port or DEFAULT_PORT)
    first_host = f"[{names[0]}]" if ":" in names[0] else names[0]
    first = urlunsplit(parts._replace(netloc=f"{credentials}{at}{first_host}:{ports[0]}"))
    parsed = dict(dj_database_url.parse(first, conn_max_age=0))
    parsed["HOST"] = ",".join(names)
    parsed["PORT"] = ",".join(ports)
    parsed.setdefault("OPTIONS", {}).setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    return parsed
