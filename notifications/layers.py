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
"""

from typing import Any

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis import asyncio as aioredis
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
        return aioredis.BlockingConnectionPool.from_url(address, **host)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Once more on a fresh connection if the pooled one died with Redis.

        A retry after a failure halfway may deliver twice; hubs drop what they already have
        by sequence number. Redis still down fails again, and the hubs catch up from the log
        when they reconnect.
        """
        try:
            await super().group_send(group, message)
        except RedisConnectionError:
            await super().group_send(group, message)
