"""Where Redis is, from the environment: one server, or a master that Sentinel manages.

- `REDIS_URL`: one server (the channel layer, and the cache that counts rate limits).
- `REDIS_SENTINELS=host:port,host:port,...` and `REDIS_SENTINEL_MASTER=<name>`: ask these
  sentinels which server is the master of `<name>`, and ask again after a failover. They take
  precedence: `REDIS_URL` is then not used.
- `REDIS_PASSWORD` authenticates to Redis (the master and its replicas; in a `REDIS_URL` the URL's
  own password wins), `REDIS_SENTINEL_PASSWORD` to the sentinels (their `requirepass`), and
  `REDIS_DB` picks the database under Sentinel (a URL names its own).

Both the channel layer (channels-redis's own Sentinel host form, notifications/runtime/layers.py) and
Django's cache (RedisCache with a pool of core/redis_pools.py as its documented `pool_class` option) are
built from one `RedisTarget`, so they always talk to the same master.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from redis.sentinel import Sentinel, SentinelConnectionPool

# A sentinel answers from memory: a slow one is a dead one, ask the next. Kept short so that
# /readyz (3 s per check) can try all three of them.
SENTINEL_SOCKET_TIMEOUT = 1.0


@dataclass(frozen=True)
class RedisTarget:
    url: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    password: str | None = None
    sentinel_password: str | None = None
    db: int = 0

    @property
    def configured(self) -> bool:
        return bool(self.url or self.sentinels)

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def sentinel_kwargs(self) -> dict[str, Any]:
        """How to talk to the sentinels themselves (not to the Redis servers they name)."""
        kwargs: dict[str, Any] = {
            "socket_timeout": SENTINEL_SOCKET_TIMEOUT,
            "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT,
            # redis-py retries a command of a client it builds itself ten times, with backoff, on
            # the same sentinel: one that hangs would hold every master lookup for about fifteen
            # seconds. Without retries the lookup moves on to the next sentinel after one timeout.
            "retry": None,
        }
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs

    def channel_layer_host(self) -> str | dict[str, Any]:
        """One entry of channels-redis's `hosts`: the URL, or its Sentinel form."""
        if self.uses_sentinel:
            host: dict[str, Any] = {
                "sentinels": [list(address) for address in self.sentinels],
                "master_name": self.master_name,
                "sentinel_kwargs": self.sentinel_kwargs(),
                "db": self.db,
            }
        elif self.password:
            host = {"address": self.url}
        else:
            return self.url  # exactly what single-server mode always configured
        if self.password:
            host["password"] = self.password
        return host

    def cache(self, *, max_connections: int, pool_timeout: float) -> dict[str, Any]:
        """CACHES["default"]: Django's own Redis backend, on the master either way.

        Through one pool per process (core/redis_pools.py) of at most `max_connections`; a
        request that finds them all in use waits up to `pool_timeout` seconds for one.
        """
        options: dict[str, Any] = {
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "pool_class": "core.redis_pools.SharedBlockingPool",
            "max_connections": max_connections,
            "timeout": pool_timeout,
        }
        if self.password:
            options["password"] = self.password
        location = self.url
        if self.uses_sentinel:
            location = f"{SentinelMasterPool.SCHEME}://{self.master_name}/{self.db}"
            options |= {
                "pool_class": "core.redis_pools.SharedSentinelMasterPool",
                "sentinels": [list(address) for address in self.sentinels],
                "sentinel_kwargs": self.sentinel_kwargs(),
            }
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": "blog",
            "OPTIONS": options,
        }


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 as `[::1]:26379`) into address pairs."""
    addresses = []
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(f"REDIS_SENTINELS: {entry!r} is not host:port (e.g. 10.0.0.5:26379).")
        addresses.append((host, int(port)))
    return tuple(addresses)


def from_environ(environ: Mapping[str, str]) -> RedisTarget:
    """The Redis this process uses; ImproperlyConfigured for a half-given Sentinel setup."""
    password = environ.get("REDIS_PASSWORD") or None
    sentinels = parse_sentinels(environ.get("REDIS_SENTINELS", ""))
    master_name = environ.get("REDIS_SENTINEL_MASTER", "").strip()
    if bool(sentinels) != bool(master_name):
        raise ImproperlyConfigured(
            "Sentinel needs both REDIS_SENTINELS (host:port,...) and REDIS_SENTINEL_MASTER (the monitored name)."
        )
    if not sentinels:
        return RedisTarget(url=environ.get("REDIS_URL", ""), password=password)
    db = environ.get("REDIS_DB", "0").strip() or "0"
    if not db.isdigit():
        raise ImproperlyConfigured(f"REDIS_DB must be a database number, got {db!r}.")
    return RedisTarget(
        sentinels=sentinels,
        master_name=master_name,
        password=password,
        sentinel_password=environ.get("REDIS_SENTINEL_PASSWORD") or None,
        db=int(db),
    )


class SentinelMasterPool(SentinelConnectionPool):
    """redis-py's Sentinel pool for Django's RedisCache, which builds pools with `from_url`.

    Django's `OPTIONS["pool_class"]` is its documented way to change the pool; its client calls
    `pool_class.from_url(LOCATION, **OPTIONS)`. LOCATION is `sentinel://<master name>/<db>`, and
    OPTIONS carry the sentinels. Connections ask the sentinels for the master's address whenever
    they (re)connect, so the cache follows a failover the way the channel layer does.
    """

    SCHEME = "sentinel"

    @classmethod
    def from_url(  # type: ignore[override]
        cls,
        url: str,
        *,
        sentinels: list[list[Any]],
        sentinel_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SentinelMasterPool:
        parts = urlsplit(url)
        # The netloc, not .hostname: that one is lower-cased, and master names are case-sensitive.
        if parts.scheme != cls.SCHEME or not parts.netloc:
            expected = f"'{cls.SCHEME}://<master name>/<db>'"
            raise ImproperlyConfigured(f"{cls.__name__} needs LOCATION {expected}, got {url!r}")
        db = parts.path.strip("/") or "0"
        manager = Sentinel([(host, int(port)) for host, port in sentinels], sentinel_kwargs=sentinel_kwargs)
        return cls(parts.netloc, manager, db=int(db), **kwargs)
