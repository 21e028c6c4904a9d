"""Fixtures: real Redis and Daphne processes on free loopback ports, stopped by whoever started them."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import forkserver
from stack.services import REPO_ROOT, DaphneInstance, RedisServer, migrate, production_env, running
from tests.live import DjangoShell, LiveApi

# Pages, browser and observability fixtures (web_server, restartable_server, browser); the PostgreSQL
# stack the end-to-end modules share (pg_stack); the Docker engine and the run's image (compose tests);
# how `make test` spreads the modules over workers.
# Every instance a test starts is a fork of one process per worker that has imported the libraries
# an instance needs (stack/forkserver.py): a start costs a fraction of a fresh interpreter's. The
# bench and the other processes the tests start inherit the setting.
os.environ.setdefault(forkserver.ENABLED, "1")

pytest_plugins = ["tests.fixtures_web", "tests.fixtures_stack", "tests.fixtures_docker", "tests.scheduling"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def live_env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Production-like settings shared by the live instances and by `manage.py` subprocesses."""
    database = tmp_path_factory.mktemp("live-db") / "db.sqlite3"
    env = {
        **production_env(f"sqlite:///{database}", redis_server.url),
        "DJANGO_SECURE_COOKIES": "0",
        "GRAPHQL_WS_PING_SECONDS": "3",
        # The whole suite signs up from 127.0.0.1: the shared servers count, but never refuse.
        # tests/test_security.py runs its own instances with small limits.
        "RATE_LIMIT_MUTATIONS": "1000000/60",
        "RATE_LIMIT_SIGN_UPS": "1000000/60",
        "RATE_LIMIT_LOG_INS": "1000000/60",
        "RATE_LIMIT_LOGIN_FAILURES": "1000000/60",
        "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": "1000000",
    }
    migrate(env)
    return env


@pytest.fixture(scope="session")
def daphne_servers(live_env: dict[str, str]) -> Iterator[list[DaphneInstance]]:
    """Three Daphne processes sharing one database and one Redis."""
    with running([DaphneInstance(f"live-{i}", live_env) for i in range(1, 4)]) as servers:
        yield servers


# Small limits for the abuse tests. Rate windows are long enough never to roll over mid-test;
# tests tell clients apart by X-Forwarded-For, which these instances believe from 127.0.0.1.
STRICT_LIMITS = {
    "RATE_LIMIT_MUTATIONS": "3/1000000000",
    "RATE_LIMIT_SIGN_UPS": "2/1000000000",
    "RATE_LIMIT_LOG_INS": "4/1000000000",
    "RATE_LIMIT_LOGIN_FAILURES": "3/1000000000",
    "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": "3",
    "GRAPHQL_WS_CONNECTION_INIT_TIMEOUT": "1",
    "GRAPHQL_INTROSPECTION": "1",
    "TRUSTED_PROXIES": "127.0.0.1",
}


@pytest.fixture(scope="session")
def strict_servers(live_env: dict[str, str], redis_server: RedisServer) -> Iterator[list[DaphneInstance]]:
    """Two instances with small limits, sharing Redis database 1: their own counters and events."""
    env = {**live_env, **STRICT_LIMITS, "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/1"}
    with running([DaphneInstance(f"strict-{i}", env) for i in (1, 2)]) as servers:
        yield servers


@pytest.fixture(scope="session")
def daphne_server(daphne_servers: list[DaphneInstance]) -> DaphneInstance:
    return daphne_servers[0]


@pytest.fixture(scope="session")
def api(daphne_server: DaphneInstance) -> LiveApi:
    return LiveApi(daphne_server.url)


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a management command against the live database, as an operator would."""
    done = forkserver.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env={**os.environ, **env}, input=stdin, timeout=60
    )
    done.check_returncode()
    return done


@pytest.fixture(scope="session")
def run_manage(live_env: dict[str, str]):
    return lambda *args, stdin=None: manage(live_env, *args, stdin=stdin)


@pytest.fixture(scope="session")
def django_shell(live_env: dict[str, str]) -> Iterator[DjangoShell]:
    """`manage.py shell -c` on the live database, one process for the whole session."""
    shell = DjangoShell(live_env)
    try:
        yield shell
    finally:
        shell.close()


def pytest_configure(config: pytest.Config) -> None:
    Path(REPO_ROOT / "test-artifacts").mkdir(exist_ok=True)


@pytest.fixture(autouse=True)
def fresh_rate_limits(request: pytest.FixtureRequest) -> None:
    """In-process tests share one memory cache: each starts with no rate-limit counts."""
    if "settings" in request.fixturenames or request.node.get_closest_marker("django_db"):
        from django.core.cache import caches
        from django.core.cache.backends.locmem import LocMemCache

        if isinstance(caches["default"], LocMemCache):  # never flush a developer's Redis
            caches["default"].clear()


@pytest.fixture(autouse=True)
def migration_rows(request: pytest.FixtureRequest) -> None:
    """The rows the migrations wrote, for every in-process database test.

    A transactional test empties every table when it ends, and the next test on the same worker
    would find no publication counter (publishing refuses to number without it, as it should in
    production). Django's own runner puts transactional tests last; with several modules holding
    one per worker, only this makes the order irrelevant.
    """
    asked = [name for name in ("transactional_db", "db") if name in request.fixturenames]
    if asked:
        request.getfixturevalue(asked[0])  # set up before this fixture, as the marker's is
    elif not request.node.get_closest_marker("django_db"):
        return
    from notifications.models import PublicationCounter

    PublicationCounter.objects.get_or_create(pk=1)


OPEN_SESSION = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from api.models import Author
author = Author.objects.get(username={username!r})
session = SessionStore()
session.update({{SESSION_KEY: str(author.pk), BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                HASH_SESSION_KEY: author.get_session_auth_hash()}})
session.create()
print(session.session_key)
"""


@pytest.fixture(scope="session")
def browser_session(api: LiveApi, django_shell: DjangoShell) -> tuple[str, str]:
    """(username, session key) of an author signed in the way a browser is: with a session cookie."""
    username, _ = api.sign_up()
    return username, django_shell.run(OPEN_SESSION.format(username=username)).split()[-1]
