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

`ping` asks Redis itself whether the layer can be reached (for /readyz); channels-redis offers no
public way to, so it uses the layer's `connection(index)`. That and the `create_pool` override are
channels-redis internals, used here only and checked by tests/test_internals.py.

All three hold in both of the host forms channels-redis knows: a URL (`{"address": ...}`), and
its Sentinel form (`{"sentinels": [...], "master_name": ..., "sentinel_kwargs": ...}`), where
every connection asks the sentinels for the master's address when it (re)connects, so after a
failover the next command reaches the new master.
"""

from typing import Any

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis import asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError


class BlockingSentinelConnectionPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """channels-redis's Sentinel pool that waits for a free connection, as the URL form's does.

    SentinelConnectionPool only chooses where a connection goes (the master the sentinels name);
    BlockingConnectionPool only decides what happens when all are in use. Neither overrides what
    the other does, so the two compose by inheritance alone.
    """


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

    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        host.setdefault("socket_timeout", self.brpop_timeout + 10)
        # A dead host does not refuse a connection, it stays silent (a killed container, a lost
        # machine). Redis on the same network accepts within milliseconds, so a second means
        # dead; a broadcast after a commit waits at most this long per try, not five seconds.
        host.setdefault("socket_connect_timeout", 1)
        host.setdefault("socket_keepalive", True)
        host.setdefault("health_check_interval", 15)
        host.setdefault("max_connections", self.max_connections)
        host.setdefault("timeout", self.pool_timeout)
        if "master_name" in host:  # as channels_redis.utils.create_pool reads the Sentinel form
            sentinels = Sentinel(host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None))
            return BlockingSentinelConnectionPool(host.pop("master_name"), sentinels, **host)
        return aioredis.BlockingConnectionPool.from_url(host.pop("address"), **host)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Once more on a fresh connection if the pooled one died with Redis.

        A retry after a failure halfway may deliver twice; hubs drop what they already have
        by sequence number. Redis still down fails again, and the hubs catch up from the log
        when they reconnect. Under Sentinel the second try reconnects, and a reconnect asks the
        sentinels which server is the master now (a killed or demoted one is left behind).
        """
        try:
            await super().group_send(group, message)
        except RedisConnectionError:
            await super().group_send(group, message)
