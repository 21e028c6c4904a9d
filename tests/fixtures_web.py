"""Fixtures for what people see and operators read: a production-like instance that serves its
collected static files, one that tests may kill and restart, and a real headless Chromium.
"""

import asyncio
import functools
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, Request, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from stack.services import REPO_ROOT, DaphneInstance, free_port, running, shared_static_root

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
GRAPHIQL_READY = "document.querySelector('.graphiql-execute-button') !== null"

# Chromium aborts the requests in flight when the machine's network interfaces change, as Docker's
# do in bursts while the compose tests run beside these (a build step, a replica, a network): a page
# that lost a request so is loaded again, after a pause that doubles each time, until one burst is over.
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
LOAD_DEADLINE = 120  # seconds of loading again
FIRST_PAUSE, MAX_PAUSE = 0.5, 8.0  # seconds
READY_TIMEOUT = 30  # seconds for a loaded page to be ready


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
def web_env(live_env: dict[str, str]) -> dict[str, str]:
    """live_env plus what production adds: collected static files and a metrics token."""
    return {
        **live_env,
        "DJANGO_STATIC_ROOT": str(shared_static_root(live_env)),
        "METRICS_TOKEN": secrets.token_urlsafe(24),
        # Off by default in production settings; an operator enables them for a GraphiQL users reach.
        "GRAPHQL_GRAPHIQL": "1",
        "GRAPHQL_INTROSPECTION": "1",
    }


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


async def open_page(browser: BrowserContext, url: str, ready: str = "true") -> tuple[Page, list[str]]:
    """A new tab at `url` once the JS expression `ready` holds there, recording every URL the
    page asks for (HTTP and websocket)."""
    page = await browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("websocket", lambda websocket: requested.append(websocket.url))
    await load(page, url, ready)
    return page, requested


async def load(page: Page, url: str, ready: str = "true") -> None:
    """Go to `url` until it has loaded every resource and the JS expression `ready` holds there;
    again when a change of the machine's network interfaces cut a request short."""
    aborted: list[str] = []

    def failed(request: Request) -> None:
        aborted.append(f"{request.url}: {request.failure}")

    def network_changed() -> bool:
        return any(NETWORK_CHANGED in failure for failure in aborted)

    page.on("requestfailed", failed)
    loop = asyncio.get_running_loop()
    give_up, pause, cut = loop.time() + LOAD_DEADLINE, FIRST_PAUSE, 0
    try:
        while True:
            aborted.clear()
            try:
                await page.goto(url)
            except PlaywrightError as error:
                if NETWORK_CHANGED not in str(error):
                    raise
                aborted.append(str(error))
            deadline = loop.time() + READY_TIMEOUT
            while not network_changed():
                try:
                    await page.wait_for_function(ready, timeout=500)
                    return
                except PlaywrightTimeoutError:
                    assert loop.time() < deadline, (
                        f"{url}: not {ready} within {READY_TIMEOUT}s; requests that failed: {aborted}"
                    )
            cut += 1
            assert loop.time() < give_up, (
                f"{url}: cut short by network changes {cut} times in {LOAD_DEADLINE}s, lastly: {aborted[:3]}"
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
    finally:
        page.remove_listener("requestfailed", failed)


# --- A front end on another origin: static pages on loopback ports of their own -----------------

NODE_MODULES = REPO_ROOT / "tests" / "js" / "node_modules"
# The conditions of package.json "exports" a browser loading ES modules matches, as bundlers do.
BROWSER_CONDITIONS = ("browser", "module", "import", "default")


def _export_target(target: Any) -> str | None:
    if isinstance(target, str):
        return target
    if isinstance(target, dict):
        for condition, value in target.items():
            if condition in BROWSER_CONDITIONS and (found := _export_target(value)) is not None:
                return found
    return None


def import_map(*packages: str) -> dict[str, dict[str, str]]:
    """An import map that lets a page `import` these packages of tests/js/node_modules by name,
    every entry point of their "exports" (or their "module" file), as a bundler would resolve them."""
    imports: dict[str, str] = {}
    for package in packages:
        manifest = json.loads((NODE_MODULES / package / "package.json").read_text())
        exports = manifest.get("exports")
        if not isinstance(exports, dict) or not any(key.startswith(".") for key in exports):
            exports = {".": exports or manifest.get("module") or manifest["main"]}
        for key, target in exports.items():
            resolved = _export_target(target)
            if "*" in key or resolved is None or not resolved.endswith(("js", "mjs")):
                continue
            imports[package + key[1:]] = f"/node_modules/{package}/{resolved.removeprefix('./')}"
    return {"imports": imports}


class FrontEnd:
    """A static web server on a loopback port of its own: the origin of a front end's pages.

    `/` is a blank page that loads graphql-sse's client (`window.graphqlSse`); `/apollo` loads
    Apollo Client too (`window.apollo`, then `window.apolloReady`), from tests/js/node_modules, as a
    bundled app would. Only the pages that use Apollo load it: a page evaluates its hundred-odd
    modules every time it opens, cached or not.
    """

    APOLLO_PATH = "/apollo"

    PACKAGES = (
        "@apollo/client", "graphql", "graphql-tag", "rxjs", "tslib", "optimism",
        "@wry/caches", "@wry/context", "@wry/equality", "@wry/trie",
    )  # fmt: skip

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.server: ThreadingHTTPServer | None = None
        plain = (
            '<!doctype html><meta charset="utf-8"><title>' + name + "</title>\n"
            '<script src="/node_modules/graphql-sse/umd/graphql-sse.js"></script>\n'
        )
        apollo = (
            f'<script type="importmap">{json.dumps(import_map(*self.PACKAGES))}</script>\n'
            '<script type="module">\n'
            'import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";\n'
            "window.apollo = { ApolloClient, HttpLink, InMemoryCache, gql };\nwindow.apolloReady = true;\n"
            "</script>\n"
        )
        self.pages = {"/": plain.encode(), self.APOLLO_PATH: (plain + apollo).encode()}

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        pages = self.pages

        class Handler(SimpleHTTPRequestHandler):
            # Keep-alive, and modules cached by the browser: a page loads Apollo's hundred-odd
            # modules once per test session, not once per page.
            protocol_version = "HTTP/1.1"
            extensions_map = {
                **SimpleHTTPRequestHandler.extensions_map,
                ".js": "text/javascript",
                ".mjs": "text/javascript",
            }

            def do_GET(self) -> None:
                page = pages.get(self.path.split("?")[0])
                if page is None:
                    return super().do_GET()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def end_headers(self) -> None:
                if self.path.startswith("/node_modules/"):
                    self.send_header("Cache-Control", "public, max-age=3600, immutable")
                super().end_headers()

            def translate_path(self, path: str) -> str:
                # Only the node packages are files; nothing else of the machine is served.
                if not path.startswith("/node_modules/"):
                    return str(NODE_MODULES / "__none__")
                file = Path(super().translate_path(path.removeprefix("/node_modules")))
                # rxjs's ES modules import without extensions, as bundlers and dev servers resolve them.
                for candidate in (file, file.with_name(file.name + ".js"), file / "index.js"):
                    if candidate.is_file():
                        return str(candidate)
                return str(file)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        handler = functools.partial(Handler, directory=str(NODE_MODULES))
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, name=f"front-end-{self.name}", daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> "FrontEnd":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def front_ends() -> Iterator[tuple[FrontEnd, FrontEnd]]:
    """Two front ends on loopback ports of their own: one the API lists, one it does not."""
    with FrontEnd("listed") as listed, FrontEnd("stranger") as stranger:
        yield listed, stranger


# Listed beside the loopback front end: an origin given with a trailing slash, as people paste it.
ALSO_LISTED = "https://app.example.com"


@pytest.fixture(scope="session")
def cors_servers(live_env: dict[str, str], front_ends) -> Iterator[list[DaphneInstance]]:
    """Instances listing the `listed` front end's origin: one for bearer tokens only (the default),
    one letting the listed origins' cookies through too (CORS_ALLOW_CREDENTIALS)."""
    env = {**live_env, "CORS_ALLOWED_ORIGINS": f"{front_ends[0].origin}, {ALSO_LISTED}/"}
    instances = [
        DaphneInstance("cors-bearer", env),
        DaphneInstance("cors-cookies", {**env, "CORS_ALLOW_CREDENTIALS": "1"}),
    ]
    with running(instances):
        yield instances
