"""The Docker deployment files, checked without a Docker engine so they cannot silently rot.

tests/test_compose.py runs docker-compose.yml and the Dockerfile for real where an engine can be
had; these tests run everywhere, but for `docker compose config`, which asks for the Docker CLI
that the engine fixture (tests/fixtures_docker.py) sets up. They pin the promises the files make
(services, replicas, healthchecks, start order, one image, the lb on 127.0.0.1 as the only trusted
proxy, no baked secrets) and replay what can run natively: the image's static-files step on its
build context, HAProxy's check of the config with the environment the lb container gives it.
"""

import ipaddress
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

from scripts.fetch_static_assets import DEST as STATIC_VENDOR
from scripts.fetch_static_assets import damaged
from stack.services import HAPROXY_CONFIG, REPO_ROOT, free_port

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HAPROXY_IMAGE_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"


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


def build_context_files() -> list[Path]:
    """Files `docker build .` sends, per .dockerignore: plain, `**/` and `!` patterns, the last
    matching pattern deciding (as Docker does)."""
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]

    def matches(relative: str, pattern: str) -> bool:
        parts = relative.split("/")
        # A pattern matching a folder excludes everything below it.
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch(prefix, pattern) or (pattern.startswith("**/") and fnmatch(prefix.rsplit("/", 1)[-1], pattern[3:]))
            for prefix in prefixes
        )

    def ignored(relative: str) -> bool:
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if matches(relative, pattern.lstrip("!")):
                verdict = not negated
        return verdict

    files = []
    for directory, subdirectories, names in os.walk(REPO_ROOT):
        base = Path(directory).relative_to(REPO_ROOT)
        # A folder is walked while anything below it could be let back in by a `!` pattern.
        subdirectories[:] = [
            name
            for name in subdirectories
            if not ignored((base / name).as_posix())
            or any(p.startswith("!") and p[1:].startswith(f"{(base / name).as_posix()}/") for p in patterns)
        ]
        files += [base / name for name in names if not ignored((base / name).as_posix())]
    return files


def compose_config(**env: str) -> dict[str, Any]:
    """What `docker compose config` makes of the file with these variables set (and no others)."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "BLOGPUSH_", "LB_"))}
    for name in ("GRAPHQL_GRAPHIQL", "GRAPHQL_INTROSPECTION", "DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"):
        clean.pop(name, None)
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**clean, **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


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


def test_web_runs_three_replicas_of_one_image_built_once(services):
    assert services["web"]["deploy"]["replicas"] == 3
    assert services["web"]["build"] == "."
    # migrate runs the image web builds, under the same name: one build, no second image.
    assert "build" not in services["migrate"] and services["migrate"]["pull_policy"] == "never"
    assert services["migrate"]["image"] == services["web"]["image"]
    assert re.fullmatch(r"\$\{BLOGPUSH_IMAGE:-[a-z0-9._/-]+:[\w.-]+\}", services["web"]["image"])


def test_only_the_load_balancer_publishes_a_port_and_on_loopback_unless_told(services):
    assert [name for name, service in services.items() if service.get("ports")] == ["lb"]
    (port,) = services["lb"]["ports"]
    assert port == "${LB_BIND:-127.0.0.1}:${LB_PORT:-8080}:80"


def test_web_believes_x_forwarded_for_from_the_lb_only(compose, services):
    """TRUSTED_PROXIES is lb's fixed address, which no other container can be given."""
    lb_address = services["lb"]["networks"]["default"]["ipv4_address"]
    assert services["web"]["environment"]["TRUSTED_PROXIES"] == lb_address
    (ipam,) = compose["networks"]["default"]["ipam"]["config"]
    default = {key: re.sub(r"\$\{BLOGPUSH_SUBNET_PREFIX:-([\d.]+)\}", r"\1", value) for key, value in ipam.items()}
    address = ipaddress.ip_address(re.sub(r"\$\{BLOGPUSH_SUBNET_PREFIX:-([\d.]+)\}", r"\1", lb_address))
    assert address in ipaddress.ip_network(default["subnet"])
    assert address not in ipaddress.ip_network(default["ip_range"])  # dynamic addresses come from there
    assert ipaddress.ip_network(default["ip_range"]).subnet_of(ipaddress.ip_network(default["subnet"]))  # type: ignore[arg-type]


def test_a_local_stack_shows_graphiql_and_answers_introspection_unless_told(services):
    env = services["web"]["environment"]
    assert env["GRAPHQL_GRAPHIQL"] == "${GRAPHQL_GRAPHIQL:-1}"
    assert env["GRAPHQL_INTROSPECTION"] == "${GRAPHQL_INTROSPECTION:-1}"


def test_every_long_running_service_has_a_healthcheck(services):
    for name in ("db", "redis", "web", "lb"):
        test = services[name]["healthcheck"]["test"]
        assert test and test[0] in ("CMD", "CMD-SHELL"), name
    # Over TCP: the postgres image's first-start temporary server answers on the socket only.
    db_check = services["db"]["healthcheck"]["test"]
    assert db_check[:4] == ["CMD", "pg_isready", "-h", "127.0.0.1"]
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "/lb-healthz" in services["lb"]["healthcheck"]["test"][-1]
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_web_healthcheck_is_the_images_own(services):
    (healthcheck,) = instruction_args("HEALTHCHECK")
    image_test = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert ["CMD", *image_test] == services["web"]["healthcheck"]["test"]
    assert "/dev/tcp/127.0.0.1/8000" in image_test[-1] and "GET /healthz " in image_test[-1]


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
    assert lb["image"].startswith("haproxy:")
    mounts = {target: (REPO_ROOT / source).resolve() for source, target, *_ in (v.split(":") for v in lb["volumes"])}
    assert mounts[HAPROXY_IMAGE_CONFIG] == HAPROXY_CONFIG.resolve()
    assert lb["environment"] == {
        "LB_LISTEN": ":80",
        "LB_REPLICAS": "web:8000",
        "LB_BACKUP_REPLICAS": "web-backup:8000",
    }


def config_lines(section: str) -> list[str]:
    """The lines of one section of deploy/haproxy.cfg (e.g. "backend web"), comments dropped."""
    lines, inside = [], False
    for raw in HAPROXY_CONFIG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if line and not line[0].isspace():
            inside = line == section
        elif inside and line:
            lines.append(line.strip())
    return lines


def test_load_balancer_routes_by_readiness_and_follows_the_replicas():
    """Every replica Docker's DNS names is asked for /readyz; the lb's own health is its own."""
    web = config_lines("backend web")
    assert "option httpchk" in web
    assert any(re.match(r"http-check send meth GET uri /readyz\b", line) for line in web)
    assert "http-check expect status 200" in web
    templates = [line for line in web if line.startswith("server-template ")]
    assert templates == [
        'server-template web 1-10 "${LB_REPLICAS-web:8000}" check resolvers docker init-addr none',
        # The same replicas unchecked, used only while none is ready (a shared dependency is down),
        # under a name of their own: HAProxy gives each address of one name to one server per backend.
        'server-template live 1-10 "${LB_BACKUP_REPLICAS-web-backup:8000}" backup resolvers docker init-addr none',
    ]
    assert "option allbackups" in web
    assert "nameserver docker 127.0.0.11:53" in config_lines("resolvers docker")
    frontend = config_lines("frontend http")
    assert "monitor-uri /lb-healthz" in frontend and "option forwardfor" in frontend


def test_the_replicas_answer_to_the_backup_servers_name_too(services):
    assert services["web"]["networks"]["default"]["aliases"] == ["web-backup"]


def test_the_lbs_healthcheck_is_answered_by_the_lb_itself(services):
    """Not through the replicas: a hung replica must not make the lb look sick."""
    test = services["lb"]["healthcheck"]["test"]
    assert "/lb-healthz" in test[-1] and "/healthz" not in test[-1].replace("/lb-healthz", "")


def test_app_settings_are_production_ones_from_the_environment(services):
    for name in ("web", "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@db:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["DJANGO_DEBUG"] == "0"
        # Interpolated at `up` time, never a literal in the file.
        assert re.fullmatch(r"\$\{DJANGO_SECRET_KEY[:?-][^}]*\}", env["DJANGO_SECRET_KEY"])
        assert "127.0.0.1" in env["DJANGO_ALLOWED_HOSTS"]  # the healthcheck's Host
        # Front ends on other origins: the operator's list, nothing by default.
        assert env["CORS_ALLOWED_ORIGINS"] == "${CORS_ALLOWED_ORIGINS:-}"
        assert env["CORS_ALLOW_CREDENTIALS"] == "${CORS_ALLOW_CREDENTIALS:-0}"


def test_docker_compose_accepts_the_file_and_its_variables_agree(docker_engine):
    default = compose_config()
    web, lb = default["services"]["web"], default["services"]["lb"]
    assert web["environment"]["TRUSTED_PROXIES"] == lb["networks"]["default"]["ipv4_address"] == "172.16.80.2"
    assert [(p["host_ip"], p["published"]) for p in lb["ports"]] == [("127.0.0.1", "8080")]
    assert (web["environment"]["GRAPHQL_GRAPHIQL"], web["environment"]["GRAPHQL_INTROSPECTION"]) == ("1", "1")

    moved = compose_config(
        BLOGPUSH_SUBNET_PREFIX="10.213.7", LB_BIND="0.0.0.0", GRAPHQL_GRAPHIQL="0", GRAPHQL_INTROSPECTION="0"
    )
    web, lb = moved["services"]["web"], moved["services"]["lb"]
    assert web["environment"]["TRUSTED_PROXIES"] == lb["networks"]["default"]["ipv4_address"] == "10.213.7.2"
    (ipam,) = moved["networks"]["default"]["ipam"]["config"]
    assert (ipam["subnet"], ipam["ip_range"]) == ("10.213.7.0/24", "10.213.7.128/25")
    assert lb["ports"][0]["host_ip"] == "0.0.0.0"
    assert (web["environment"]["GRAPHQL_GRAPHIQL"], web["environment"]["GRAPHQL_INTROSPECTION"]) == ("0", "0")


# --- the load balancer's config --------------------------------------------------------------


def test_the_config_the_lb_container_runs_passes_haproxy_c(services):
    env = {"PATH": os.environ["PATH"], **services["lb"]["environment"]}
    check = subprocess.run(["haproxy", "-c", "-f", str(HAPROXY_CONFIG)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr


# --- Dockerfile ------------------------------------------------------------------------------


def test_image_is_slim_python_and_runs_as_a_non_root_user():
    stages = instruction_args("FROM")  # the graphiql stage, then the image itself
    assert stages[0] == "python:3.11-slim-bookworm AS graphiql" and len(stages) == 2
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", stages[-1])
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


def test_entrypoint_is_daphne_on_port_8000_in_production_mode_without_proxy_headers():
    (entrypoint,) = instruction_args("ENTRYPOINT")
    assert json.loads(entrypoint) == [
        "python",
        "-m",
        "project.server",  # Daphne's command line with longer connection sweeps
        "-v",
        "0",  # no access log between the app's JSON lines
        "-b",
        "0.0.0.0",
        "-p",
        "8000",
        "project.asgi:application",
    ]
    # Daphne's --proxy-headers would take the left-most X-Forwarded-For entry, which clients write.
    assert "--proxy-headers" not in entrypoint
    assert dockerfile_env()["DJANGO_DEBUG"] == "0"


def test_graphiql_files_are_fetched_and_checked_inside_the_build_never_taken_from_the_tree():
    names = {path.as_posix() for path in build_context_files()}
    assert "scripts/fetch_static_assets.py" in names
    assert not [name for name in names if name.startswith(("static-vendor/", "staticfiles/"))]
    assert not [name for name in names if name.startswith("scripts/") and name != "scripts/fetch_static_assets.py"]
    fetches = [arguments for arguments in instruction_args("RUN") if "fetch_static_assets.py --dest" in arguments]
    assert fetches == ["python /fetch_static_assets.py --dest /static-vendor"]
    assert "--from=graphiql /static-vendor ./static-vendor" in instruction_args("COPY")
    (collect,) = [" ".join(arguments.split()) for arguments in instruction_args("RUN") if "collectstatic" in arguments]
    assert collect.startswith("python scripts/fetch_static_assets.py --check && ")


def test_the_image_healthcheck_passes_on_a_live_instance_and_fails_on_a_closed_port(daphne_server):
    (healthcheck,) = instruction_args("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["bash", "-c"]

    def run_against(port: int) -> int:
        moved = [part.replace("/dev/tcp/127.0.0.1/8000", f"/dev/tcp/127.0.0.1/{port}") for part in command]
        return subprocess.run(moved, capture_output=True, timeout=30).returncode

    assert run_against(daphne_server.port) == 0
    assert run_against(free_port()) != 0


def test_no_secret_is_baked_into_the_image():
    assert "DJANGO_SECRET_KEY" not in dockerfile_env()
    assert not [arguments for arguments in instruction_args("ARG") if "SECRET" in arguments.upper()]
    assert ".env" in DOCKERIGNORE.read_text().split()


def test_the_images_static_files_step_works_on_its_build_context(tmp_path):
    """Replays the image's last RUN line, as the build would, on a copy of the build context plus
    what the graphiql stage copies in (here the folder `make install` fetched, itself checked)."""
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

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    missing = run()  # without GraphiQL's files the step fails instead of shipping a blank GraphiQL
    assert missing.returncode != 0 and "missing or altered" in missing.stderr

    assert damaged(STATIC_VENDOR) == [], "run `make install` (scripts/fetch_static_assets.py) first"
    shutil.copytree(STATIC_VENDOR, tmp_path / "static-vendor")
    result = run()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "staticfiles" / "admin" / "css" / "base.css").exists()
    assert (tmp_path / "staticfiles" / "graphene_django").is_dir()
    assert (tmp_path / "staticfiles" / "graphiql" / "graphiql.min.js").exists()
