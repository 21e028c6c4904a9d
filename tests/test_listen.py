"""`manage.py listen` as an operator runs it: a real subprocess against real Daphne instances."""

import asyncio
import json
import os
import signal
import sys
from contextlib import asynccontextmanager

from blogclient import backoff_delay
from notifications.management.commands.listen import format_event
from stack.services import REPO_ROOT, free_port
from tests.live import LiveApi

STARTUP_TIMEOUT = 30


class Listener:
    """A running `manage.py listen`, its stdout and stderr read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []

    async def line(self, timeout: float = 15) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(self.process.stdout.readline(), timeout)).decode().rstrip("\n")

    async def status(self, containing: str, timeout: float = STARTUP_TIMEOUT) -> str:
        """Wait for a status line on stderr that contains `containing`."""
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stderr.readline()).decode()
                assert line, f"listen exited; stderr so far: {self.stderr}"
                self.stderr.append(line)
                if containing in line:
                    return line

    async def interrupt(self) -> tuple[int | None, str]:
        """Ctrl-C: its exit code and the rest of its stderr."""
        self.process.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(self.process.communicate(), 15)
        return self.process.returncode, "".join(self.stderr) + rest.decode()


@asynccontextmanager
async def listening(env: dict[str, str], *args: str):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "listen",
        *args,
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Listener(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_json_lines_survive_a_server_crash_and_ctrl_c_exits_cleanly(web_env, restartable_server, daphne_server):
    api = LiveApi(daphne_server.url)  # writes go to an instance that stays up
    username, token = api.sign_up()
    async with listening(web_env, "--json", "--author", username, "--url", restartable_server.ws_url) as listener:
        await listener.status("listening on")  # it has read the latest cursor: nothing after it is missed
        first = await asyncio.to_thread(api.create_blog, token, "Before the crash")
        event = json.loads(await listener.line())
        assert event["blog"]["id"] == first["id"]
        assert event["blog"]["author"]["username"] == username
        assert event["cursor"]

        await asyncio.to_thread(restartable_server.kill)
        await listener.status("reconnecting in")
        missed = await asyncio.to_thread(api.create_blog, token, "While it was down")
        await asyncio.to_thread(restartable_server.start)
        await listener.status("listening on")
        assert json.loads(await listener.line())["blog"]["id"] == missed["id"]  # replayed after its cursor

        after = await asyncio.to_thread(api.create_blog, token, "After the restart")
        assert json.loads(await listener.line())["blog"]["id"] == after["id"]

        code, stderr = await listener.interrupt()
        assert listener.process.stdout is not None
        assert (await listener.process.stdout.read()) == b""  # nothing printed twice
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.rstrip().endswith("listen: stopped")


async def test_plain_output_is_one_line_per_blog(live_env, daphne_server):
    api = LiveApi(daphne_server.url)
    username, token = api.sign_up()
    async with listening(live_env, "--author", username, "--url", daphne_server.ws_url) as listener:
        await listener.status("listening on")
        await asyncio.to_thread(api.create_blog, token, "Two\nlines", "Body\nover lines")
        line = await listener.line()
        code, stderr = await listener.interrupt()
    assert line.endswith(f"  {username}: Two lines — Body over lines")
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def test_an_unreachable_server_is_retried_until_ctrl_c(live_env):
    async with listening(live_env, "--url", f"ws://127.0.0.1:{free_port()}/graphql/") as listener:
        await listener.status("cannot connect")
        await listener.status("reconnecting in")
        code, stderr = await listener.interrupt()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_format_event_keeps_one_line_and_shortens_content():
    event = {
        "blog": {
            "publishedAt": "2026-01-02T03:04:05+00:00",
            "title": "A\ntitle",
            "content": "x" * 500,
            "author": {"username": "ada"},
        }
    }
    line = format_event(event)
    assert "\n" not in line
    assert line.startswith("2026-01-02T03:04:05+00:00  ada: A title — xxx")
    assert line.endswith("…")
    assert len(line) < 150


def test_backoff_doubles_up_to_the_ceiling_with_jitter():
    for failures, capped in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0), (50, 30.0)]:
        delays = [backoff_delay(failures, 0.5, 30.0) for _ in range(200)]
        assert all(capped / 2 <= delay <= capped for delay in delays)
        assert len(set(delays)) > 1
