"""Rate limits counted in Django's cache: Redis when REDIS_URL or REDIS_SENTINELS is set, so every
instance counts the same; the per-process memory cache otherwise.

While the cache is unreachable (Redis down, or a Sentinel failover under way) nothing is counted
and nothing is refused; counting resumes on the master that answers next. A failover keeps the
counts the replica had received (asynchronous replication: at most the last moment's hits lost).

Fixed windows (an INCR per hit on a key that expires with its window): exact retry-after hints,
one round trip, at most twice the rate across a window boundary.

On Redis a hit is one round trip: one script increments the window's key and, when that created
it, sets its expiry. It runs on a client built once per connection pool (the process's one
pool, core/redis_pools.py) from the pool of Django's own RedisCache (`_cache` and its
`_get_connection_pool`, the private parts used here; tests/test_internals.py checks them):
Django builds a redis-py client for every call, and building one costs as much as a round trip.
Django's cache API would take three round trips (ADD; INCR, which RedisCache does as EXISTS
then INCR).
"""

import hashlib
import logging
import math
import threading
import time
import weakref
from typing import Any

import redis
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)


class RateLimited(Exception):
    """Too many attempts; try again in `retry_after` seconds."""

    def __init__(self, message: str, *, scope: str, retry_after: int) -> None:
        super().__init__(message)
        self.scope = scope
        self.retry_after = retry_after


def _window(rate: tuple[int, int], now: float) -> tuple[int, int]:
    """(window number, seconds until it ends)."""
    period = rate[1]
    return int(now // period), max(1, math.ceil(period - now % period))


def _key(scope: str, identity: str, window: int) -> str:
    # Hashed: identities are usernames and addresses of any length and alphabet.
    return f"ratelimit:{scope}:{hashlib.sha256(identity.encode()).hexdigest()[:32]}:{window}"


def _limited(scope: str, retry_after: int) -> RateLimited:
    return RateLimited(
        f"Too many requests ({scope}); try again in {retry_after} s.", scope=scope, retry_after=retry_after
    )


def _describe(error: Exception) -> str:
    # One line per request while Redis is away (a failover lasts seconds): no traceback each time.
    return f"{type(error).__name__}: {error}"


def hit(scope: str, identity: str) -> None:
    """Count one attempt; raise RateLimited when it is over the limit configured for `scope`."""
    rate = settings.RATE_LIMITS.get(scope)
    if rate is None:
        return
    window, retry_after = _window(rate, time.time())
    key = _key(scope, identity, window)
    try:
        count = _count(key, timeout=rate[1] + 1)
    except Exception as error:
        # Counting is protection, not a precondition: a cache outage must not stop all writes.
        logger.warning("Rate limit %s not counted: the cache is unavailable (%s)", scope, _describe(error))
        return
    if count > rate[0]:
        raise _limited(scope, retry_after)


# The window's counter: created by the first hit with its window's expiry, incremented by each.
_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_scripts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # pool -> the script on a client of it
_scripts_lock = threading.Lock()


def _count(key: str, *, timeout: int) -> int:
    """Add one to the window's counter, created with `timeout` if it does not exist yet."""
    backend = caches[DEFAULT_CACHE_ALIAS]  # what `cache` stands for in this context
    if isinstance(backend, RedisCache):
        return int(_count_script(backend)(keys=[backend.make_and_validate_key(key)], args=[timeout]))
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=timeout)
        return 1


def _count_script(backend: RedisCache) -> Any:
    pool = backend._cache._get_connection_pool(write=True)  # type: ignore[attr-defined]
    with _scripts_lock:
        script = _scripts.get(pool)
        if script is None:
            script = _scripts[pool] = redis.Redis(connection_pool=pool).register_script(_COUNT_SCRIPT)
    return script


def check(scope: str, identity: str) -> None:
    """Raise RateLimited if `scope` is already used up for `identity`, without counting."""
    rate = settings.RATE_LIMITS.get(scope)
    if rate is None:
        return
    window, retry_after = _window(rate, time.time())
    try:
        count = cache.get(_key(scope, identity, window), 0)
    except Exception as error:
        logger.warning("Rate limit %s not checked: the cache is unavailable (%s)", scope, _describe(error))
        return
    if count >= rate[0]:
        raise _limited(scope, retry_after)
