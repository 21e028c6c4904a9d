"""stack/forkserver.py, which starts the test run's instances: a fork runs its module as `python -m`
would start it, its exit reads as Popen's, and no fork outlives its client or the process that
started the server.

Each test runs tests/scripts/process_probe.py, which prints what a process sees of itself, both as
a fresh interpreter and as a fork, from a folder of its own (as an instance runs from its tree).
"""

import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack import forkserver
from stack.services import REPO_ROOT

PROBE = REPO_ROOT / "tests" / "scripts" / "process_probe.py"
ONLY_THE_SERVER_HAS = "FORKSERVER_TEST_SERVER_ONLY"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[forkserver.ForkServer]:
    """A server of this test's own, started with a variable in its environment that no job names."""
    monkeypatch.setenv(ONLY_THE_SERVER_HAS, "1")
    own = forkserver.ForkServer()
    own.spawn("os", [], {}, Path("/"), Path(os.devnull)).wait(30)  # `python -m os` does nothing: started
    monkeypatch.delenv(ONLY_THE_SERVER_HAS)
    yield own
    own.stop()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copy(PROBE, tmp_path / "process_probe.py")
    return tmp_path


def job_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != ONLY_THE_SERVER_HAS}
    return {**env, "PROBE_SETTING": "for this job only", "PYTHONUNBUFFERED": "1"}


def fresh(tree: Path, *args: str) -> tuple[dict[str, Any], int]:
    done = subprocess.run(
        [sys.executable, "-m", "process_probe", *args],
        cwd=tree,
        env=job_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        start_new_session=True,
        timeout=30,
    )
    return json.loads(done.stdout), done.returncode


def forked(server: forkserver.ForkServer, tree: Path, *args: str) -> tuple[dict[str, Any], int]:
    log = tree / f"fork-{time.monotonic_ns()}.log"
    code = server.spawn("process_probe", list(args), job_env(), tree, log).wait(30)
    return json.loads(log.read_text()), code


def test_a_fork_sees_what_a_fresh_python_m_sees(server: forkserver.ForkServer, tree: Path):
    seen_fresh, _ = fresh(tree, "--flag", "value")
    seen_forked, _ = forked(server, tree, "--flag", "value")
    assert seen_forked == seen_fresh
    assert seen_forked["environ"] == job_env()  # exactly the job's: nothing of the server's
    assert seen_forked["cwd"] == seen_forked["path0"] == str(tree)
    assert seen_forked["name"] == "__main__" and seen_forked["argv"] == ["--flag", "value"]
    assert seen_forked["stdin"] == os.devnull and seen_forked["own_session"] and seen_forked["gc_enabled"]
    assert seen_forked["project_modules"] == [] and seen_forked["django_configured"] is False


@pytest.mark.parametrize("how", ["exit 3", "SIGTERM", "SIGKILL"])
def test_a_forks_exit_reads_as_popens(server: forkserver.ForkServer, tree: Path, how: str):
    args = ["--exit", "3"] if how == "exit 3" else ["--sleep"]
    log = tree / "fork.log"
    fork = server.spawn("process_probe", args, job_env(), tree, log)
    popen = subprocess.Popen(
        [sys.executable, "-m", "process_probe", *args], cwd=tree, env=job_env(), stdout=subprocess.PIPE
    )
    if how != "exit 3":
        assert popen.stdout is not None
        popen.stdout.readline()  # started
        while not log.read_text():
            time.sleep(0.01)
        assert fork.poll() is None and popen.poll() is None
        for process in (fork, popen):
            process.terminate() if how == "SIGTERM" else process.kill()
    assert fork.wait(30) == popen.wait(30) == {"exit 3": 3, "SIGTERM": -15, "SIGKILL": -9}[how]
    assert fork.poll() == fork.returncode == popen.returncode


def gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_a_fork_whose_handle_is_dropped_is_killed(server: forkserver.ForkServer, tree: Path):
    fork = server.spawn("process_probe", ["--sleep"], job_env(), tree, tree / "fork.log")
    pid = fork.pid
    os.kill(pid, 0)
    del fork
    gc.collect()
    assert gone(pid)


def test_every_fork_dies_with_the_process_that_started_the_server(tree: Path, request: pytest.FixtureRequest):
    """That process ends without atexit or stop(); the server and its forks go too, and its folder."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from stack import forkserver
        server = forkserver.ForkServer()
        tree = Path({str(tree)!r})
        env = dict(os.environ)
        forks = [server.spawn("process_probe", ["--sleep"], env, tree, tree / f"{{n}}.log") for n in range(3)]
        print(server.pid, *(fork.pid for fork in forks), flush=True)
        sys.stdin.readline()
        os._exit(0)
        """
    )
    temp = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))  # short: a socket's path has at most 107 bytes
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    starter = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "TMPDIR": str(temp)},  # where the server makes its folder
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None and starter.stdin is not None
    server_pid, *fork_pids = (int(pid) for pid in starter.stdout.readline().split())
    for pid in (server_pid, *fork_pids):
        os.kill(pid, 0)  # all running
    starter.stdin.write("\n")
    starter.stdin.flush()
    assert starter.wait(10) == 0
    assert all(gone(pid) for pid in fork_pids)
    assert gone(server_pid)
    assert list(temp.iterdir()) == []  # its folder and socket went with it


def test_a_pid_and_an_exit_code_that_arrive_together_are_read_as_two(server: forkserver.ForkServer):
    """A fork that exits at once may be reaped before its client reads the pid: both lines are then
    in one read, and the client's reader must give them one at a time."""
    job = {"target": "os", "argv": [], "env": {}, "cwd": "/", "log": os.devnull}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(server.socket_path)
        client.sendall(json.dumps(job).encode() + b"\n")
        time.sleep(1)  # `python -m os` has run and been reaped by now
        client.settimeout(10)
        lines = forkserver._Lines(client)
        pid, code = lines.read(), lines.read()
    assert int(pid) > 0 and code == b"0\n"


@pytest.mark.parametrize(
    "request_line",
    [b"not json\n", b'{"target": "x"}\n', b"\n", b'{"target": "os", "argv": [], "env": {}, "cwd": "/", "log": ""}\n'],
    ids=["garbage", "short", "empty", "stdio without its descriptors"],
)
def test_a_bad_request_gets_no_fork_and_the_server_keeps_serving(
    server: forkserver.ForkServer, tree: Path, request_line: bytes
):
    serving = server.pid
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
        bad.connect(server.socket_path)
        bad.sendall(request_line)
        bad.settimeout(10)
        assert bad.recv(64) == b""  # closed, no pid
    seen, code = forked(server, tree)
    assert code == 0 and seen["name"] == "__main__"
    assert server.pid == serving  # the same server


@pytest.mark.parametrize("extra", [(), ("core.database_url",)], ids=["libraries", "and a project module"])
def test_the_server_refuses_to_fork_once_a_preload_imports_the_project(extra: tuple[str, ...]):
    """A library that pulled in the project's own modules would hand every fork a stale copy of them."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[0] = {str(REPO_ROOT / "stack")!r}  # as the server runs: a script in stack/
        sys.path.append({str(REPO_ROOT)!r})  # so that the project could be imported at all
        import forkserver
        forkserver.PRELOAD = (*forkserver.PRELOAD, *{extra!r})
        forkserver.preload()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd="/", capture_output=True, text=True, timeout=60)
    if extra:
        assert done.returncode != 0 and "the project's core.database_url was imported" in done.stderr, done.stderr
    else:
        assert done.returncode == 0, done.stderr


COMMANDS = {
    "module": ["-m", "process_probe"],
    "script": ["process_probe.py"],
    "code": ["-c", "exec(open('process_probe.py').read())"],
}


@pytest.mark.parametrize("form", COMMANDS)
def test_run_answers_as_subprocess_run_does(tree: Path, form: str, monkeypatch: pytest.MonkeyPatch):
    """`forkserver.run` (manage.py commands in the tests) hands the fork the caller's pipes: what it
    reads, what it writes to stdout and to stderr, and its exit code are those of a fresh process
    that subprocess.run captures, and its output ends when the fork does (the server keeps no
    copy of the pipes open)."""
    cmd = [sys.executable, *COMMANDS[form], "--echo", "--exit", "3"]
    env = {**job_env(), "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "")}
    env = {key: value for key, value in env.items() if value}
    assert forkserver.forkable(cmd, env)
    as_fork = forkserver.run(cmd, cwd=tree, env=env, input="from the caller\n", timeout=30)
    monkeypatch.delenv(forkserver.ENABLED)
    assert not forkserver.forkable(cmd, env)
    as_fresh = forkserver.run(cmd, cwd=tree, env=env, input="from the caller\n", timeout=30)

    def seen(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        everything = json.loads(done.stdout)
        # A fork has its own session, as every fork does; subprocess.run's child shares the caller's.
        return {key: value for key, value in everything.items() if key not in ("stdin", "own_session")}

    assert (as_fork.returncode, as_fork.stderr) == (as_fresh.returncode, as_fresh.stderr) == (3, "FROM THE CALLER\n")
    assert seen(as_fork) == seen(as_fresh)
    assert seen(as_fork)["argv"] == ["--echo", "--exit", "3"]


def test_run_kills_a_command_that_outlives_its_timeout(tree: Path):
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run([sys.executable, "-m", "process_probe", "--sleep"], cwd=tree, env=job_env(), timeout=1)
    assert time.monotonic() - began < 10


def test_a_command_that_needs_its_own_interpreter_start_is_not_forked():
    """What only an interpreter's start reads (PYTHONPATH, PYTHONHASHSEED, ...) would be lost on a fork."""
    assert forkserver.forkable([sys.executable, "manage.py", "check"], dict(os.environ))
    assert not forkserver.forkable([sys.executable, "manage.py", "check"], {**os.environ, "PYTHONPATH": "/elsewhere"})
    assert not forkserver.forkable(["/usr/bin/python3", "manage.py", "check"], dict(os.environ))
    assert not forkserver.forkable([sys.executable, "-X", "dev", "manage.py"], dict(os.environ))
