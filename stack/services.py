"""Real Redis, PostgreSQL, Daphne and HAProxy processes on free loopback ports.

Tests and `make stack` run the same multi-instance deployment as
docker-compose, but natively: every service is a child process started here,
in its own session (so Ctrl-C in a terminal reaches only us, and a stuck
service can be killed as a process group), logging to a file in its own
temporary directory. Nothing here ever signals a process it did not start.

Set STACK_KEEP_TMP=1 to keep the temporary directories (and logs) after
`stop()` for a post-mortem.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol, Self

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.database_url import database_settings
from stack import forkserver

REPO_ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = REPO_ROOT / "deploy" / "haproxy.cfg"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# An instance that answers /readyz is back in HAProxy's rotation within two checks a second apart
# (deploy/haproxy.cfg: rise 2, inter 1s); this leaves room for one that is still starting.
ROTATION_TIMEOUT = 20.0

# urllib honours http_proxy & co.; loopback checks must never go through one.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(RuntimeError):
    """A service failed to start or a setup step failed; the message has its log tail."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Process(Protocol):
    """A service's process: a `subprocess.Popen`, or a fork of the test run's fork server."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    proc: Process | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `predicate` until it is true.

    Fails fast if `proc` exits meanwhile, and puts the tail of `log_path`
    into the error, so a broken start explains itself in the test output.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            problem = f"{what}: process exited with code {proc.returncode}"
        elif time.monotonic() > deadline:
            problem = f"timed out after {timeout:g}s waiting for {what}"
        else:
            time.sleep(0.05)
            continue
        raise StackError(f"{problem}\n--- {log_path}:\n{log_tail(log_path)}")


def http_ok(url: str) -> bool:
    """True if GET `url` answers 200."""
    try:
        with _direct.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, reset, timeout, HTTP errors (URLError is an OSError)
        return False


def remove_tmp(path: Path) -> None:
    if not os.environ.get("STACK_KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)


class Service:
    """One long-running child process that we own, plus its temp dir and log.

    Subclasses implement `start()` with `_spawn()` and `_wait_ready()`.
    """

    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stack-{name}-"))
        self.log_path = self.tmp / f"{name}.log"
        self._proc: Process | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid}>"

    def __enter__(self) -> Self:
        """Start; stopped again on leaving, also when starting fails halfway."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM without waiting (graceful shutdown; see `wait()`)."""
        if self.running:
            assert self._proc is not None
            self._proc.terminate()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to exit; its exit code (None if never started)."""
        return self._proc.wait(timeout) if self._proc else None

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it: a crash, no shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            # Not reaped yet, so the group id is still ours even if it just exited.
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def freeze(self) -> None:
        """SIGSTOP the process group: it keeps its sockets but answers nothing (a hung peer)."""
        if self.running:
            assert self._proc is not None
            os.killpg(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze()`."""
        if self.running:
            assert self._proc is not None
            os.killpg(self._proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again with the same port and temp dir."""
        self._halt()
        self.start()

    def stop(self) -> None:
        """Stop the process and remove the temp dir. Idempotent."""
        self._halt()
        remove_tmp(self.tmp)

    def _halt(self) -> None:
        """Graceful stop signal, then SIGKILL to the group if it does not exit."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(self.stop_signal)
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def _spawn(self, cmd: list[str], **popen_kwargs: Any) -> None:
        """Start `cmd` in a new session, stdout and stderr appended to the log."""
        if self.running:
            raise StackError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"--- {stamp} $ {shlex.join(cmd)}\n".encode())
            log.flush()
            if forkserver.enabled() and cmd[:2] == [sys.executable, "-m"]:
                env = popen_kwargs.get("env", os.environ)
                self._proc = forkserver.spawn(
                    cmd[2], cmd[3:], dict(env), popen_kwargs.get("cwd", Path.cwd()), self.log_path
                )
                return
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen_kwargs,
            )

    def _run(self, cmd: list[str], **run_kwargs: Any) -> None:
        """Run a setup command to completion, output to the log; raise on failure."""
        with self.log_path.open("ab") as log:
            log.write(f"--- $ {shlex.join(cmd)}\n".encode())
            log.flush()
            code = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **run_kwargs
            ).returncode
        if code:
            raise StackError(
                f"{self.name}: {cmd[0]} exited with code {code}\n--- {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def _wait_ready(self, predicate: Callable[[], bool], what: str) -> None:
        wait_for(
            predicate,
            START_TIMEOUT,
            f"{self.name}: {what}",
            proc=self._proc,
            log_path=self.log_path,
        )


def redis_client(port: int, password: str | None = None, *, db: int = 0) -> redis.Redis:
    """A client for one redis-server or sentinel we started, for checks: no retries, short timeouts."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        db=db,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def redis_pings(port: int, password: str | None = None) -> bool:
    try:
        with redis_client(port, password) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


class RedisServer(Service):
    """A throwaway, non-persistent redis-server (channel layer and cache).

    With `replica_of` (the port of a master on 127.0.0.1) it starts as that master's replica;
    change the attribute before `start()` to rejoin a killed node under a new master.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        name: str = "redis",
        password: str | None = None,
        replica_of: int | None = None,
    ) -> None:
        super().__init__(name)
        self.port = port or free_port()
        self.password = password
        self.replica_of = replica_of

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis_client(self.port, self.password)

    def start(self) -> None:
        # --save '' and --appendonly no: a restart loses all data, like a crash.
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        # A replica is synced as soon as it asks, not after 5 s spent waiting for others to ask too.
        cmd += ["--repl-diskless-sync-delay", "0", "--dir", str(self.tmp)]
        if self.password:
            # masterauth too: any node may be a replica of another after a failover.
            cmd += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self._spawn(cmd)
        self._wait_ready(lambda: redis_pings(self.port, self.password), "PING")


def pg_bindir() -> Path:
    """Directory of initdb/postgres: Debian keeps them off PATH, one dir per major version."""
    candidates = []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidates.append(Path(out.stdout.strip()))
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    raise StackError("PostgreSQL server binaries not found (apt-get install postgresql)")


class PostgresCluster(Service):
    """A throwaway PostgreSQL cluster with database `blog` owned by superuser `blog`.

    initdb and postgres refuse to run as root, so as root the temp dir is
    handed to the `postgres` system user and the server processes run as it
    (Popen's user/group, which also drops root's supplementary groups).
    """

    # SIGINT is PostgreSQL's "fast" shutdown, what `pg_ctl stop -m fast` sends.
    stop_signal = signal.SIGINT

    def __init__(self, port: int | None = None, *, name: str = "postgres") -> None:
        self.bindir = pg_bindir()  # before the temp dir exists, so a failure leaks nothing
        super().__init__(name)
        self.port = port or free_port()
        self.data_dir = self.tmp / "data"
        self.socket_dir = self.tmp / "run"
        self.socket_dir.mkdir()
        self._as_owner: dict[str, Any] = {"cwd": self.tmp}
        if os.geteuid() == 0:
            self._as_owner |= {"user": "postgres", "group": "postgres", "extra_groups": []}
            for path in (self.tmp, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://blog@127.0.0.1:{self.port}/blog"

    def start(self) -> None:
        first_start = not self.data_dir.exists()
        if first_start:
            self._init_cluster()
        self._spawn([str(self.bindir / "postgres"), "-D", str(self.data_dir)], **self._as_owner)
        self._wait_ready(self._accepting, "pg_isready")
        if first_start:
            self._run([str(self.bindir / "createdb"), *self._client_args(), "blog"])

    def _init_cluster(self) -> None:
        # -U blog makes `blog` the bootstrap superuser, so no extra role is needed.
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "blog",
                "--auth=trust",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            **self._as_owner,
        )
        # Trust only the private socket dir and 127.0.0.1 (streaming to a standby too); durability
        # off for speed (a standby's synchronous commit is switched on where one is attached).
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# stack.PostgresCluster\n"
                f"listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def _client_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "blog"]

    def _accepting(self) -> bool:
        check = [str(self.bindir / "pg_isready"), "-q", *self._client_args(), "-d", "postgres"]
        return subprocess.run(check, stdin=subprocess.DEVNULL).returncode == 0


class DaphneInstance(Service):
    """One Daphne process serving project.asgi:application, named for the logs."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        port: int | None = None,
        cwd: Path = REPO_ROOT,
        server_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name)
        self.env = dict(env)
        self.port = port or free_port()
        self.cwd = Path(cwd)
        self.server_args = server_args  # more of Daphne's options (e.g. --ping-interval)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql/"

    def start(self) -> None:
        env = {**os.environ, **self.env, "INSTANCE_NAME": self.name, "PYTHONUNBUFFERED": "1"}
        self._spawn(
            # No --proxy-headers (project.server refuses it): the client address behind the balancer comes
            # from TRUSTED_PROXIES. -v 0: no Daphne access log; the app logs each request itself.
            [
                sys.executable,
                "-m",
                "project.server",  # Daphne's command line (project/server.py)
                "-v",
                "0",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                *self.server_args,
                "project.asgi:application",
            ],
            env=env,
            cwd=self.cwd,
        )
        self._wait_ready(lambda: http_ok(f"{self.url}/healthz"), "GET /healthz")


def start_all(instances: list[DaphneInstance]) -> None:
    """Start them side by side: each spends most of its start importing Django."""
    with ThreadPoolExecutor(max_workers=len(instances) or 1) as pool:
        list(pool.map(DaphneInstance.start, instances))


def stop_all(instances: list[DaphneInstance]) -> None:
    """Stop them side by side: each drains its connections on SIGTERM before it exits."""
    with ThreadPoolExecutor(max_workers=len(instances) or 1) as pool:
        list(pool.map(DaphneInstance.stop, instances))


@contextmanager
def running(instances: list[DaphneInstance]) -> Iterator[list[DaphneInstance]]:
    """`instances`, started together and stopped together on the way out, whatever happened."""
    try:
        start_all(instances)
        yield instances
    finally:
        stop_all(instances)


class HAProxy(Service):
    """HAProxy balancing over Daphne instances by their /readyz, with deploy/haproxy.cfg.

    The config is the one docker-compose runs; only its `server-template` lines (Docker's DNS) are
    replaced by one `server` line per instance port here, and LB_LISTEN names the loopback port.
    """

    def __init__(
        self,
        upstream_ports: list[int],
        port: int | None = None,
        config: Path = HAPROXY_CONFIG,
    ) -> None:
        super().__init__("haproxy")
        self.upstream_ports = list(upstream_ports)
        self.port = port or free_port()
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql/"

    def start(self) -> None:
        self._spawn(self._command(), env=self._env())
        self._wait_ready(lambda: http_ok(f"{self.url}/healthz"), "GET /healthz through haproxy")

    def check_config(self) -> None:
        """`haproxy -c` on the config `start()` would run; StackError with HAProxy's complaint."""
        self._run([*self._command(), "-c"], env=self._env())

    def wait_in_rotation(self, timeout: float = ROTATION_TIMEOUT) -> None:
        """Until every instance has served a request through the balancer: round robin hands them
        to each server in rotation in turn, and the log names the server of each request."""
        mark = self.log_path.stat().st_size
        # The request log's "<frontend> <backend>/<server> " (log-format's "%ft %b/%s").
        waiting = {f"http web/{self.server_name(port)} ".encode() for port in self.upstream_ports}
        deadline = time.monotonic() + timeout
        while True:
            http_ok(f"{self.url}/healthz")
            served = self.log_path.read_bytes()[mark:]
            waiting = {server for server in waiting if server not in served}
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = sorted(server.decode().split("/")[1].strip() for server in waiting)
                raise StackError(f"{self.name}: not in rotation within {timeout:g}s: {', '.join(names)}")
            time.sleep(0.05)

    def server_name(self, port: int) -> str:
        """The name HAProxy's log and state use for the instance on `port`."""
        return f"web-{self.upstream_ports.index(port) + 1}"

    def render_config(self) -> str:
        """The shared config with one `server` line per instance for each DNS template, keeping
        the template's name prefix and its `check` and `backup` flags."""

        def servers(template: re.Match[str]) -> str:
            prefix = template.group(1)
            flags = "".join(f" {flag}" for flag in ("check", "backup") if re.search(rf"\s{flag}\b", template.group(0)))
            return "\n".join(
                f"    server {prefix}-{number} 127.0.0.1:{port}{flags}"
                for number, port in enumerate(self.upstream_ports, start=1)
            )

        text, count = re.subn(r"^\s*server-template (\S+) .*$", servers, self.config.read_text(), flags=re.MULTILINE)
        if not count:
            raise StackError(f"{self.config}: no server-template line to replace")
        return text

    def _command(self) -> list[str]:
        config = self.tmp / "haproxy.cfg"
        config.write_text(self.render_config())
        # -db: stay in the foreground, log to our log file (the config logs to stdout).
        return ["haproxy", "-db", "-f", str(config)]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "LB_LISTEN": f"127.0.0.1:{self.port}"}


def manage(env: Mapping[str, str], *args: str, cwd: Path = REPO_ROOT) -> None:
    """Run a one-shot `manage.py` command with the stack's settings; StackError if it fails."""
    _run_checked([sys.executable, "manage.py", *args], f"manage.py {args[0]}", cwd=cwd, env={**os.environ, **env})


def _run_checked(
    cmd: list[str],
    what: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> None:
    """Run `cmd` to completion; StackError with the tail of its output if it fails."""
    result = forkserver.run(cmd, cwd=cwd or Path.cwd(), env=env or os.environ, timeout=timeout, merge_stderr=True)
    if result.returncode:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        raise StackError(f"{what} exited with code {result.returncode}:\n{tail}")


def production_env(database_url: str, redis_url: str) -> dict[str, str]:
    """Production settings as every instance here runs them: DEBUG off, a fresh secret, plain HTTP on loopback.

    An empty `redis_url` leaves REDIS_URL out (the caller sets REDIS_SENTINELS & co. instead).
    """
    redis_env = {"REDIS_URL": redis_url} if redis_url else {}
    return {
        "DATABASE_URL": database_url,
        **redis_env,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
    }


class _OncePerProcess:
    """A folder made once per process on first use, shared by every later caller, removed at exit.

    For what the code alone decides (the migrated schema, the collected static files): a stack
    started after the first reuses the result instead of a `manage.py` run of its own, which is a
    Django start and seconds of CPU for the same output.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lock = threading.Lock()
        self.path: Path | None = None

    def get(self, make: Callable[[Path], None]) -> Path:
        with self.lock:
            if self.path is None:
                folder = Path(tempfile.mkdtemp(prefix=self.prefix))
                try:
                    make(folder)
                except BaseException:
                    remove_tmp(folder)
                    raise
                atexit.register(remove_tmp, folder)
                self.path = folder
            return self.path


def _sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite DATABASE_URL with an absolute path, read as the servers read it; None
    for anything else."""
    if not database_url:
        return None
    database = database_settings(database_url)
    path = Path(database["NAME"])
    return path if database["ENGINE"] == "django.db.backends.sqlite3" and path.is_absolute() else None


_migrated_sqlite = _OncePerProcess("stack-migrated-")
_migrated_postgres = _OncePerProcess("stack-migrated-pg-")
_collected_static = _OncePerProcess("stack-static-")


def migrate(env: Mapping[str, str], cwd: Path = REPO_ROOT) -> None:
    """Apply Django migrations once, before any instance starts.

    A new SQLite file starts as a copy of the first one this process migrated, and an empty
    PostgreSQL database as a restore of the first empty one it migrated (the same code migrates
    to the same schema and rows); anything else is migrated by `manage.py migrate`.
    """
    url = env.get("DATABASE_URL", "")
    if cwd == REPO_ROOT and _postgres_url(url) and _postgres_empty(url):
        _migrate_empty_postgres(env, url)
        return
    target = _sqlite_file(url)
    if target is None or target.exists() or cwd != REPO_ROOT:
        manage(env, "migrate", "--noinput", cwd=cwd)
        return

    def make(folder: Path) -> None:
        manage({**env, "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}"}, "migrate", "--noinput")

    template = _migrated_sqlite.get(make) / "db.sqlite3"
    # SQLite's backup API, not a file copy: it reads a consistent database, write-ahead log included.
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)


def _postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _postgres_empty(url: str) -> bool:
    """Whether the database holds no table, view or sequence of its own yet; False when it cannot
    be asked, so that `manage.py migrate` tries and reports the problem in Django's words."""
    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
            ).fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] == 0


def _migrate_empty_postgres(env: Mapping[str, str], url: str) -> None:
    """The first empty database is migrated by `manage.py migrate` and dumped (pg_dump: schema,
    rows and sequence positions); every later one is that dump, restored in one transaction."""
    migrated_here = False

    def make(folder: Path) -> None:
        nonlocal migrated_here
        manage(env, "migrate", "--noinput")
        migrated_here = True
        _pg_tool("pg_dump", "--no-owner", "--no-privileges", "--file", str(folder / "migrated.sql"), url)

    dump = _migrated_postgres.get(make) / "migrated.sql"
    if not migrated_here:
        _pg_tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", str(dump), url)


def _pg_tool(name: str, *args: str) -> None:
    _run_checked([str(pg_bindir() / name), *args], name, timeout=120)


def shared_static_root(env: Mapping[str, str]) -> Path:
    """Static files collected once in this process (with env's settings), for every instance it
    starts: what collectstatic gathers depends on the code, not on a stack's settings, and the
    instances only read it."""
    return _collected_static.get(lambda folder: collectstatic({**env, "DJANGO_STATIC_ROOT": str(folder)}))


def collectstatic(env: Mapping[str, str], cwd: Path = REPO_ROOT) -> None:
    """Collect static files into env's DJANGO_STATIC_ROOT, as the image build does.

    With DEBUG off, whitenoise serves only collected files: without them GraphiQL's
    graphiql.js and the admin's CSS would be 404s.
    """
    manage(env, "collectstatic", "--noinput", cwd=cwd)
