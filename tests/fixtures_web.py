"""Fixtures for what people see and operators read: a production-like instance that serves its
collected static files, one that tests may kill and restart, and a real headless Chromium.
"""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from stack.services import REPO_ROOT, DaphneInstance

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; scripts/ensure-system-packages.sh installs it
# Flags without which headless Chromium here opens background connections that get refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

GRAPHIQL_SUBSCRIPTION = """subscription Watch($author: String, $after: String) {
  blogPublished(author: $author, after: $after) { cursor blog { title author { username } } }
}"""
PUSH_DEADLINE_MS = 1000  # the promise: a new blog is on the page within a second


@pytest.fixture(scope="session", autouse=True)
def private_tempdir() -> Iterator[Path]:
    """Service temp dirs (logs included) in a folder of this run's own.

    Other test runs on a shared machine may clean up /tmp/stack-* while this one still reads
    its servers' logs; stack.services makes its dirs with tempfile, so they follow this.
    """
    private = Path(tempfile.mkdtemp(prefix="blogpush-tests-"))
    private.chmod(0o755)  # PostgreSQL runs as `postgres` when we are root and must traverse it
    previous, tempfile.tempdir = tempfile.tempdir, str(private)
    try:
        yield private
    finally:
        tempfile.tempdir = previous
        if not os.environ.get("STACK_KEEP_TMP"):
            shutil.rmtree(private, ignore_errors=True)


@pytest.fixture(scope="session")
def web_env(live_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """live_env plus what production adds: collected static files and a metrics token."""
    static_root = tmp_path_factory.mktemp("static-root")
    env = {
        **live_env,
        "DJANGO_STATIC_ROOT": str(static_root),
        "METRICS_TOKEN": secrets.token_urlsafe(24),
        # Off by default in production settings; an operator enables them for a GraphiQL users reach.
        "GRAPHQL_GRAPHIQL": "1",
        "GRAPHQL_INTROSPECTION": "1",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        check=True,
        timeout=120,
    )
    return env


@pytest.fixture(scope="session")
def web_server(web_env: dict[str, str]) -> Iterator[DaphneInstance]:
    """A DEBUG-off instance serving pages, GraphiQL and /metrics, on the shared database and Redis."""
    with DaphneInstance("web-1", web_env) as server:
        yield server


@pytest.fixture
def restartable_server(web_env: dict[str, str]) -> Iterator[DaphneInstance]:
    """An instance of this test's own, to kill and restart on the same port."""
    with DaphneInstance("web-restartable", web_env) as server:
        yield server


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[BrowserContext]:
    """Headless Debian Chromium driven by Playwright, with a fresh profile."""
    assert CHROMIUM.exists(), "chromium is missing: run scripts/ensure-system-packages.sh as root"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            await context.close()
    shutil.rmtree(profile, ignore_errors=True)


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


async def open_page(browser: BrowserContext, url: str) -> tuple[Page, list[str]]:
    """A new tab at `url`, recording every URL the page asks for (HTTP and websocket)."""
    page = await browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("websocket", lambda websocket: requested.append(websocket.url))
    await page.goto(url)
    return page, requested
