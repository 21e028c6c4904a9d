"""`manage.py listen` as an operator runs it: a real subprocess against real Daphne instances."""

import asyncio
import json
import os
import signal
import sys
from contextlib import asynccontextmanager

from blogclient import BlogListener, backoff_delay
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
async def listening(env: dict[str, str], *args: str, sigint_ignored: bool = False):
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
        # As a parent that ignores Ctrl-C (nohup-like launchers, some process managers) starts it.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
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


async def test_ctrl_c_stops_it_even_when_started_with_sigint_ignored(live_env):
    url = f"ws://127.0.0.1:{free_port()}/graphql/"
    async with listening(live_env, "--url", url, sigint_ignored=True) as listener:
        await listener.status("reconnecting in")
        code, stderr = await listener.interrupt()
    assert code == 0 and "listen: stopped" in stderr, stderr


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


async def test_listen_changes_prints_one_line_per_change_with_its_kind(live_env, daphne_servers):
    api = LiveApi(daphne_servers[2].url)
    username, token = api.sign_up()
    update = 'mutation U($id: ID!) { updateBlog(input: {id: $id, title: "Renamed"}) { blog { id } } }'
    delete = "mutation D($id: ID!) { deleteBlog(input: {id: $id}) { deletedId } }"
    url = daphne_servers[0].ws_url
    async with listening(live_env, "--changes", "--author", username, "--url", url) as listener:
        await listener.status("listening on")
        blog = await asyncio.to_thread(api.create_blog, token, "Listed", "Its text")
        await asyncio.to_thread(api.post, update, {"id": blog["id"]}, token)
        await asyncio.to_thread(api.post, delete, {"id": blog["id"]}, token)
        lines = [await listener.line() for _ in range(3)]
        assert lines[0].startswith("CREATED ") and f"{username}: Listed — Its text" in lines[0]
        assert lines[1].startswith("UPDATED ") and f"{username}: Renamed — Its text" in lines[1]
        assert lines[2].startswith("DELETED ") and lines[2].endswith(blog["id"])
        code, _ = await listener.interrupt()
        assert code == 0


async def test_blog_listener_follows_blog_changed(daphne_servers):
    api = LiveApi(daphne_servers[1].url)
    username, token = api.sign_up()
    listener = BlogListener(daphne_servers[0].ws_url, username, changes=True)
    events = listener.events()
    first = asyncio.ensure_future(anext(events))
    while listener.last_cursor is None:  # subscribed after the latest cursor: nothing after it is missed
        await asyncio.sleep(0.05)
    blog = await asyncio.to_thread(api.create_blog, token, "Followed")
    await asyncio.to_thread(
        api.post, "mutation D($id: ID!) { deleteBlog(input: {id: $id}) { deletedId } }", {"id": blog["id"]}, token
    )
    created = await asyncio.wait_for(first, 15)
    deleted = await asyncio.wait_for(anext(events), 15)
    await events.aclose()
    assert (created["kind"], created["blogId"], created["blog"]["title"]) == ("CREATED", blog["id"], "Followed")
    assert (deleted["kind"], deleted["blogId"], deleted["blog"]) == ("DELETED", blog["id"], None)
    assert listener.last_cursor == deleted["cursor"]
