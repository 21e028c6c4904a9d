"""The files one blog crosses, from the createBlog resolver to the bytes on a subscriber's socket.

    .venv/bin/python -m scripts.blog_path

Starts one instance (`python -m project.server`, SQLite, the in-memory channel layer) under a
profiler that records every call into a file of this repository, subscribes over a websocket,
sends createBlog over HTTP and stops recording when the subscriber has the frame. It prints the
project files in the order the blog first reaches them, and every call from a file back into one
the blog reached earlier and whose module imports the caller's (a trip back up: a callback into a
floor above; a call into a type or a helper the blog met before is not one). In the request's
thread only what runs under the resolver counts: the middleware around it is not the blog's path.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where the blog's path starts in the request's thread: the resolver, and the after-commit
# callbacks the transaction runs (inside the resolver, or after it when the request is atomic).
ENTRIES = {("api/schema.py", "mutate"), ("notifications/publishing/events.py", "run")}
loop_thread = threading.main_thread().ident  # Daphne's reactor and event loop
CREATE_AUTHOR = 'mutation { createAuthor(input: {username: "path", password: "a long pass phrase"}) { token } }'
CREATE_BLOG = 'mutation { createBlog(input: {title: "One blog", content: "Its path."}) { blog { id } } }'


def _project_file(filename: str) -> str | None:
    path = Path(filename)
    if not path.is_absolute() or REPO not in path.parents:
        return None
    relative = path.relative_to(REPO).as_posix()
    # project/ is the server and the HTTP handler: they carry the request, not the blog.
    if relative.startswith((".venv/", "tests/", "scripts/", "project/")):
        return None
    return relative


def serve() -> None:
    """The instance, run under the profiler (the child process)."""
    calls: list[tuple[str, str, str | None]] = []
    request_threads: dict[int, set[int]] = {}  # thread -> ids of the entry frames it is inside
    recording = threading.Event()

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event not in ("call", "return") or not recording.is_set():
            return
        here = _project_file(frame.f_code.co_filename)
        if here is None:
            return
        thread = threading.get_ident()
        if (here, frame.f_code.co_name) in ENTRIES:
            inside = request_threads.setdefault(thread, set())
            (inside.add if event == "call" else inside.discard)(id(frame))
        if event == "return":
            return
        if thread in request_threads and not request_threads[thread] and thread != loop_thread:
            return  # the request's thread outside the resolver: middleware, not the blog's path
        caller, back = None, frame.f_back
        for _ in range(40):
            if back is None:
                break
            caller = _project_file(back.f_code.co_filename)
            if caller is not None:
                break
            back = back.f_back
        calls.append((here, frame.f_code.co_name, caller))

    def start(*_: object) -> None:
        calls.clear()
        recording.set()

    def dump(*_: object) -> None:
        recording.clear()
        Path(os.environ["BLOG_PATH_OUT"]).write_text(json.dumps(calls))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    threading.setprofile(profile)
    sys.setprofile(profile)
    port = os.environ["BLOG_PATH_PORT"]
    sys.argv = ["project.server", "-v", "0", "-b", "127.0.0.1", "-p", port, "project.asgi:application"]
    import runpy

    runpy.run_module("project.server", run_name="__main__")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, query: str, variables: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps({"query": query, "variables": variables}).encode(), headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def measure() -> None:
    import websockets
    from websockets.typing import Origin, Subprotocol

    workdir = Path(tempfile.mkdtemp(prefix="blog-path-"))
    port = _free_port()
    out = workdir / "calls.json"
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_URL": "",
        "BLOG_PATH_PORT": str(port),
        "BLOG_PATH_OUT": str(out),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
    child = subprocess.Popen([sys.executable, "-m", "scripts.blog_path", "--serve"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}/graphql/"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        signup = _post(url, CREATE_AUTHOR, {})
        token = signup["data"]["createAuthor"]["token"]
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/graphql/",
            subprotocols=[Subprotocol("graphql-transport-ws")],
            origin=Origin(f"http://127.0.0.1:{port}"),
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            await ws.recv()
            subscribe = "subscription { blogPublished { cursor blog { title } } }"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": subscribe}}))
            await asyncio.sleep(1)
            child.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.5)
            create = CREATE_BLOG
            await asyncio.to_thread(_post, url, create, {}, token)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "next", frame
            child.send_signal(signal.SIGUSR2)
        for _ in range(100):
            if out.exists():
                break
            await asyncio.sleep(0.1)
    finally:
        child.terminate()
        child.wait(10)
        calls = json.loads(out.read_text()) if out.exists() else None
        shutil.rmtree(workdir, ignore_errors=True)
    if calls is None:
        raise SystemExit("the instance wrote no trace: see its output above")
    report(calls)


def report(calls: list[list]) -> None:
    first = next(i for i, (here, name, _) in enumerate(calls) if (here, name) in ENTRIES)
    imports = _imports()
    order: list[str] = []
    back_up: set[tuple[str, str, str]] = set()
    for here, name, caller in calls[first:]:
        if here not in order:
            order.append(here)
        if caller in order and order.index(here) < order.index(caller) and caller in imports.get(here, ()):
            back_up.add((caller, here, name))
    print(f"{len(order)} files on the path of one blog:")
    for name in order:
        print(f"  {name}")
    print(f"{len(back_up)} calls back up (caller -> callee.function):")
    for caller, callee, function in sorted(back_up):
        print(f"  {caller} -> {callee}.{function}")


def _imports() -> dict[str, set[str]]:
    """file -> every project file it imports, directly or not."""
    from scripts.import_graph import graph, modules

    edges, known = graph(), modules()
    as_file = {name: path.relative_to(REPO).as_posix() for name, path in known.items()}
    reach: dict[str, set[str]] = {}
    for start in edges:
        seen, todo = set(), [start]
        while todo:
            for target in edges[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        reach[as_file[start]] = {as_file[name] for name in seen}
    return reach


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        asyncio.run(measure())
