"""A fork server for the instances a test run starts: their libraries imported once, not once each.

A test run starts about a hundred Daphne instances, and most of each start is importing Django,
Twisted, graphql-core, redis-py, psycopg and the rest. With STACK_FORK_SERVER=1 (tests/conftest.py
sets it), each process that starts instances keeps one server process that has imported those
libraries, and every instance is a fork of it that then runs its module as `python -m` would: its
own environment, working directory, session and log, Django set up from its own settings. Only
third-party libraries are imported ahead (never the project's modules, which an instance may load
from another tree), none that reads the settings or the environment on import, and the server is
single-threaded when it forks; it checks all of this before it serves.

One-shot commands (`manage.py migrate`, `check`, `shell`) are forks too, through `run`: the
client sends its own ends of the command's stdin, stdout and stderr with the job (SCM_RIGHTS), so
the fork reads and writes the caller's pipes, as a child of `subprocess.run` would.

The server is the forks' parent: it reaps them and writes each one's exit code (as
`subprocess.Popen.returncode` gives it) to the connection that asked for it. When that connection
closes first, the fork is killed; when the process that started the server goes (its stdin
closes), every fork is. `ForkedProcess` is the client's handle, with the part of `Popen`'s
interface stack/services.py uses. Deployments never use any of this: the image and docker-compose
run `python -m project.server` directly.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENABLED = "STACK_FORK_SERVER"  # set to 1 to start instances as forks
STOP_TIMEOUT = 10.0  # seconds for the server to kill and reap its forks when told to stop

# Imported ahead, in this order. Each is a library an instance imports anyway; none configures
# Django, installs Twisted's reactor (daphne.server does, so it stays out), starts a thread or
# reads the environment when imported (`serve` checks the first three).
PRELOAD = (
    "asyncio",
    "django.db.models",
    "django.contrib.postgres.fields",
    "django.core.handlers.asgi",
    "django.template.loader",
    "graphql",
    "graphene",
    "graphql_relay",
    "channels.generic.websocket",
    "channels_redis.core",
    "redis.asyncio",
    "psycopg",
    "psycopg_pool",
    "aiohttp",
    "msgpack",
    "twisted.internet.protocol",
    "twisted.internet.endpoints",
    "twisted.web.http",
    "twisted.protocols.tls",
    "autobahn.twisted.websocket",
    "prometheus_client",
    "whitenoise.middleware",
    "corsheaders.middleware",
)


STDIO = 3  # descriptors a job without a log sends along: its stdin, stdout and stderr


MODULE, SCRIPT, CODE = (
    "-m",
    "script",
    "-c",
)  # what a job's `target` is: `python -m target`, `python target`, `python -c target`


@dataclass(frozen=True)
class Job:
    """What one fork runs: `python -m target *argv` in `cwd` with exactly `env` (or `python
    target *argv`, or `python -c target *argv`, by `kind`); output appended to `log`, or, when
    `log` is empty, to the STDIO descriptors sent with the job."""

    target: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log: str
    kind: str = MODULE


class _Lines:
    """The lines that come over one connection: a job; then a pid, and later an exit code, which
    may arrive together."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self._buffer = b""

    def read(self, fds: list[int] | None = None) -> bytes:
        """The next line; b"" if the other end closed the connection first. Raises the socket's
        timeout (TimeoutError, or BlockingIOError with none) before a whole line is in. With
        `fds`, the descriptors that come with it are appended there (the caller closes them)."""
        while b"\n" not in self._buffer:
            if fds is None:
                chunk = self.connection.recv(4096)
            else:
                chunk, received, _, _ = socket.recv_fds(self.connection, 4096, STDIO)
                fds.extend(received)
            if not chunk:
                return b""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line + b"\n"


# --- the server -----------------------------------------------------------------------------------


def preload() -> None:
    import importlib

    gc.disable()  # importing leaves next to no garbage; the forks turn the collector on themselves
    for name in PRELOAD:
        importlib.import_module(name)
    from django.conf import settings

    problems = []
    if settings.configured:
        problems.append("Django's settings were configured")
    if "twisted.internet.reactor" in sys.modules:
        problems.append("Twisted's reactor was installed")
    if threading.active_count() != 1:
        problems.append(f"{threading.active_count()} threads run")
    root, prefix = Path(__file__).resolve().parent.parent, Path(sys.prefix).resolve()
    for module in list(sys.modules.values()):
        file = Path(getattr(module, "__file__", None) or "/").resolve()
        if file.is_relative_to(root) and not file.is_relative_to(prefix) and module is not sys.modules[__name__]:
            problems.append(f"the project's {module.__name__} was imported")
    if problems:
        raise SystemExit(f"stack.forkserver: importing {PRELOAD} left it unfit to fork: {'; '.join(problems)}")
    gc.freeze()  # the forks never touch these objects' collector headers: their pages stay shared


def serve(path: str) -> tuple[Job, list[int]]:
    """Serve on the Unix socket `path` until stdin closes; returns only in a fork, with its job
    and the descriptors that came with it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound under another name and renamed once listening: a client that finds `path` can connect.
    listener.bind(f"{path}.binding")
    listener.listen(64)
    os.rename(f"{path}.binding", path)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_write)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_read, selectors.EVENT_READ, "reap")
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "parent")
    forks: dict[int, socket.socket | None] = {}  # pid -> the connection that asked for it, while open

    def reap() -> None:
        while forks:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            connection = forks.pop(pid, None)
            if connection is not None:
                selector.unregister(connection)
                with contextlib.suppress(OSError):
                    connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                connection.close()

    def kill(pid: int) -> None:
        # The fork itself too: it may not have made its session (and group) yet.
        for kill_one in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError):
                kill_one(pid, signal.SIGKILL)

    while True:
        for key, _ in selector.select():
            if key.data == "accept":
                connection, _ = listener.accept()
                connection.settimeout(10)
                fds: list[int] = []
                try:
                    job = Job(**json.loads(_Lines(connection).read(fds)))
                    if len(fds) != (0 if job.log else STDIO):
                        raise ValueError(
                            f"{len(fds)} descriptors came with a job that takes {STDIO if not job.log else 0}"
                        )
                    pid = os.fork()
                except (OSError, ValueError, TypeError) as error:  # the client reads "" and says so
                    print(f"stack.forkserver: no fork: {error!r}", file=sys.stderr)
                    _close(fds)
                    connection.close()
                    continue
                if pid == 0:  # the fork: leave every part of the server behind
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for open_socket in (listener, connection, *filter(None, forks.values())):
                        open_socket.close()
                    selector.close()
                    os.close(wake_read)
                    os.close(wake_write)
                    os.setsid()
                    return job, fds
                _close(fds)  # the fork's now: held here, a pipe would never reach end of file
                connection.sendall(f"{pid}\n".encode())
                forks[pid] = connection
                selector.register(connection, selectors.EVENT_READ, pid)
            elif key.data == "reap":
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
                reap()
            elif isinstance(key.data, int):  # fork key.data's client went away (or wrote, which it never does)
                gone = key.fileobj
                assert isinstance(gone, socket.socket)
                kill(key.data)
                selector.unregister(gone)
                forks[key.data] = None
                gone.close()
            elif not os.read(sys.stdin.fileno(), 512):  # the process that started us is gone
                for pid in list(forks):
                    kill(pid)
                for pid in list(forks):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                shutil.rmtree(os.path.dirname(path), ignore_errors=True)
                raise SystemExit(0)


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def become(job: Job, fds: list[int]) -> None:
    """Turn this fork into the `python` command `job` stands for, as a fresh process would start it."""
    if job.log:
        log = os.open(job.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fds = [os.open(os.devnull, os.O_RDONLY), log, log]
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    _close(list(set(fds)))
    os.chdir(job.cwd)
    os.environ.clear()
    os.environ.update(job.env)
    gc.enable()
    import runpy

    # sys.path[0] and sys.argv as each form of the command sets them.
    if job.kind == SCRIPT:
        sys.path[0] = os.path.dirname(os.path.abspath(job.target))
        sys.argv = [job.target, *job.argv]
        runpy.run_path(job.target, run_name="__main__")
    elif job.kind == CODE:
        sys.path[0] = ""
        sys.argv = ["-c", *job.argv]
        import __main__

        exec(compile(job.target, "<string>", "exec"), __main__.__dict__)
    else:
        sys.path[0] = os.getcwd()
        sys.argv = [job.target, *job.argv]
        runpy.run_module(job.target, run_name="__main__", alter_sys=True)


def main() -> None:
    preload()
    become(*serve(sys.argv[1]))


# --- the client -----------------------------------------------------------------------------------


class ForkedProcess:
    """A fork of the server, seen through the part of `subprocess.Popen` that stack/services.py uses."""

    def __init__(self, lines: _Lines, pid: int, args: list[str]) -> None:
        self._lines = lines
        self._lock = threading.Lock()
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self._read_exit(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._read_exit(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _read_exit(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is None:
                self._lines.connection.settimeout(timeout)
                try:
                    line = self._lines.read()
                except (TimeoutError, BlockingIOError):
                    return None
                if not line:
                    raise ChildProcessError(f"stack.forkserver went away before pid {self.pid} exited")
                self.returncode = int(line)
                self._lines.connection.close()
            return self.returncode


class ForkServer:
    """The server this process started, started on first use; stopped when this process exits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._path = ""
        self._log = ""
        atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        """The server's process id, once started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def socket_path(self) -> str:
        """Where the server listens, once started."""
        return self._path

    def spawn(
        self,
        module: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        log: Path | None,
        *,
        kind: str = MODULE,
        stdio: tuple[int, int, int] | None = None,
    ) -> ForkedProcess:
        """A fork running `python -m module *argv` (`kind` SCRIPT or CODE: `python module` or
        `python -c module`), its output appended to `log`, or else reading and writing `stdio`
        (stdin, stdout, stderr: the caller's to close once sent)."""
        assert (log is None) == (stdio is not None), "a log, or the three descriptors"
        path = self._started()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(path)
        job = Job(module, list(argv), dict(env), str(cwd), str(log or ""), kind)
        socket.send_fds(connection, [json.dumps(job.__dict__).encode() + b"\n"], list(stdio or ()))
        connection.settimeout(30)
        lines = _Lines(connection)
        line = lines.read()
        if not line:
            raise RuntimeError(f"stack.forkserver did not fork {module}: see {self._log}")
        command = [module] if kind == SCRIPT else [kind, module]
        return ForkedProcess(lines, int(line), [sys.executable, *command, *argv])

    def _started(self) -> str:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                folder = tempfile.mkdtemp(prefix="stack-forkserver-")
                self._path = os.path.join(folder, "socket")
                self._log = os.path.join(folder, "forkserver.log")
                with open(self._log, "ab") as log:
                    # Run as a script, not `-m stack.forkserver`: the `stack` package would import
                    # project modules into every fork.
                    self._proc = subprocess.Popen(
                        [sys.executable, __file__, self._path],
                        stdin=subprocess.PIPE,  # never written: its end closing tells the server we are gone
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                while not os.path.exists(self._path):
                    if self._proc.poll() is not None:
                        tail = Path(self._log).read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"stack.forkserver exited with code {self._proc.returncode}:\n{tail}")
                    time.sleep(0.01)
            return self._path

    def stop(self) -> None:
        """Stop the server, and with it every fork still running; remove its folder."""
        with self._lock:
            if self._proc is not None:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                try:
                    self._proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                shutil.rmtree(os.path.dirname(self._path), ignore_errors=True)
                self._proc = None


_server = ForkServer()


def enabled() -> bool:
    return os.environ.get(ENABLED) == "1"


def spawn(module: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> ForkedProcess:
    """`python -m module *argv` as a fork of this process's server."""
    return _server.spawn(module, argv, env, cwd, log)


def forkable(cmd: list[str], env: Mapping[str, str]) -> bool:
    """Whether `cmd` may run as a fork: this interpreter, on a module (-m), code (-c) or a
    script, and nothing in `env` that only an interpreter's start reads (a fork's has started)."""
    if not enabled() or len(cmd) < 2 or cmd[0] != sys.executable:
        return False
    if any(name.startswith("PYTHON") and env.get(name) != os.environ.get(name) for name in {*env, *os.environ}):
        return False
    return (cmd[1] in (MODULE, CODE) and len(cmd) > 2) or not cmd[1].startswith("-")


def run(
    cmd: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    input: str | None = None,
    timeout: float | None = None,
    merge_stderr: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(cmd, capture_output=True, text=True)` (stderr into stdout with
    `merge_stderr`; stdin `input`, or nothing), as a fork of this process's server when
    `forkable(cmd, env)`, else as a subprocess. Raises subprocess.TimeoutExpired, with the
    command killed, after `timeout` seconds."""
    if not forkable(cmd, env):
        return subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            timeout=timeout,
            text=True,
        )
    kind, target, argv = (cmd[1], cmd[2], cmd[3:]) if cmd[1] in (MODULE, CODE) else (SCRIPT, cmd[1], cmd[2:])
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = (stdout_read, stdout_write) if merge_stderr else os.pipe()
    try:
        fork = _server.spawn(
            target, argv, dict(env), cwd, None, kind=kind, stdio=(stdin_read, stdout_write, stderr_write)
        )
    finally:
        _close(list({stdin_read, stdout_write, stderr_write}))
    outputs: dict[int, list[bytes]] = {fd: [] for fd in {stdout_read, stderr_read}}

    def drain(fd: int) -> None:
        with open(fd, "rb", closefd=True) as stream:
            outputs[fd].append(stream.read())

    def feed() -> None:
        with open(stdin_write, "wb", closefd=True) as stream, contextlib.suppress(BrokenPipeError):
            stream.write((input or "").encode())

    workers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in outputs]
    workers.append(threading.Thread(target=feed, daemon=True))
    for worker in workers:
        worker.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for worker in workers:
        worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    try:
        code = fork.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(worker.is_alive() for worker in workers):  # its output is held open by a child of its own
            raise subprocess.TimeoutExpired(cmd, timeout or 0)
    except subprocess.TimeoutExpired:
        fork.kill()
        fork.wait()
        raise

    def text(fd: int) -> str:
        return b"".join(outputs[fd]).decode(errors="replace")

    return subprocess.CompletedProcess(cmd, code, text(stdout_read), None if merge_stderr else text(stderr_read))


if __name__ == "__main__":
    main()
