"""channels-redis, configured so that subscribers are not silently lost.

- redis-py 8 gives sockets a 5 s read timeout, the same as channels-redis's BRPOP wait, so an
  idle receiver dies with "Timeout reading from ..." (channels-redis #422). Reads here wait
  longer than BRPOP does.
- redis-py 8's asyncio pool raises MaxConnectionsError past 100 connections; during a burst of
  connects channels-redis's group_add then fails in a task nobody awaits. A blocking pool waits
  for a free connection instead.
- redis-py's pooled connections do not retry by default, so after a Redis restart every idle
  pooled connection fails its next command once ("Connection closed by server"); a failing
  group_add means a subscriber that never joins its group, silently. A connection error is
  retried on a fresh connection instead. (A command whose reply, not request, was lost would
  run twice; that needs the connection to drop mid-command, unlike a restart between commands.)
"""

from typing import Any

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


class RedisChannelLayer(BaseRedisChannelLayer):
    max_connections = 200
    pool_timeout = 60.0

    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        address = host.pop("address")
        host.setdefault("socket_timeout", self.brpop_timeout + 10)
        host.setdefault("socket_connect_timeout", 5)
        host.setdefault("socket_keepalive", True)
        host.setdefault("health_check_interval", 15)
        host.setdefault("max_connections", self.max_connections)
        host.setdefault("timeout", self.pool_timeout)
        host.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), 2, (RedisConnectionError,)))
        return aioredis.BlockingConnectionPool.from_url(address, **host)
