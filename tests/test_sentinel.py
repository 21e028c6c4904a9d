"""Redis with Sentinel: the settings (REDIS_SENTINELS, REDIS_SENTINEL_MASTER, the passwords), and a
failover drill on real processes: three Daphne instances behind HAProxy, PostgreSQL, a Redis master
with one replica and three sentinels (passwords on both), driven by stack/failover.py.

The drill SIGKILLs the master mid-stream, waits for the promotion, restarts the old master as a
replica of the new one and kills the new master in turn: two failovers, one there and one back.
Every assertion reads what clients saw: the subscribers' frames, every mutation's response, every
/readyz answer.
"""

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from core.redis_config import SentinelMasterPool, from_environ, parse_sentinels
from notifications.publishing.log import seq_from_cursor
from stack.deployment import Stack
from stack.failover import Drill, Report, delivery_bound_s
from stack.sentinel import SentinelRedis
from stack.services import REPO_ROOT

# --- settings, no servers ------------------------------------------------------------------------


def test_without_sentinels_the_single_server_settings_are_what_they_always_were():
    target = from_environ({"REDIS_URL": "redis://cache:6379/0"})
    assert not target.uses_sentinel
    assert target.channel_layer_host() == "redis://cache:6379/0"
    assert target.cache(max_connections=12, pool_timeout=3) == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://cache:6379/0",
        "KEY_PREFIX": "blog",
        "OPTIONS": {
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "pool_class": "core.redis_pools.SharedBlockingPool",
            "max_connections": 12,
            "timeout": 3,
        },
    }
    assert not from_environ({}).configured  # `make run`: the in-memory layer and cache


def test_redis_password_reaches_both_users_of_a_single_server():
    target = from_environ({"REDIS_URL": "redis://cache:6379/0", "REDIS_PASSWORD": "secret"})
    assert target.channel_layer_host() == {"address": "redis://cache:6379/0", "password": "secret"}
    assert target.cache(max_connections=1, pool_timeout=1)["OPTIONS"]["password"] == "secret"


def test_sentinels_take_precedence_and_both_parts_use_the_same_master():
    target = from_environ(
        {
            "REDIS_URL": "redis://ignored:6379/0",
            "REDIS_SENTINELS": "10.0.0.5:26379, 10.0.0.6:26379,[::1]:26380",
            "REDIS_SENTINEL_MASTER": "BlogPush",
            "REDIS_PASSWORD": "redis secret",
            "REDIS_SENTINEL_PASSWORD": "sentinel secret",
            "REDIS_DB": "2",
        }
    )
    sentinels = [["10.0.0.5", 26379], ["10.0.0.6", 26379], ["::1", 26380]]
    host = target.channel_layer_host()
    assert isinstance(host, dict)
    assert host["sentinels"] == sentinels and host["master_name"] == "BlogPush"
    assert host["password"] == "redis secret" and host["db"] == 2
    assert host["sentinel_kwargs"]["password"] == "sentinel secret"
    cache = target.cache(max_connections=7, pool_timeout=2)
    assert cache["LOCATION"] == "sentinel://BlogPush/2"
    assert cache["OPTIONS"]["sentinels"] == sentinels
    assert cache["OPTIONS"]["password"] == "redis secret"
    assert cache["OPTIONS"]["sentinel_kwargs"]["password"] == "sentinel secret"
    # Django builds the pool as its RedisCacheClient does: pool_class.from_url(LOCATION, **OPTIONS).
    options = {k: v for k, v in cache["OPTIONS"].items() if k != "pool_class"}
    pool_class = import_string(cache["OPTIONS"]["pool_class"])
    pool = pool_class.from_url(cache["LOCATION"], **options)
    assert isinstance(pool, SentinelMasterPool) and isinstance(pool, redis.BlockingConnectionPool)
    assert pool.service_name == "BlogPush" and pool.is_master  # master names are case-sensitive
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "redis secret"
    assert pool.max_connections == 7 and pool.timeout == 2
    # Every cache object of the process (one per request under ASGI) gets this same pool.
    assert pool_class.from_url(cache["LOCATION"], **options) is pool


@pytest.mark.parametrize(
    "environ, complaint",
    [
        ({"REDIS_SENTINELS": "10.0.0.5:26379"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "blogpush"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "10.0.0.5", "REDIS_SENTINEL_MASTER": "m"}, "'10.0.0.5' is not host:port"),
        ({"REDIS_SENTINELS": "a:1,b:99999", "REDIS_SENTINEL_MASTER": "m"}, "'b:99999'"),
        ({"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_DB": "one"}, "REDIS_DB"),
    ],
)
def test_a_half_or_malformed_sentinel_setting_refuses_to_start(environ, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint):
        from_environ(environ)


def test_sentinel_addresses_parse_like_operators_write_them():
    assert parse_sentinels("s1:26379,s2:26379,, s3:26379 ") == (("s1", 26379), ("s2", 26379), ("s3", 26379))
    assert parse_sentinels("[2001:db8::1]:26379") == (("2001:db8::1", 26379),)


# --- the drill -----------------------------------------------------------------------------------

LOGIN_LIMIT = 5  # createToken per client address: counted in Redis, across the failover
LOGINS_BEFORE_KILL = 3
LOG_IN = """
mutation LogIn($username: String!, $password: String!) {
  createToken(input: {username: $username, password: $password}) { token }
}
"""
SIGN_UP = """
mutation SignUp($username: String!, $password: String!) {
  createAuthor(input: {username: $username, password: $password}) { author { id } }
}
"""


@pytest.fixture(scope="module")
def sentinel_stack() -> Iterator[Stack]:
    group = SentinelRedis(password=secrets.token_urlsafe(16), sentinel_password=secrets.token_urlsafe(16))
    env = {
        # Every createBlog is counted in Redis (the cache), so the stream goes through the cache
        # during the switch too; the limits themselves are never reached.
        "RATE_LIMIT_MUTATIONS": "1000000/60",
        "RATE_LIMIT_SIGN_UPS": "1000000/60",
        "RATE_LIMIT_LOG_INS": f"{LOGIN_LIMIT}/1000000000",
        "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": "1000",
    }
    with Stack(instances=3, postgres=True, sentinel=group, env=env) as stack:
        yield stack


class LogIns:
    """Log-ins from one client address per round: some before the kill, the rest after the switch."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.username = f"login_{secrets.token_hex(4)}"
        self.password = secrets.token_urlsafe(12)
        self.answers: dict[int, list[tuple[str, list[str], dict[str, Any]]]] = {}

    async def _post(self, query: str, variables: dict[str, Any], ip: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30, trust_env=False) as http:
            reply = await http.post(
                "/graphql/", json={"query": query, "variables": variables}, headers={"X-Forwarded-For": ip}
            )
            return reply.json()

    async def _log_in(self, round_number: int, phase: str) -> None:
        answer = await self._post(
            LOG_IN, {"username": self.username, "password": self.password}, f"198.51.100.{round_number}"
        )
        codes = [str((error.get("extensions") or {}).get("code")) for error in answer.get("errors") or []]
        extensions = (answer.get("errors") or [{}])[0].get("extensions", {})
        self.answers.setdefault(round_number, []).append((phase, codes, extensions))

    async def before_kill(self, round_number: int) -> None:
        if round_number == 1:
            signed_up = await self._post(SIGN_UP, {"username": self.username, "password": self.password}, "192.0.2.1")
            assert not signed_up.get("errors"), signed_up
        for _ in range(LOGINS_BEFORE_KILL):
            await self._log_in(round_number, "before")

    async def after_switch(self, round_number: int) -> None:
        for _ in range(LOGIN_LIMIT - LOGINS_BEFORE_KILL + 1):
            await self._log_in(round_number, "after")


# The first test that asks for the drill pays for it (a stack, two failovers): ~50 s, more on a busy machine.
@pytest.fixture(scope="module")
def drill(sentinel_stack: Stack) -> tuple[Report, LogIns]:
    log_ins = LogIns(sentinel_stack.url)
    runner = Drill(sentinel_stack, subscribers=6, rate=10)
    report = asyncio.run(runner.run(2, before_kill=log_ins.before_kill, after_switch=log_ins.after_switch))
    summary = report.summary()
    artifact = REPO_ROOT / "test-artifacts" / "sentinel-drill.json"
    artifact.write_text(json.dumps({**summary, "sentinel": report.sentinel_events, "hub": report.hub_log}, indent=2))
    print(json.dumps(summary["rounds"], indent=2))
    return report, log_ins


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_subscribers_listen_on_every_instance(drill, sentinel_stack: Stack):
    report, _ = drill
    assert {s.instance for s in report.subscribers} == {instance.name for instance in sentinel_stack.instances}
    assert {s.protocol for s in report.subscribers} == {"graphql-transport-ws", "graphql-ws"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_failovers_happened_there_and_back(drill):
    report, _ = drill
    assert len(report.rounds) == 2
    first, second = report.rounds
    assert first.promoted == second.killed and second.promoted == first.killed
    for failover in report.rounds:
        # The stream really ran through each switch: publications committed while there was no master.
        assert failover.published_during_switch >= 5, failover


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_subscriber_gets_every_publication_once_and_in_order(drill):
    report, _ = drill
    published = report.published_titles
    assert len(published) >= 100
    for subscriber in report.subscribers:
        assert not subscriber.problems, subscriber.problems
        titles = [event.title for event in subscriber.events]
        missing = [title for title in published if title not in titles]
        assert titles == published, f"{subscriber.instance}: missing {missing[:10]}, {len(titles)} received"
        seqs = [seq_from_cursor(event.cursor) for event in subscriber.events]
        assert seqs == sorted(set(seqs))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_live_delivery_resumes_within_the_stated_bound(drill, sentinel_stack: Stack):
    """Kill → the first publication sent after the kill reaches each subscriber."""
    report, _ = drill
    assert sentinel_stack.sentinel is not None
    for failover in report.rounds:
        bound = delivery_bound_s(sentinel_stack.sentinel.timings, failover.failed_elections)
        assert None not in failover.first_delivery_s, failover
        worst = max(s for s in failover.first_delivery_s if s is not None)
        assert worst <= bound, f"{failover.killed} → {failover.promoted}: {worst:.2f}s > {bound:.1f}s"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_mutation_fails_during_the_switch_and_none_is_a_500(drill):
    """Broadcast failures are the log's to repair and a cache outage lets the write through:
    every createBlog committed. Were one to fail, it would have to say so with a code."""
    report, _ = drill
    for response in report.responses:
        assert response.status == 200, response
        assert "INTERNAL_SERVER_ERROR" not in response.codes, response
    assert all(response.published for response in report.responses), [r for r in report.responses if not r.published]
    # The broadcasts that failed during the switches were delivered by the hubs from the log.
    assert all(failover.broadcast_failures > 0 for failover in report.rounds)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_readyz_says_503_while_there_is_no_master_and_200_once_there_is(drill, sentinel_stack: Stack):
    report, _ = drill
    assert sentinel_stack.sentinel is not None
    assert {probe.status for probe in report.readyz} <= {200, 503}
    assert max(probe.seconds for probe in report.readyz) < 3.5  # each check gives up after 3 s
    for probe in report.readyz:
        if probe.status == 503:
            # Redis itself, and this process's hub, which cannot reach it either (until it rejoins).
            assert probe.problems and set(probe.problems) <= {"channel_layer", "subscriptions"}, probe
    for failover in report.rounds:
        bound = delivery_bound_s(sentinel_stack.sentinel.timings, failover.failed_elections)
        for instance in sentinel_stack.instances:
            after = [p for p in report.readyz if p.instance == instance.name and p.at >= failover.killed_at]
            assert any("channel_layer" in p.problems for p in after), f"{instance.name} never missed the master"
            back = next(p for p in after if p.status == 200)
            assert back.at - failover.killed_at <= bound, (instance.name, back)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rate_limits_count_across_the_switch(drill):
    """LOGIN_LIMIT log-ins per address: three before the kill are remembered by the new master."""
    _, log_ins = drill
    for round_number, answers in log_ins.answers.items():
        codes = [(phase, codes) for phase, codes, _ in answers]
        allowed_after = LOGIN_LIMIT - LOGINS_BEFORE_KILL
        assert codes == [("before", [])] * LOGINS_BEFORE_KILL + [("after", [])] * allowed_after + [
            ("after", ["RATE_LIMITED"])
        ], round_number
        refused = answers[-1][2]
        assert refused["limit"] == "createToken" and refused["retryAfter"] > 0
