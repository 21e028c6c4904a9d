"""Helpers of the compose tests (tests/test_compose*.py): the engine, one compose project, clients through its lb.

The fixtures that use them (the engine, the image built once per run) are in tests/fixtures_docker.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from blogclient import BlogListener
from stack.services import REPO_ROOT, free_port
from tests.fixtures_web import ARTIFACTS
from tests.live import CREATE_BLOG, SIGN_UP, assert_no_errors, unique_name

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
OUT = ARTIFACTS / "compose"


# --- the engine --------------------------------------------------------------------------------


def sh(*cmd: str, timeout: float = 120, check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def base_images() -> list[str]:
    """The images the Dockerfile and docker-compose.yml start FROM or run: never removed here."""
    images = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    images += [
        service["image"] for service in services.values() if "build" not in service and "{" not in service["image"]
    ]
    return sorted(set(images))


def setup_script() -> Path:
    configured = os.environ.get("BLOGPUSH_DOCKER_SETUP")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "docker" / "setup.sh"


def daemon_answers() -> bool:
    return shutil.which("docker") is not None and sh("docker", "info", timeout=60).returncode == 0


def engine_problem() -> str | None:
    """Why this machine cannot run the stack now, or None."""
    if not daemon_answers():
        return "no Docker daemon answers `docker info`"
    if sh("docker", "compose", "version").returncode:
        return "the Docker CLI has no compose v2 plugin"
    missing = [image for image in base_images() if sh("docker", "image", "inspect", image).returncode]
    return f"base images missing: {', '.join(missing)}" if missing else None


# --- one compose project -----------------------------------------------------------------------


def used_networks() -> list[ipaddress.IPv4Network]:
    """Subnets of every Docker network and every host route: a new subnet must overlap none."""
    networks = []
    for network in sh("docker", "network", "ls", "-q", check=True).stdout.split():
        for config in (
            json.loads(sh("docker", "network", "inspect", network, check=True).stdout)[0]["IPAM"]["Config"] or []
        ):
            with contextlib.suppress(ValueError, KeyError):
                networks.append(ipaddress.IPv4Network(config["Subnet"]))
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        destination, mask = (ipaddress.IPv4Address(bytes.fromhex(value)[::-1]) for value in (fields[1], fields[7]))
        if int(mask):  # the default route overlaps everything and is not an address in use
            networks.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return networks


def free_subnet_prefix() -> str:
    """The first three octets of a /24 that no Docker network or host route uses.

    Picked at random among the free ones: two runs on one engine that look at the same moment
    (before either has created its network) then rarely pick the same one.
    """
    used = used_networks()
    candidates = [ipaddress.IPv4Network(f"172.16.{third}.0/24") for third in range(100, 255)]
    free = [candidate for candidate in candidates if not any(candidate.overlaps(network) for network in used)]
    if not free:
        raise AssertionError("no free 172.16.x.0/24 for the test's network")
    return str(random.choice(free).network_address).rsplit(".", 1)[0]


@dataclass
class Compose:
    """`docker compose` on the project's file plus the test's override, under a unique project name."""

    name: str
    port: int
    subnet_prefix: str
    image: str
    override: Path | None  # the test's changes to the project's files, applied last
    extra_files: tuple[Path, ...] = ()  # between the project's file and the test's override
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""  # the lb, the only way in
    ws_url: str = ""

    def __post_init__(self) -> None:
        self.url, self.ws_url = f"http://127.0.0.1:{self.port}", f"ws://127.0.0.1:{self.port}/graphql/"
        # The compose file's defaults apply, except what the test must change; nothing from the
        # developer's environment that would change what is tested.
        ignored = ("LB_BIND", "GRAPHQL_GRAPHIQL", "GRAPHQL_INTROSPECTION")
        self.env = {
            **{
                key: value for key, value in os.environ.items() if key not in ignored and not key.startswith("COMPOSE_")
            },
            "LB_PORT": str(self.port),
            "BLOGPUSH_SUBNET_PREFIX": self.subnet_prefix,
            "BLOGPUSH_IMAGE": self.image,
        }

    @property
    def lb_address(self) -> str:
        return f"{self.subnet_prefix}.2"

    def command(self, *args: str) -> list[str]:
        files = [COMPOSE_FILE, *self.extra_files, *([self.override] if self.override else [])]
        return ["docker", "compose", "-p", self.name, *(arg for path in files for arg in ("-f", str(path))), *args]

    def run(self, *args: str, timeout: float = 300, check: bool = True, stdin: str | None = None) -> str:
        result = subprocess.run(
            self.command(*args),
            cwd=REPO_ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}"
            )
        return result.stdout

    async def arun(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        """`run` off the event loop, so websocket clients and traffic keep going meanwhile."""
        return await asyncio.to_thread(self.run, *args, timeout=timeout, check=check)

    def ids(self, service: str, *, stopped: bool = False) -> list[str]:
        return self.run("ps", *(["-a"] if stopped else []), "-q", service).split()

    def inspect(self, ids: list[str]) -> list[dict[str, Any]]:
        return json.loads(sh("docker", "inspect", *ids, check=True).stdout) if ids else []

    def hostnames(self, service: str) -> dict[str, str]:
        """Running containers of `service`: host name (what connection_ack names) -> container id."""
        return {info["Config"]["Hostname"]: info["Id"] for info in self.inspect(self.ids(service))}

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {
            "containers": sh(
                "docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}", check=True
            ).stdout.split(),
            "networks": sh(
                "docker", "network", "ls", "--filter", label, "--format", "{{.Name}}", check=True
            ).stdout.split(),
            "volumes": sh(
                "docker", "volume", "ls", "--filter", label, "--format", "{{.Name}}", check=True
            ).stdout.split(),
        }
        # By name too: a project's objects are all named <project>-... or <project>_...
        names = {
            "containers": sh("docker", "ps", "-a", "--format", "{{.Names}}", check=True).stdout.split(),
            "networks": sh("docker", "network", "ls", "--format", "{{.Name}}", check=True).stdout.split(),
            "volumes": sh("docker", "volume", "ls", "--format", "{{.Name}}", check=True).stdout.split(),
        }
        for kind, listed in names.items():
            found[kind] = sorted(set(found[kind]) | {name for name in listed if name.startswith(self.name)})
        return {kind: names for kind, names in found.items() if names}

    def save_logs(self) -> None:
        logs = self.run("logs", "--no-color", "--timestamps", check=False, timeout=60)
        if logs:  # after `down` there is nothing left to save
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / "stack.log").write_text(logs)


# --- clients through the lb ---------------------------------------------------------------------


# Tests that write several blogs a second as one author; that limit is tested elsewhere.
WRITER_OVERRIDE = """
services:
  web:
    environment:
      RATE_LIMIT_MUTATIONS: "off"
"""


@contextlib.contextmanager
def stack_with_author(kind: str, image: str, workdir: Path, extra_file: Path) -> Iterator[tuple[Compose, str]]:
    """docker-compose.yml with `extra_file` on top, up and healthy, and the token of one author.

    Its logs go to test-artifacts/compose/<kind>-stack.log; it is taken down, and nothing may be
    left behind.
    """
    override = workdir / "docker-compose.test.yml"
    override.write_text(WRITER_OVERRIDE)
    name = f"blogpush-{kind}-{os.getpid()}-{secrets.token_hex(3)}"
    compose = Compose(name, free_port(), free_subnet_prefix(), image, override, extra_files=(extra_file,))
    try:
        compose.run("up", "--detach", "--wait", "--no-build", timeout=300)
        with httpx.Client(base_url=compose.url, timeout=30) as client:
            answer = client.post(
                "/graphql/",
                json={"query": SIGN_UP, "variables": {"username": unique_name(), "password": "correct horse"}},
            )
            token = assert_no_errors(answer.json())["createAuthor"]["token"]
        yield compose, token
    finally:
        logs = compose.run("logs", "--no-color", "--timestamps", check=False, timeout=60)
        if logs:
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / f"{kind}-stack.log").write_text(logs)
        compose.run("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
        left = compose.leftovers()
        assert not left, f"the test left Docker objects behind: {left}"


def no_keepalive_client(base_url: str) -> httpx.AsyncClient:
    """A fresh TCP connection per request: the lb closes idle keep-alive connections after a while,
    and a request racing that close would be the client's problem, not the stack's."""
    return httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


@dataclass
class Request:
    started: float
    seconds: float
    status: int | str
    blog_id: str | None = None


class Writer:
    """createBlog over POST, one after the other: what was answered is what must be delivered."""

    def __init__(self, base_url: str, token: str, prefix: str, interval: float) -> None:
        self.client = no_keepalive_client(base_url)
        self.token = token
        self.prefix = prefix
        self.interval = interval
        self.done: list[Request] = []

    @property
    def acked(self) -> list[str]:
        return [request.blog_id for request in self.done if request.blog_id]

    @property
    def failed(self) -> list[Request]:
        return [request for request in self.done if not request.blog_id]

    async def run(self, stop: asyncio.Event) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            started = time.monotonic()
            blog_id = None
            try:
                response = await self.client.post(
                    "/graphql/",
                    json={
                        "query": CREATE_BLOG,
                        "variables": {"title": f"{self.prefix} {number}", "content": "Pushed."},
                    },
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                status: int | str = response.status_code
                if status == 200:
                    body = response.json()
                    blog_id = ((body.get("data") or {}).get("createBlog") or {}).get("blog", {}).get("id")
                    if blog_id is None:
                        status = f"200 with errors: {body.get('errors')}"
            except httpx.HTTPError as error:
                status = repr(error)
            self.done.append(Request(started, time.monotonic() - started, status, blog_id))
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))
        await self.client.aclose()


class Subscriber:
    """blogclient.BlogListener through the lb: reconnects and resumes after its last cursor by itself."""

    def __init__(self, url: str) -> None:
        self.listener = BlogListener(url, on_status=self._status, backoff_first=0.2, backoff_max=2.0)
        self.statuses: list[tuple[float, str]] = []
        self.sessions: list[tuple[float, str]] = []  # (when, instance) of every connection that listened
        self.received: list[str] = []
        self.task = asyncio.create_task(self._run())

    def _status(self, message: str) -> None:
        now = time.monotonic()
        self.statuses.append((now, message))
        if message.startswith("listening"):
            self.sessions.append((now, self.listener.instance or "?"))

    async def _run(self) -> None:
        async for event in self.listener.events():
            self.received.append(event["blog"]["id"])

    @property
    def instance(self) -> str | None:
        return self.sessions[-1][1] if self.sessions else None

    def missing(self, acked: list[str]) -> list[str]:
        return [blog for blog in acked if blog not in set(self.received)]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds it took until `predicate()` held; AssertionError after `timeout`."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - began


def assert_delivered_exactly_once_in_order(subscribers: list[Subscriber], acked: list[str]) -> None:
    for subscriber in subscribers:
        received = subscriber.received
        assert len(received) == len(set(received)), f"duplicates on {subscriber.sessions}"
        assert [blog for blog in received if blog in set(acked)] == acked, (
            f"subscriber via {subscriber.sessions} missed {subscriber.missing(acked)}"
        )
