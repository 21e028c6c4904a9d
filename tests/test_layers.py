"""notifications/layers.py against a real redis-server of its own (restarted here)."""

import asyncio

from notifications.layers import RedisChannelLayer
from stack.services import RedisServer


async def test_the_first_group_send_after_a_redis_restart_is_delivered():
    """The pooled connection died with Redis: the broadcast must not fail (and be lost) on it."""
    with RedisServer() as redis:
        layer = RedisChannelLayer(hosts=[redis.url])
        channel = await layer.new_channel()
        await layer.group_add("hub", channel)
        await layer.group_send("hub", {"type": "before"})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "before"

        redis.restart()  # empty again: membership gone, every pooled connection closed
        other = RedisChannelLayer(hosts=[redis.url])  # a subscriber that joins afresh
        listener = await other.new_channel()
        await other.group_add("hub", listener)

        await layer.group_send("hub", {"type": "after"})
        assert (await asyncio.wait_for(other.receive(listener), 5))["type"] == "after"
        await layer.close_pools()
        await other.close_pools()
