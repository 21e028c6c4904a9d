"""The Docker deployment files, checked without a Docker engine so they cannot silently rot.

docker-compose.yml and the Dockerfile cannot run on this machine; their behaviour is proven by
tests/test_stack.py, which runs the same topology natively with the same nginx config file.
These tests pin the promises the files make (services, replicas, healthchecks, start order,
no baked secrets) and replay what can run natively: the image's collectstatic step on its build
context, and nginx's check of the config as the nginx image renders it.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from stack.services import NGINX_TEMPLATE, REPO_ROOT, Nginx, free_port

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
NGINX_IMAGE_TEMPLATE = "/etc/nginx/templates/default.conf.template"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def instruction_args(name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile_instructions() if instruction == name]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for arguments in instruction_args("ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def major_version(image: str) -> int:
    match = re.match(r"[^:]+:(\d+)", image)
    assert match is not None, f"no major version in {image!r}"
    return int(match.group(1))


def render_like_the_nginx_image(template: str, env: dict[str, str]) -> str:
    """What the nginx image's 20-envsubst-on-templates.sh writes: defined variables whose names
    start with NGINX_ENVSUBST_FILTER replaced, `$name` or `${name}`, everything else kept."""
    prefix = re.escape(env.get("NGINX_ENVSUBST_FILTER", ""))
    pattern = re.compile(r"\$(\{)?(" + prefix + r"\w*)(?(1)\})")
    return pattern.sub(lambda match: env.get(match.group(2), match.group(0)), template)


def build_context_files() -> list[Path]:
    """Files `docker build .` sends, per .dockerignore (plain and `**/` patterns, no `!`)."""
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert not any(pattern.startswith("!") for pattern in patterns), "extend build_context_files() for '!'"

    def ignored(relative: str) -> bool:
        return any(
            fnmatch(relative, pattern) or (pattern.startswith("**/") and fnmatch(relative, pattern[3:]))
            for pattern in patterns
        )

    files = []
    for directory, subdirectories, names in os.walk(REPO_ROOT):
        base = Path(directory).relative_to(REPO_ROOT)
        subdirectories[:] = [name for name in subdirectories if not ignored((base / name).as_posix())]
        files += [base / name for name in names if not ignored((base / name).as_posix())]
    return files


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_has_exactly_the_deployment_services(services):
    assert set(services) == {"db", "redis", "migrate", "web", "lb"}


def test_database_is_postgresql_16_or_newer_on_a_named_volume(compose, services):
    db = services["db"]
    assert db["image"].startswith("postgres:") and major_version(db["image"]) >= 16
    volume, _, target = db["volumes"][0].partition(":")
    assert volume in compose["volumes"]
    assert target == "/var/lib/postgresql/data"


def test_redis_is_version_7(services):
    assert services["redis"]["image"].startswith("redis:") and major_version(services["redis"]["image"]) == 7


def test_web_runs_three_replicas_of_the_image_built_here(services):
    assert services["web"]["deploy"]["replicas"] == 3
    assert services["web"]["build"] == "." == services["migrate"]["build"]


def test_only_the_load_balancer_publishes_a_port(services):
    assert [name for name, service in services.items() if service.get("ports")] == ["lb"]
    assert services["lb"]["ports"][0].endswith(":80")


def test_every_long_running_service_has_a_healthcheck(services):
    for name in ("db", "redis", "web", "lb"):
        test = services[name]["healthcheck"]["test"]
        assert test and test[0] in ("CMD", "CMD-SHELL"), name
    assert services["db"]["healthcheck"]["test"][1].startswith("pg_isready")
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "/healthz" in services["lb"]["healthcheck"]["test"][-1]
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_web_healthcheck_is_the_images_own(services):
    (healthcheck,) = instruction_args("HEALTHCHECK")
    image_test = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert ["CMD", *image_test] == services["web"]["healthcheck"]["test"]
    assert "http://127.0.0.1:8000/healthz" in image_test[-1]


def test_start_order_waits_for_health_and_for_migrations(services):
    def conditions(name: str) -> dict[str, str]:
        return {dependency: spec["condition"] for dependency, spec in services[name]["depends_on"].items()}

    assert conditions("migrate") == {"db": "service_healthy"}
    assert conditions("web") == {
        "migrate": "service_completed_successfully",
        "db": "service_healthy",
        "redis": "service_healthy",
    }
    assert conditions("lb") == {"web": "service_healthy"}
    assert services["migrate"]["entrypoint"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["migrate"]["restart"] == "no"


def test_web_gets_time_to_drain_before_docker_kills_it(services):
    grace = services["web"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > settings.GRACEFUL_SHUTDOWN_SECONDS
    assert "GRACEFUL_SHUTDOWN_SECONDS" not in services["web"]["environment"]  # the default applies


def test_load_balancer_runs_the_config_file_the_native_stack_runs(services):
    lb = services["lb"]
    mounts = [volume.split(":") for volume in lb["volumes"]]
    assert [(REPO_ROOT / source).resolve() for source, target, *_ in mounts if target == NGINX_IMAGE_TEMPLATE] == [
        NGINX_TEMPLATE.resolve()
    ]
    assert lb["environment"]["NGINX_PORT"] == "80"
    assert re.fullmatch(r"server web:8000\b[^;]*;", lb["environment"]["NGINX_UPSTREAM_SERVERS"])


def test_app_settings_are_production_ones_from_the_environment(services):
    for name in ("web", "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@db:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["DJANGO_DEBUG"] == "0"
        # Interpolated at `up` time, never a literal in the file.
        assert re.fullmatch(r"\$\{DJANGO_SECRET_KEY[:?-][^}]*\}", env["DJANGO_SECRET_KEY"])
        assert "127.0.0.1" in env["DJANGO_ALLOWED_HOSTS"]  # the healthcheck's Host


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no Docker CLI with the compose plugin here",
)
def test_docker_compose_accepts_the_file():
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr


# --- the load balancer's config --------------------------------------------------------------


def test_the_config_the_nginx_image_renders_passes_nginx_t(services, tmp_path):
    rendered = render_like_the_nginx_image(NGINX_TEMPLATE.read_text(), services["lb"]["environment"])
    assert "${" not in rendered
    assert "listen 80;" in rendered and "server web:8000" in rendered
    assert "$http_upgrade" in rendered and "$connection_upgrade" in rendered  # nginx's own, kept
    # `web` resolves only on the compose network; here it must stand for a local address.
    local = rendered.replace("server web:8000", "server 127.0.0.1:8000")

    class ComposeRendered(Nginx):
        def render_template(self) -> str:
            return local

    nginx = ComposeRendered([])
    try:
        nginx.check_config()
    finally:
        nginx.stop()


# --- Dockerfile ------------------------------------------------------------------------------


def test_image_is_slim_python_and_runs_as_a_non_root_user():
    (base,) = instruction_args("FROM")
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base)
    users = instruction_args("USER")
    assert users and users[-1] not in ("root", "0")
    order = [instruction for instruction, _ in dockerfile_instructions()]
    assert order.index("USER") < order.index("ENTRYPOINT")


def test_dependencies_are_installed_in_a_layer_before_the_source_is_copied():
    steps = dockerfile_instructions()
    copy_all = steps.index(("COPY", ". ."))
    before = " ".join(arguments for _, arguments in steps[:copy_all])
    assert "requirements.txt" in before and "requirements-nodeps.txt" in before
    assert "pip install -r requirements.txt" in before
    assert "pip install --no-deps -r requirements-nodeps.txt" in before


def test_entrypoint_is_daphne_behind_the_proxy_on_port_8000_in_production_mode():
    (entrypoint,) = instruction_args("ENTRYPOINT")
    assert json.loads(entrypoint) == [
        "python",
        "-m",
        "project.server",  # Daphne's command line with longer connection sweeps
        "--proxy-headers",
        "-b",
        "0.0.0.0",
        "-p",
        "8000",
        "project.asgi:application",
    ]
    assert dockerfile_env()["DJANGO_DEBUG"] == "0"


def test_the_image_healthcheck_passes_on_a_live_instance_and_fails_on_a_closed_port(daphne_server):
    (healthcheck,) = instruction_args("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"

    def run_against(address: str) -> int:
        moved = [part.replace("127.0.0.1:8000", address) for part in command[1:]]
        return subprocess.run([sys.executable, *moved], capture_output=True, timeout=30).returncode

    assert run_against(f"127.0.0.1:{daphne_server.port}") == 0
    assert run_against(f"127.0.0.1:{free_port()}") != 0


def test_no_secret_is_baked_into_the_image():
    assert "DJANGO_SECRET_KEY" not in dockerfile_env()
    assert not [arguments for arguments in instruction_args("ARG") if "SECRET" in arguments.upper()]
    assert ".env" in DOCKERIGNORE.read_text().split()


def test_the_images_collectstatic_step_works_on_its_build_context(tmp_path):
    """Replays the RUN collectstatic line, as the build would, on a copy of the build context."""
    files = build_context_files()
    names = {path.as_posix() for path in files}
    assert {"manage.py", "requirements.txt", "requirements-nodeps.txt", "project/settings.py"} <= names
    assert not [name for name in names if name.startswith((".venv/", ".git/", "tests/")) or "__pycache__" in name]
    for relative in files:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, tmp_path / relative)

    (command,) = [arguments for arguments in instruction_args("RUN") if "collectstatic" in arguments]
    venv_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{venv_bin}:/usr/bin:/bin", "HOME": str(tmp_path), **dockerfile_env()}
    result = subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "staticfiles" / "admin" / "css" / "base.css").exists()
    assert (tmp_path / "staticfiles" / "graphene_django").is_dir()
