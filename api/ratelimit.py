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

A scope counted with `reserve` (the per-author mutation limit, on the path of every write) takes
attempts from the shared count a few at a time: one script moves up to an eighth of what is
left of the window (at most RESERVE_MAX) into this process's reserve, and the next attempts in
this process use the reserve without a round trip. Never more than the limit is allowed across
all instances, as every attempt comes out of the shared count; an instance that finds the count
used up refuses even while another still holds a reserve of the same window, at most an eighth
of what was left when that reserve was taken (what a client sees as a slightly early refusal
when its attempts are spread over instances). A reserve lasts until its window ends, and outlives
a Redis restart or failover: it was taken from the counts Redis had then.
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


def hit(scope: str, identity: str, *, reserve: bool = False) -> None:
    """Count one attempt; raise RateLimited when it is over the limit configured for `scope`.

    With `reserve`, attempts are taken from the shared count a few at a time (the module's
    docstring); only for scopes that `check` never reads, as a reserve counts there before it is used.
    """
    rate = settings.RATE_LIMITS.get(scope)
    if rate is None:
        return
    window, retry_after = _window(rate, time.time())
    owner = (scope, identity)
    backend = caches[DEFAULT_CACHE_ALIAS]  # what `cache` stands for in this context
    reserving_on = backend if reserve and isinstance(backend, RedisCache) else None
    if reserving_on is not None and _reserves.take(owner, window):
        return
    key = _key(scope, identity, window)
    try:
        if reserving_on is not None:
            allowed = _reserve_one(reserving_on, key, owner, window, rate)
        else:
            allowed = _count(backend, key, timeout=rate[1] + 1) <= rate[0]
    except Exception as error:
        # Counting is protection, not a precondition: a cache outage must not stop all writes.
        logger.warning("Rate limit %s not counted: the cache is unavailable (%s)", scope, _describe(error))
        return
    if not allowed:
        raise _limited(scope, retry_after)


# The window's counter: created by the first hit with its window's expiry, incremented by each.
_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
# A reserve for the window's counter: up to an eighth of what is left (at least one, at most
# ARGV[3]) moves to the caller, who gets 0 when nothing is left. ARGV: the limit, the expiry,
# the largest reserve, the share (8).
_RESERVE_SCRIPT = """
local left = tonumber(ARGV[1]) - tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return 0 end
local taken = math.max(1, math.min(tonumber(ARGV[3]), math.floor(left / tonumber(ARGV[4]))))
if redis.call('INCRBY', KEYS[1], taken) == taken then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return taken
"""
RESERVE_MAX = 16
RESERVE_SHARE = 8
# pool -> {script source: the script on a client of that pool}
_scripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_scripts_lock = threading.Lock()


def _count(backend: Any, key: str, *, timeout: int) -> int:
    """Add one to the window's counter, created with `timeout` if it does not exist yet."""
    if isinstance(backend, RedisCache):
        return int(_script(backend, _COUNT_SCRIPT)(keys=[backend.make_and_validate_key(key)], args=[timeout]))
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=timeout)
        return 1


def _reserve_one(backend: RedisCache, key: str, owner: tuple[str, str], window: int, rate: tuple[int, int]) -> bool:
    """Move a reserve from the window's shared counter to this process, one attempt of it for the
    caller's; False when nothing is left."""
    limit, period = rate
    script = _script(backend, _RESERVE_SCRIPT)
    taken = int(script(keys=[backend.make_and_validate_key(key)], args=[limit, period + 1, RESERVE_MAX, RESERVE_SHARE]))
    if taken > 0:
        _reserves.put(owner, window, taken - 1)
    return taken > 0


def _script(backend: RedisCache, source: str) -> Any:
    pool = backend._cache._get_connection_pool(write=True)  # type: ignore[attr-defined]
    with _scripts_lock:
        scripts = _scripts.setdefault(pool, {})
        script = scripts.get(source)
        if script is None:
            script = scripts[source] = redis.Redis(connection_pool=pool).register_script(source)
    return script


class Reserves:
    """Attempts this process took from shared counters and has not used yet, per (scope, identity),
    for one window each. Bounded: past MAX_ENTRIES the oldest go (their attempts are forgone,
    never given twice)."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._left: dict[tuple[str, str], tuple[int, int]] = {}  # (scope, identity) -> (window, left)
        self._lock = threading.Lock()

    def take(self, owner: tuple[str, str], window: int) -> bool:
        """Use one reserved attempt of `window`, if any is left."""
        with self._lock:
            held = self._left.get(owner)
            if held is None or held[0] != window or held[1] <= 0:
                return False
            self._left[owner] = (window, held[1] - 1)
            return True

    def put(self, owner: tuple[str, str], window: int, count: int) -> None:
        """Add `count` attempts of `window` (a reserve of an earlier window is dropped)."""
        with self._lock:
            held = self._left.pop(owner, None)
            left = count + (held[1] if held is not None and held[0] == window else 0)
            if left > 0:
                self._left[owner] = (window, left)
                while len(self._left) > self.MAX_ENTRIES:
                    del self._left[next(iter(self._left))]


_reserves = Reserves()


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
