"""Fixtures of the tests that need Docker: a working engine, and the project's image built once per run.

Both are session fixtures, so every compose module (tests/test_compose*.py) and every test that
needs the Docker CLI shares them; tests/conftest.py puts all their users in one xdist group, so
the engine is set up and the image built once per run, on one worker.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack.services import REPO_ROOT
from tests.compose import Compose, daemon_answers, engine_problem, free_subnet_prefix, setup_script, sh

SETUP_TIMEOUT = 900  # seconds: a new machine installs the engine and builds every base image


@dataclass(frozen=True)
class Engine:
    """What it took to have a working engine (for the compose tests' figures)."""

    setup_s: float | None  # seconds the setup script ran, None when an engine was already there
    started_daemon: bool  # the setup script started dockerd, and stops it at the end


@dataclass(frozen=True)
class SetupRun:
    """One run of the setup script."""

    script: Path
    returncode: int
    output: str
    seconds: float
    daemon_was_up: bool  # a daemon answered before it ran


def run_setup(script: Path) -> SetupRun:
    was_up = daemon_answers()
    began = time.monotonic()
    result = sh("bash", str(script), timeout=SETUP_TIMEOUT)
    return SetupRun(script, result.returncode, result.stdout + result.stderr, time.monotonic() - began, was_up)


def early_setup() -> SetupRun | None:
    """The run `make test` started in the background before its installs (scripts/docker-setup-early.sh,
    in the folder BLOGPUSH_DOCKER_EARLY names), once it has ended; None if it started none."""
    folder = Path(os.environ.get("BLOGPUSH_DOCKER_EARLY") or "/nonexistent")
    if not (folder / "pid").is_file():
        return None
    pid = int((folder / "pid").read_text())
    deadline = time.monotonic() + SETUP_TIMEOUT
    while not (folder / "rc").is_file():
        assert time.monotonic() < deadline, f"the Docker setup {folder} started has not ended in {SETUP_TIMEOUT}s"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if not (folder / "rc").is_file():
                raise AssertionError(f"the Docker setup {folder} started ended without an exit code") from None
        time.sleep(0.5)
    began, ended = (float(field) for field in (folder / "times").read_text().split())
    return SetupRun(
        setup_script(),
        int((folder / "rc").read_text()),
        (folder / "log").read_text(errors="replace"),
        ended - began,
        (folder / "daemon-was-up").read_text().strip() == "1",
    )


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """A working engine with the compose plugin and the base images.

    When none answers, the shared setup script (BLOGPUSH_DOCKER_SETUP, or ../shared/docker/setup.sh
    beside the clone) installs and starts one, and the daemon it started is stopped at the end of
    the run. `make test` starts the script before its installs; it is then waited for here, not run
    again. Without the script, or not as root, the tests that need it are skipped with the reason.
    """
    run = early_setup()
    if run is None:
        problem = engine_problem()
        if problem is None:
            yield Engine(setup_s=None, started_daemon=False)
            return
        script = setup_script()
        if not script.is_file():
            pytest.skip(f"{problem}, and there is no {script} to set one up (set BLOGPUSH_DOCKER_SETUP)")
        if os.geteuid() != 0:
            pytest.skip(f"{problem}; {script} must run as root")
        run = run_setup(script)
    assert run.returncode == 0, f"{run.script} failed:\n{run.output[-6000:]}"
    started_daemon = not run.daemon_was_up and daemon_answers()
    try:
        problem = engine_problem()
        assert problem is None, f"after {run.script}: {problem}"
        yield Engine(setup_s=round(run.seconds, 1), started_daemon=started_daemon)
    finally:
        if started_daemon:
            sh("bash", str(run.script), "--stop", timeout=120)


@dataclass(frozen=True)
class Image:
    """The project's image as `docker compose build` made it from this tree, for every compose project."""

    name: str
    id: str
    build_project: str  # the compose project name the build ran under (its images carry it as a label)
    canary: str  # a file planted in the builder's static-vendor/, which must not reach the image
    build_s: float


def plant_canary() -> tuple[Path, bool]:
    """An untracked file in static-vendor/ (gitignored): if the build context took that folder, it shows."""
    folder = REPO_ROOT / "static-vendor"
    created = not folder.exists()
    folder.mkdir(exist_ok=True)
    canary = folder / f"leak-canary-{secrets.token_hex(4)}.js"
    canary.write_text("// planted by tests/fixtures_docker.py: must never be in the image\n")
    return canary, created


@pytest.fixture(scope="session")
def compose_image(docker_engine: Engine) -> Iterator[Image]:
    """One build per run, by the compose file's own `build:` (web's), shared by both compose files:
    docker-compose.sentinel.yml changes only Redis. Removed at the end; an image left behind fails."""
    name = f"blogpush-build-{os.getpid()}-{secrets.token_hex(3)}"
    builder = Compose(name, 0, free_subnet_prefix(), f"{name}-image:test", None)
    canary, created_folder = plant_canary()
    began = time.monotonic()
    try:
        try:
            builder.run("build", "web", timeout=900)
        finally:  # the builder's tree is left as it was found as soon as the build has read it
            canary.unlink(missing_ok=True)
            if created_folder:
                shutil.rmtree(canary.parent, ignore_errors=True)
        build_s = round(time.monotonic() - began, 1)
        image_id = sh("docker", "image", "inspect", "--format", "{{.Id}}", builder.image, check=True).stdout.strip()
        yield Image(builder.image, image_id, name, canary.name, build_s)
    finally:
        sh("docker", "image", "rm", "--force", builder.image)
    assert sh("docker", "image", "inspect", builder.image).returncode != 0, f"{builder.image} is still there"
