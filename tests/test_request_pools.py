"""No per-request setup: a process serves a thousand requests on the Redis connections, threads and
database connections it already had, and the numbers stay bounded by its settings.

Observed from outside: Redis's CLIENT LIST (each connection has an id Redis never reuses), the
process's threads in /proc (each thread a kernel task id, never reused while the process lives)
and its open files on the SQLite database.
"""

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from stack.services import DaphneInstance, RedisServer
from tests.live import CREATE_BLOG, LiveApi, assert_no_errors, error_codes

HTTP_THREADS = 4
HEALTH_THREADS = 2
CONCURRENCY = 12  # more clients than request threads: the pool is used up and waited for
REQUESTS = 1000


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:  # its CLIENT LIST holds this instance's connections only
        yield server


@pytest.fixture(scope="module")
def instance(live_env: dict[str, str], own_redis: RedisServer) -> Iterator[DaphneInstance]:
    env = {
        **live_env,
        "REDIS_URL": own_redis.url,
        "HTTP_THREADS": str(HTTP_THREADS),
        "HEALTH_THREADS": str(HEALTH_THREADS),
        # Counted in Redis (a reserve of attempts at a time), never refused.
        "RATE_LIMIT_MUTATIONS": "1000000/60",
    }
    with DaphneInstance("pools", env) as server:
        yield server


def redis_client_ids(redis: RedisServer) -> set[int]:
    client = redis.client()
    try:
        me = client.client_id()
        return {int(entry["id"]) for entry in client.client_list() if int(entry["id"]) != me}
    finally:
        client.close()


def thread_ids(pid: int) -> set[int]:
    return {int(task) for task in os.listdir(f"/proc/{pid}/task")}


def database_files(pid: int, database: Path) -> int:
    """Open descriptors on the SQLite database file (one per open connection)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(database):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


def traffic(url: str, token: str, count: int) -> list[int]:
    """`count` requests from CONCURRENCY clients: mutations (rate limit counted), queries, probes."""

    def one(index: int, client: httpx.Client) -> int:
        kind = index % 4
        if kind == 0:
            response = client.post(
                "/graphql/",
                json={"query": CREATE_BLOG, "variables": {"title": f"pooled {index}", "content": "x"}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert_no_errors(response.json())
        elif kind == 1:
            response = client.post("/graphql/", json={"query": "{ latestCursor }"})
        elif kind == 2:
            response = client.get("/readyz")
        else:
            response = client.get("/healthz")
        return response.status_code

    def worker(offset: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            return [one(index, client) for index in range(offset, count, CONCURRENCY)]

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return [status for statuses in pool.map(worker, range(CONCURRENCY)) for status in statuses]


@pytest.mark.timeout(300)
def test_a_thousand_requests_open_no_connection_and_start_no_thread(
    instance: DaphneInstance, own_redis: RedisServer, live_env: dict[str, str]
):
    pid = instance.pid
    assert pid is not None
    database = Path(live_env["DATABASE_URL"].removeprefix("sqlite:///"))
    _, token = LiveApi(instance.url).sign_up()
    warm = traffic(instance.url, token, 400)  # every pool grows to what this load needs
    assert set(warm) == {200}, warm
    redis_before, threads_before = redis_client_ids(own_redis), thread_ids(pid)

    seen: set[int] = set()
    stop = threading.Event()

    def sample() -> None:  # a thread per request lives for milliseconds: look often
        while not stop.is_set():
            seen.update(thread_ids(pid))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        statuses = traffic(instance.url, token, REQUESTS)
    finally:
        stop.set()
        sampler.join()

    assert set(statuses) == {200}
    redis_after, threads_after = redis_client_ids(own_redis), thread_ids(pid)
    # At most the odd connection where the channel layer's pool reaches its high-water mark in another
    # interleaving of concurrent broadcasts;
    # a client per request would be one for every broadcast and every rate-limit script, hundreds.
    assert len(redis_after - redis_before) <= 4, f"new Redis connections: {sorted(redis_after - redis_before)}"
    assert threads_after == threads_before == seen, f"{len(seen - threads_before)} threads started meanwhile"
    # Bounded by the settings, not by the traffic: the cache's pool, and the channel layer's pool
    # that request threads broadcast through, each hold at most one connection per request
    # thread; the channel layer's hub needs a few of its own.
    assert len(redis_after) <= 2 * HTTP_THREADS + HEALTH_THREADS + 4, len(redis_after)
    assert len(threads_after) <= HTTP_THREADS + HEALTH_THREADS + 4, len(threads_after)
    assert database_files(pid, database) <= HTTP_THREADS + HEALTH_THREADS + 2


MUTATION_LIMIT = 3


@pytest.mark.timeout(120)
def test_the_shared_cache_pool_counts_again_after_redis_restarts(live_env: dict[str, str]):
    """The pooled connections die with Redis; the next requests reconnect and are counted again.

    Redis restarts empty (no persistence here): the limit starts over, and is enforced again.
    """
    with RedisServer() as redis:
        env = {**live_env, "REDIS_URL": redis.url, "RATE_LIMIT_MUTATIONS": f"{MUTATION_LIMIT}/1000000000"}
        with DaphneInstance("pools-restart", env) as server:
            api = LiveApi(server.url)
            _, token = api.sign_up()

            def codes() -> list[list[str]]:
                return [
                    error_codes(api.post(CREATE_BLOG, {"title": f"t{i}", "content": "x"}, token))
                    for i in range(MUTATION_LIMIT + 1)
                ]

            assert codes() == [[]] * MUTATION_LIMIT + [["RATE_LIMITED"]]
            redis.restart()
            assert codes() == [[]] * MUTATION_LIMIT + [["RATE_LIMITED"]]
