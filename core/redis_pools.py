"""One bounded Redis connection pool per process for Django's cache, shared by every request.

Django's cache handler gives each ASGI request a cache object of its own (its connections are
context-local), and RedisCache builds its pool lazily per object: every request connected to
Redis anew (TCP, HELLO, a health check) before its first rate-limit count. RedisCache builds its
pool with `OPTIONS["pool_class"].from_url(LOCATION, **OPTIONS)`, its documented extension point;
the classes here answer that call with the process's one pool for those arguments, built once.

The pools block (up to `timeout` seconds) when all `max_connections` are in use instead of
opening more: a process holds at most that many connections however many requests it serves.
A pooled connection that Redis closed (a restart) is reconnected by redis-py on its next use;
under Sentinel every (re)connect asks the sentinels for the master, and a connection still on a
demoted master is dropped at its first READONLY answer, as with a fresh pool per request.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from core.redis_config import SentinelMasterPool

_pools: dict[tuple[str, str, str], Any] = {}
_lock = threading.Lock()


def _shared(cls: type, url: str, options: dict[str, Any], build: Any) -> Any:
    # repr of sorted options: they hold lists (sentinel addresses), so they are not hashable as given.
    key = (f"{cls.__module__}.{cls.__qualname__}", url, repr(sorted(options.items())))
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = build()
        return pool


class SharedBlockingPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool for one Redis server, one per process for a given URL and options."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SharedBlockingPool:
        return _shared(cls, url, options, lambda: super(SharedBlockingPool, cls).from_url(url, **options))


class BlockingSentinelMasterPool(SentinelMasterPool, redis.BlockingConnectionPool):
    """The Sentinel pool (core/redis_config.py), blocking when full.

    SentinelConnectionPool chooses where a connection goes (the master the sentinels name);
    BlockingConnectionPool decides what happens when all are in use: they compose by inheritance.
    """


class SharedSentinelMasterPool(BlockingSentinelMasterPool):
    """The blocking Sentinel pool, one per process for given options."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SharedSentinelMasterPool:
        return _shared(cls, url, options, lambda: super(SharedSentinelMasterPool, cls).from_url(url, **options))


def pools() -> list[Any]:
    """The pools this process built (for metrics and tests)."""
    with _lock:
        return list(_pools.values())
