"""channels-redis, configured so that subscribers are not silently lost.

- redis-py 8 gives sockets a 5 s read timeout, the same as channels-redis's BRPOP wait, so an
  idle receiver dies with "Timeout reading from ..." (channels-redis #422). Reads here wait
  longer than BRPOP does.
- redis-py 8's asyncio pool raises MaxConnectionsError past 100 connections; during a burst of
  connects channels-redis's group_add then fails in a task nobody awaits. A blocking pool waits
  for a free connection instead.
- After Redis restarts, the first command on each pooled connection fails ("Connection closed by
  server"). For group_send that was a publication lost for live delivery: every hub had already
  rejoined and read the log, and nothing told them to read it again. It is sent once more.

`group_send` is channels-redis's own (the same keys, serialisation and per-channel Lua, built
by its `_group_key` and `_map_channel_keys_to_connection`), in one round trip where the library
takes four: every publication goes through it. The layer remembers each group's members from
its last send and sends with one script that drops the group's expired members, checks that
the rest are the remembered ones, and only then adds the message to each member's channel;
when they are not (a process joined or left), the script answers with the members as they are
and the send is made again for them. Nothing is ever sent on a stale member list. With several
Redis hosts (a sharded layer) it is two round trips: the members read in one, the message added
per host in another.

A receive pops the message and nothing more (`_brpop_with_clean`): channels-redis's backup
queue around each pop costs a round trip before every delivery and saves nothing here.

`ping` asks Redis itself whether the layer can be reached (for /readyz); channels-redis offers no
public way to, so it uses the layer's `connection(index)`. That, the `create_pool` override, the
pop and the parts `group_send` uses are channels-redis internals, used here only and checked by
tests/test_internals.py.

All three hold in both of the host forms channels-redis knows: a URL (`{"address": ...}`), and
its Sentinel form (`{"sentinels": [...], "master_name": ..., "sentinel_kwargs": ...}`), where
every connection asks the sentinels for the master's address when it (re)connects, so after a
failover the next command reaches the new master.
"""

import logging
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import redis
import redis.sentinel
from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis import asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from core.redis_pools import BlockingSentinelMasterPool

logger = logging.getLogger(__name__)

# channels-redis's group_send script: each member channel gets the message unless it is full.
# ARGV: the messages, one per key; the capacities, one per key; the time; the expiry.
GROUP_SEND_LUA = """
local over_capacity = 0
local current_time = ARGV[#ARGV - 1]
local expiry = ARGV[#ARGV]
for i=1,#KEYS do
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], current_time, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""

# One round trip for a group whose members the sender remembers. KEYS: the group, then each
# member channel's key. ARGV: the expired-member cutoff, the number of remembered members and
# their names, then per channel key its message and capacity, then the stale-message cutoff,
# the time and the channel expiry. Answers the count over capacity, or the group's actual members
# (a list) when they are not the remembered ones, without sending anything.
GROUP_SEND_CHECKED_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local remembered = tonumber(ARGV[2])
if #members ~= remembered then return members end
local expected = {}
for i = 1, remembered do expected[ARGV[2 + i]] = true end
for _, member in ipairs(members) do
    if not expected[member] then return members end
end
local channels = #KEYS - 1
local over_capacity = 0
for i = 1, channels do
    local key = KEYS[i + 1]
    redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[#ARGV - 2])
    if redis.call('ZCOUNT', key, '-inf', '+inf') < tonumber(ARGV[2 + remembered + channels + i]) then
        redis.call('ZADD', key, ARGV[#ARGV - 1], ARGV[2 + remembered + i])
        redis.call('EXPIRE', key, ARGV[#ARGV])
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""
REMEMBERED_MEMBERS_AT_MOST = 256  # larger groups (not this project's) have their members read first


class BlockingSentinelConnectionPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """channels-redis's Sentinel pool that waits for a free connection, as the URL form's does.

    SentinelConnectionPool only chooses where a connection goes (the master the sentinels name);
    BlockingConnectionPool only decides what happens when all are in use. Neither overrides what
    the other does, so the two compose by inheritance alone.
    """


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One round trip of a group send: these commands pipelined to host `index`."""

    index: int
    commands: tuple[tuple[str, tuple[Any, ...]], ...]


def _next_trip(steps: Generator[RoundTrip, list[Any], None], answer: list[Any] | None) -> RoundTrip | None:
    """The send's next round trip, given the last one's replies (None to start); None once done."""
    try:
        return steps.send(answer)  # type: ignore[arg-type]
    except StopIteration:
        return None


def _queued(pipe: Any, trip: RoundTrip) -> Any:
    for name, args in trip.commands:
        getattr(pipe, name)(*args)
    return pipe


async def ping(layer: Any) -> None:
    """Raise unless the channel layer's Redis answers (a layer without Redis always answers).

    Under Sentinel the connection goes to the master the sentinels name, so this fails from the
    master's death until a replica is promoted.
    """
    if isinstance(layer, BaseRedisChannelLayer):
        await layer.connection(0).ping()


class RedisChannelLayer(BaseRedisChannelLayer):
    max_connections = 200
    pool_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each group's members at its last send: only a guess, checked by the script at every send.
        # None for a group too large to send that way: its members are read first.
        self._members: dict[str, tuple[str, ...] | None] = {}
        self._blocking_client: redis.Redis | None = None
        self._blocking_lock = threading.Lock()

    def create_pool(self, index: int) -> Any:
        return self._pool(self.hosts[index], self.brpop_timeout + 10, blocking_client=False)

    def _pool(self, entry: dict[str, Any], read_timeout: float, *, blocking_client: bool) -> Any:
        host = dict(entry)
        host.setdefault("socket_timeout", read_timeout)
        # A dead host does not refuse a connection, it stays silent (a killed container, a lost
        # machine). Redis on the same network accepts within milliseconds, so a second means
        # dead; a broadcast after a commit waits at most this long per try, not five seconds.
        host.setdefault("socket_connect_timeout", min(1, read_timeout))
        host.setdefault("socket_keepalive", True)
        host.setdefault("health_check_interval", 15)
        host.setdefault("max_connections", self.max_connections)
        host.setdefault("timeout", self.pool_timeout)
        if "master_name" in host:  # as channels_redis.utils.create_pool reads the Sentinel form
            addresses, sentinel_kwargs = host.pop("sentinels"), host.pop("sentinel_kwargs", None)
            if blocking_client:
                manager = redis.sentinel.Sentinel(addresses, sentinel_kwargs=sentinel_kwargs)
                return BlockingSentinelMasterPool(host.pop("master_name"), manager, **host)
            sentinels = Sentinel(addresses, sentinel_kwargs=sentinel_kwargs)
            return BlockingSentinelConnectionPool(host.pop("master_name"), sentinels, **host)
        if blocking_client:
            return redis.BlockingConnectionPool.from_url(host.pop("address"), **host)
        return aioredis.BlockingConnectionPool.from_url(host.pop("address"), **host)

    @property
    def sends_from_threads(self) -> bool:
        """Whether `group_send_blocking` can be used: one Redis host (not a sharded layer)."""
        return self.ring_size == 1

    def group_send_blocking(self, group: str, message: dict[str, Any], *, timeout: float) -> None:
        """`group_send` from a thread, on redis-py's blocking client, with no hop to an event loop.

        Raises redis's TimeoutError when Redis did not answer within `timeout` (the message may
        have been sent all the same), and what a second try raised after a dead connection.
        """
        client = self._blocking_client
        if client is None:
            with self._blocking_lock:
                if self._blocking_client is None:  # built once: a client costs about as much as the send
                    pool = self._pool(self.hosts[0], timeout, blocking_client=True)
                    self._blocking_client = redis.Redis(connection_pool=pool)
                client = self._blocking_client
        try:
            self._drive_blocking(client, group, message)
        except RedisConnectionError:
            self._drive_blocking(client, group, message)

    async def close_pools(self) -> None:
        await super().close_pools()
        if self._blocking_client is not None:
            self._blocking_client.connection_pool.disconnect()

    def _drive_blocking(self, client: redis.Redis, group: str, message: dict[str, Any]) -> None:
        steps, answer = self._group_send_steps(group, message), None
        while (trip := _next_trip(steps, answer)) is not None:
            with client.pipeline(transaction=False) as pipe:
                answer = _queued(pipe, trip).execute()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Once more on a fresh connection if the pooled one died with Redis.

        A retry after a failure halfway may deliver twice; hubs drop what they already have
        by sequence number. Redis still down fails again, and the hubs catch up from the log
        when they reconnect. Under Sentinel the second try reconnects, and a reconnect asks the
        sentinels which server is the master now (a killed or demoted one is left behind).
        """
        try:
            await self._group_send(group, message)
        except RedisConnectionError:
            await self._group_send(group, message)

    async def _group_send(self, group: str, message: dict[str, Any]) -> None:
        steps, answer = self._group_send_steps(group, message), None
        while (trip := _next_trip(steps, answer)) is not None:
            async with self.connection(trip.index).pipeline(transaction=False) as pipe:
                answer = await _queued(pipe, trip).execute()

    def _group_send_steps(self, group: str, message: dict[str, Any]) -> Generator[RoundTrip, list[Any], None]:
        """A group send as its round trips, each answered with its commands' replies: the one
        procedure that the event loop's client and a thread's blocking client both carry out."""
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        remembered = self._members.get(group, ()) if self.ring_size == 1 else None
        if remembered is not None:
            for _ in range(3):  # a group whose members keep changing is read the slow way below
                (answer,) = yield RoundTrip(0, (("eval", self._remembered_send_args(key, remembered, message)),))
                if not isinstance(answer, list):
                    self._log_over_capacity(answer, len(remembered), group)
                    return
                remembered = self._remember(group, [member.decode("utf8") for member in answer])
                if remembered is None:
                    break
        _, found = yield RoundTrip(
            self.consistent_hash(group),
            (("zremrangebyscore", (key, 0, int(time.time()) - self.group_expiry)), ("zrange", (key, 0, -1))),
        )
        channel_names = [member.decode("utf8") for member in found]
        if self.ring_size == 1:
            self._remember(group, channel_names)  # a large group that shrank is sent the short way again
        by_connection, messages, capacities = self._map_channel_keys_to_connection(channel_names, message)
        for index, channel_keys in by_connection.items():
            stale = int(time.time()) - int(self.expiry)
            args = [messages[k] for k in channel_keys] + [capacities[k] for k in channel_keys]
            script = (GROUP_SEND_LUA, len(channel_keys), *channel_keys, *args, time.time(), self.expiry)
            replies = yield RoundTrip(
                index, (*(("zremrangebyscore", (k, 0, stale)) for k in channel_keys), ("eval", script))
            )
            self._log_over_capacity(replies[-1], len(channel_names), group)

    def _remember(self, group: str, members: list[str]) -> tuple[str, ...] | None:
        """Keep `members` for the next send; None (read them first next time) for a large group."""
        remembered = tuple(sorted(members)) if len(members) <= REMEMBERED_MEMBERS_AT_MOST else None
        self._members[group] = remembered
        return remembered

    def _remembered_send_args(self, key: str, members: tuple[str, ...], message: dict[str, Any]) -> tuple[Any, ...]:
        _, messages, capacities = self._map_channel_keys_to_connection(list(members), message)
        channel_keys = list(messages)
        now = time.time()
        return (
            GROUP_SEND_CHECKED_LUA,
            1 + len(channel_keys),
            key,
            *channel_keys,
            int(now) - self.group_expiry,
            len(members),
            *members,
            *(messages[k] for k in channel_keys),
            *(capacities[k] for k in channel_keys),
            int(now) - int(self.expiry),
            now,
            self.expiry,
        )

    async def _brpop_with_clean(self, index: int, channel: str, timeout: int) -> bytes | None:
        """Pop the channel's next message (None after `timeout` seconds), and only that.

        channels-redis surrounds every pop with a backup queue: a script that puts backed-up
        messages back before the pop, a ZADD of the popped message to the backup before it is
        handed on, and a ZPOPMIN once it was. The backup can only save a message from a
        cancellation during that ZADD: an answer to the pop still in flight when its task is
        cancelled is lost either way, and once the answer is read nothing awaits before the
        message is in the layer's receive buffer. Without the backup a delivery waits for one
        round trip less, and a message costs Redis one command instead of four.
        """
        popped = await self.connection(index).bzpopmin(channel, timeout=timeout)
        return None if popped is None else popped[1]

    async def _clean_receive_backup(self, index: int, channel: str) -> None:
        """Nothing was backed up (`_brpop_with_clean`)."""

    @staticmethod
    def _log_over_capacity(over_capacity: int, members: int, group: str) -> None:
        if over_capacity:
            logger.info("%s of %s channels over capacity in group %s", over_capacity, members, group)
