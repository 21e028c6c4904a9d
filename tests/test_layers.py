"""notifications/runtime/layers.py against real Redis of its own: one redis-server (restarted here), and a
master with a replica and three sentinels (failed over here). The layer's three fixes must hold
in both of channels-redis's host forms: the URL and the Sentinel form."""

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest
import redis
from django.utils.module_loading import import_string
from redis.exceptions import ConnectionError as RedisConnectionError

from core.redis_config import SENTINEL_SOCKET_TIMEOUT, from_environ
from notifications.runtime.layers import (
    REMEMBERED_MEMBERS_AT_MOST,
    BlockingSentinelConnectionPool,
    RedisChannelLayer,
    ping,
)
from stack.sentinel import SentinelRedis
from stack.services import RedisServer


@pytest.fixture(scope="module")
def sentinel_redis() -> Iterator[SentinelRedis]:
    with SentinelRedis(password=secrets.token_hex(8), sentinel_password=secrets.token_hex(8)) as group:
        yield group


@pytest.fixture(scope="module")
def single_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def sentinel_host(group: SentinelRedis, **extra) -> dict:
    """The hosts entry the settings build from REDIS_SENTINELS & co. (core/redis_config.py)."""
    host = from_environ(group.env()).channel_layer_host()
    assert isinstance(host, dict)
    return {**host, **extra}


@pytest.fixture(params=["url", "sentinel"])
def host(request, single_redis: RedisServer, sentinel_redis: SentinelRedis):
    """A channel-layer host entry of either form; `extra` settings are merged in by the test."""
    if request.param == "url":
        return lambda **extra: {"address": single_redis.url, **extra}
    return lambda **extra: sentinel_host(sentinel_redis, **extra)


async def group_send(layer: RedisChannelLayer, sender: str, group: str, message: dict) -> None:
    """A send from the event loop (`loop`) or from a thread on the blocking client (`thread`: what
    a request's broadcast uses)."""
    if sender == "thread":
        await asyncio.to_thread(layer.group_send_blocking, group, message, timeout=1)
    else:
        await layer.group_send(group, message)


@pytest.fixture(params=["loop", "thread"])
def sender(request) -> str:
    return request.param


async def test_the_first_group_send_after_a_redis_restart_is_delivered(sender: str):
    """The pooled connection died with Redis: the broadcast must not fail (and be lost) on it."""
    with RedisServer() as server:
        layer = RedisChannelLayer(hosts=[server.url])
        channel = await layer.new_channel()
        await layer.group_add("hub", channel)
        await group_send(layer, sender, "hub", {"type": "before"})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "before"

        server.restart()  # empty again: membership gone, every pooled connection closed
        other = RedisChannelLayer(hosts=[server.url])  # a subscriber that joins afresh
        listener = await other.new_channel()
        await other.group_add("hub", listener)

        await group_send(layer, sender, "hub", {"type": "after"})
        assert (await asyncio.wait_for(other.receive(listener), 5))["type"] == "after"
        await layer.close_pools()
        await other.close_pools()


async def test_a_group_send_reaches_exactly_the_members_of_the_moment_in_one_round_trip(host, sender: str):
    """The layer sends on the members it remembers from its last send, checked by Redis in the same
    script: a member that joined since gets the message, one that left does not, and another
    sender's memory is its own. Once the members are known, a send is one command. The same from
    the event loop and from a thread."""
    sender_layer, hubs = RedisChannelLayer(hosts=[host()]), RedisChannelLayer(hosts=[host()])
    other_sender = RedisChannelLayer(hosts=[host()])
    group = f"moment-{secrets.token_hex(4)}"
    try:
        first = await hubs.new_channel()
        await hubs.group_add(group, first)
        await group_send(sender_layer, sender, group, {"type": "one"})
        assert (await asyncio.wait_for(hubs.receive(first), 5))["type"] == "one"

        second = await hubs.new_channel()
        await hubs.group_add(group, second)  # joined since the sender's last send
        await group_send(sender_layer, sender, group, {"type": "two"})
        got = [(await asyncio.wait_for(hubs.receive(channel), 5))["type"] for channel in (first, second)]
        assert got == ["two", "two"]

        await hubs.group_discard(group, first)  # left since
        await group_send(sender_layer, sender, group, {"type": "three"})
        await group_send(other_sender, sender, group, {"type": "four"})  # never sent to this group before
        assert [(await asyncio.wait_for(hubs.receive(second), 5))["type"] for _ in range(2)] == ["three", "four"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(hubs.receive(first), 0.5)

        async def steady() -> None:
            for n in range(5):
                await group_send(sender_layer, sender, group, {"type": "steady", "n": n})

        assert await _commands_sent(sender_layer, steady) == ["EVAL"] * 5
        assert [(await asyncio.wait_for(hubs.receive(second), 5))["n"] for _ in range(5)] == list(range(5))
    finally:
        for layer in (sender_layer, hubs, other_sender):
            await layer.close_pools()


async def _commands_sent(layer: RedisChannelLayer, send) -> list[str]:
    """The commands clients sent Redis (not what scripts ran there, nor connecting) while `send` ran."""
    sent: list[str] = []
    # A master under Sentinel also hears the sentinels' own links (hello PUBLISHes, INFO), named so.
    sentinels = {
        client["addr"] for client in await layer.connection(0).client_list() if client["name"].startswith("sentinel-")
    }
    async with layer.connection(0).monitor() as monitor:
        await send()
        await layer.connection(0).echo("sent")
        while not sent or sent[-1] != "ECHO":
            command = await asyncio.wait_for(monitor.next_command(), 5)
            name = command["command"].split()[0].upper()
            address = f"{command['client_address']}:{command['client_port']}"
            if command["client_type"] == "lua" or address in sentinels:
                continue
            if name not in {"HELLO", "AUTH", "CLIENT", "SELECT", "PING"}:
                sent.append(name)
    return sent[:-1]


async def test_a_received_message_costs_redis_one_pop(single_redis: RedisServer):
    """No backup queue around the pop (layers.py): each message is one BZPOPMIN, nothing more,
    and every message still arrives once, in order."""
    sender, receiver = RedisChannelLayer(hosts=[single_redis.url]), RedisChannelLayer(hosts=[single_redis.url])
    try:
        channel = await receiver.new_channel()
        for n in range(3):
            await sender.send(channel, {"type": "t", "n": n})
        received: list[int] = []

        async def receive_three() -> None:
            for _ in range(3):
                received.append((await asyncio.wait_for(receiver.receive(channel), 5))["n"])

        assert await _commands_sent(receiver, receive_three) == ["BZPOPMIN"] * 3
        assert received == [0, 1, 2]
        await sender.send(channel, {"type": "t", "n": 3})
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["n"] == 3
    finally:
        for layer in (sender, receiver):
            await layer.close_pools()


async def test_a_large_group_has_its_members_read_first_and_once_it_shrinks_is_sent_in_one_round_trip(
    single_redis: RedisServer,
):
    sender, hubs = RedisChannelLayer(hosts=[single_redis.url]), RedisChannelLayer(hosts=[single_redis.url])
    group = f"large-{secrets.token_hex(4)}"
    channels = [f"large.member{n}" for n in range(REMEMBERED_MEMBERS_AT_MOST + 1)]
    try:
        for channel in channels:
            await hubs.group_add(group, channel)
        await sender.group_send(group, {"type": "first"})
        sent = await _commands_sent(sender, lambda: sender.group_send(group, {"type": "second"}))
        assert sent.index("ZRANGE") < sent.index("EVAL") and sent.count("EVAL") == 1, sent  # no script tried first
        for channel in channels:
            got = [(await asyncio.wait_for(hubs.receive(channel), 5))["type"] for _ in range(2)]
            assert got == ["first", "second"], channel

        for channel in channels[2:]:
            await hubs.group_discard(group, channel)
        await sender.group_send(group, {"type": "third"})  # read the slow way, remembered from here
        assert await _commands_sent(sender, lambda: sender.group_send(group, {"type": "fourth"})) == ["EVAL"]
        for channel in channels[:2]:
            got = [(await asyncio.wait_for(hubs.receive(channel), 5))["type"] for _ in range(2)]
            assert got == ["third", "fourth"], channel
    finally:
        for layer in (sender, hubs):
            await layer.close_pools()


async def test_the_sentinel_form_uses_a_blocking_pool_on_the_master(sentinel_redis: SentinelRedis):
    layer = RedisChannelLayer(hosts=[sentinel_host(sentinel_redis)])
    try:
        await layer.connection(0).ping()
        pool = layer.connection(0).connection_pool
        assert isinstance(pool, BlockingSentinelConnectionPool)
        assert pool.master_address == ("127.0.0.1", sentinel_redis.master().port)
    finally:
        await layer.close_pools()


async def test_an_idle_receiver_outlives_brpop_in_both_forms(host):
    """Nothing arrives for longer than BRPOP's 5 s wait: the receiver must still be there after it."""
    layer = RedisChannelLayer(hosts=[host()])
    sender = RedisChannelLayer(hosts=[host()])
    try:
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(layer.brpop_timeout + 1.5)
        assert not waiting.done(), waiting  # a read timeout would have ended it with an error
        await sender.send(channel, {"type": "late"})
        assert (await asyncio.wait_for(waiting, 5))["type"] == "late"
    finally:
        await layer.close_pools()
        await sender.close_pools()


async def test_a_burst_past_the_pool_size_waits_instead_of_failing_in_both_forms(host):
    """More concurrent commands than connections: they queue for one (no MaxConnectionsError)."""
    layer = RedisChannelLayer(hosts=[host(max_connections=2)])
    try:
        channels = [await layer.new_channel() for _ in range(30)]
        await asyncio.gather(*(layer.group_add("burst", channel) for channel in channels))
        await layer.group_send("burst", {"type": "all"})
        received = await asyncio.wait_for(asyncio.gather(*(layer.receive(c) for c in channels)), 10)
        assert [message["type"] for message in received] == ["all"] * len(channels)
    finally:
        await layer.close_pools()


@pytest.mark.slow
async def test_after_a_failover_receivers_notice_and_broadcasts_reach_the_new_master(sentinel_redis: SentinelRedis):
    """The master is SIGKILLed. A receiver blocked on it must fail at once (that is how the hub knows
    to rejoin and read the log), not wait out its read timeout; once the sentinels have promoted
    the replica, the first broadcast from a pool full of dead connections reaches a receiver that
    joined on the new master, and the old receiver's layer works again."""
    sentinel_redis.wait_vote_cooldown()
    publisher = RedisChannelLayer(hosts=[sentinel_host(sentinel_redis)])
    hub = RedisChannelLayer(hosts=[sentinel_host(sentinel_redis)])
    late = RedisChannelLayer(hosts=[sentinel_host(sentinel_redis)])
    old = sentinel_redis.master()
    try:
        channel = await hub.new_channel()
        await hub.group_add("hub", channel)
        await publisher.group_send("hub", {"type": "before"})
        assert (await asyncio.wait_for(hub.receive(channel), 5))["type"] == "before"

        blocked = asyncio.create_task(hub.receive(channel))
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        old.kill()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(blocked, 5)
        assert time.monotonic() - killed_at < 2, "the receiver waited for its read timeout instead of failing"

        new, _ = await asyncio.to_thread(sentinel_redis.wait_for_failover, old)
        assert new is not old
        listener = await late.new_channel()
        await late.group_add("hub", listener)
        await publisher.group_send("hub", {"type": "after"})
        assert (await asyncio.wait_for(late.receive(listener), 5))["type"] == "after"

        await hub.group_add("hub", channel)  # what the hub does after a failure: rejoin, then read
        await publisher.group_send("hub", {"type": "again"})
        # The replica had the membership (replicated long before the kill), so "after" is there too.
        received = [(await asyncio.wait_for(hub.receive(channel), 5))["type"] for _ in range(2)]
        assert received == ["after", "again"]
    finally:
        for layer in (publisher, hub, late):
            await layer.close_pools()
        await asyncio.to_thread(sentinel_redis.rejoin, old)


@pytest.mark.slow
async def test_after_a_switchover_the_first_broadcast_leaves_the_demoted_master(sentinel_redis: SentinelRedis):
    """A planned failover (SENTINEL FAILOVER) keeps the old master running, now a read-only replica.
    Sentinel disconnects its clients when it demotes it (CLIENT KILL TYPE normal), so pooled
    connections reconnect and ask the sentinels again; a write that still reached it would fail
    with READONLY, which redis-py turns into a ConnectionError, and the layer sends it once more."""
    publisher = RedisChannelLayer(hosts=[sentinel_host(sentinel_redis)])
    receiver = RedisChannelLayer(hosts=[sentinel_host(sentinel_redis)])
    try:
        await publisher.group_send("switch", {"type": "warm"})  # a pooled connection to today's master
        old = sentinel_redis.master()
        # No vote cooldown to wait out: SENTINEL FAILOVER needs no election.
        new, _ = await asyncio.to_thread(sentinel_redis.switchover)
        assert new is not old and old.running
        channel = await receiver.new_channel()
        await receiver.group_add("switch", channel)
        await publisher.group_send("switch", {"type": "after"})
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["type"] == "after"
    finally:
        await publisher.close_pools()
        await receiver.close_pools()


async def test_a_hung_sentinel_costs_one_timeout_before_the_next_is_asked(sentinel_redis: SentinelRedis):
    """The first sentinel listed keeps its socket but answers nothing (SIGSTOP: a frozen machine).
    Finding the master, as every new connection does, must move on to the next sentinel after one
    socket timeout, for the channel layer and for the cache (rate limits) alike."""
    target = from_environ(sentinel_redis.env())
    cache = target.cache(max_connections=2, pool_timeout=1)
    options = dict(cache["OPTIONS"])
    pool = import_string(options.pop("pool_class")).from_url(cache["LOCATION"], **options)
    layer = RedisChannelLayer(hosts=[sentinel_host(sentinel_redis)])
    hung = sentinel_redis.sentinels[0]
    assert f":{hung.port}," in sentinel_redis.env()["REDIS_SENTINELS"] + ",", "the hung one is asked first"
    hung.freeze()
    try:
        began = time.monotonic()
        await ping(layer)
        layer_seconds = time.monotonic() - began
        began = time.monotonic()
        await asyncio.to_thread(redis.Redis(connection_pool=pool).ping)
        cache_seconds = time.monotonic() - began
    finally:
        hung.thaw()
        await layer.close_pools()
        pool.disconnect()
    bound = SENTINEL_SOCKET_TIMEOUT + 1.5  # without the fix: about fifteen seconds
    assert layer_seconds < bound and cache_seconds < bound, (layer_seconds, cache_seconds)
