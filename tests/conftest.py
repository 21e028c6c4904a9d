"""Fixtures: real Redis and Daphne processes on free loopback ports, stopped by whoever started them."""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.services import REPO_ROOT, DaphneInstance, RedisServer, migrate
from tests.live import LiveApi

# Pages, browser and observability fixtures (web_server, restartable_server, browser).
pytest_plugins = ["tests.fixtures_web"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Production-like settings shared by the live instances and by `manage.py` subprocesses."""
    database = tmp_path_factory.mktemp("live-db") / "db.sqlite3"
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_server.url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "GRAPHQL_WS_PING_SECONDS": "3",
    }
    migrate(env)
    return env


@pytest.fixture(scope="session")
def daphne_servers(live_env: dict[str, str]) -> Iterator[list[DaphneInstance]]:
    """Three Daphne processes sharing one database and one Redis."""
    servers = [DaphneInstance(f"live-{i}", live_env) for i in range(1, 4)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def daphne_server(daphne_servers: list[DaphneInstance]) -> DaphneInstance:
    return daphne_servers[0]


@pytest.fixture(scope="session")
def api(daphne_server: DaphneInstance) -> LiveApi:
    return LiveApi(daphne_server.url)


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a management command against the live database, as an operator would."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture(scope="session")
def run_manage(live_env: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda *args, stdin=None: manage(live_env, *args, stdin=stdin)


def pytest_configure(config: pytest.Config) -> None:
    Path(REPO_ROOT / "test-artifacts").mkdir(exist_ok=True)


@pytest.fixture(autouse=True)
def fast_password_hashing(request: pytest.FixtureRequest) -> None:
    """In-process tests hash many passwords; live servers keep the real hasher."""
    if "settings" in request.fixturenames or request.node.get_closest_marker("django_db"):
        settings = request.getfixturevalue("settings")
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
