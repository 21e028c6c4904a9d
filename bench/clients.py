"""Benchmark clients: worker processes, each holding many GraphQL-over-WebSocket subscribers.

The orchestrator (bench.harness) talks to every worker over a multiprocessing Pipe with small
dict commands. A worker runs one asyncio loop; each of its clients connects, sends
`connection_init`, waits for `connection_ack`, subscribes, and records `time.time()` for every
event it receives, keyed by the blog's id. All processes are on one machine, so their
`time.time()` clocks agree and a receive time can be compared with the publisher's send time.

Nothing here asks the server whether a subscription is active (there is no such message in
either protocol, and group membership is a server detail that will change): the orchestrator
publishes "probe" blogs until every client has received one. Probe events are counted apart
and never mixed into measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import multiprocessing
import multiprocessing.connection
import random
import statistics
import threading
import time
from collections import Counter, defaultdict
from typing import Any, cast

from bench.sse import SSE, LightSse
from bench.wire import LightSocket

PROBE_PREFIX = "probe-"
TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


def event_key(event: dict[str, Any]) -> tuple[str | None, str]:
    """(key, title) of a blogPublished or blogChanged event: a creation is keyed by the blog's id,
    an edit by `<id>~<new title>`, a deletion by `<id>~deleted` (bench/publisher.py makes the same)."""
    kind = event.get("kind")
    if kind == "DELETED":
        return f"{event.get('blogId')}~deleted", ""
    blog = event.get("blog") or {}
    blog_id, title = blog.get("id"), blog.get("title") or ""
    if kind == "UPDATED" and blog_id is not None:
        return f"{blog_id}~{title}", title
    return blog_id, title


class Client:
    """One websocket with one subscription; reconnects on loss when the worker says so."""

    def __init__(self, worker: Worker, url: str, query: str, variables: dict[str, Any], protocol: str) -> None:
        self.worker = worker
        self.url = url
        self.query = query
        self.variables = variables
        self.protocol = protocol
        self.ws: Any = None
        self.op = 0
        self.old_ops: list[int] = []
        self.instance: str | None = None
        self.probed = False
        self.seen: set[str] = set()
        self.subscribed = asyncio.Event()
        self.error: str | None = None
        self.reconnects = 0
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_quietly(self, message: dict[str, Any]) -> None:
        """Fire-and-forget send (pong): a socket that closed meanwhile is not an error here."""
        try:
            if self.ws is not None:
                await self._send(message)
        except Exception:
            pass

    async def subscribe(self) -> None:
        self.op += 1
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self._send(
            {"type": kind, "id": str(self.op), "payload": {"query": self.query, "variables": self.variables}}
        )

    async def resubscribe(self, query: str, variables: dict[str, Any]) -> None:
        """Start another operation on the same socket; the old one stays until complete_old().

        Sending complete and then subscribe at once can lose the new subscription with the
        library-default delivery path: both are handled concurrently, and the old operation's
        group_discard may reach Redis after the new one's group_add of the same group.
        """
        if self.ws is None:
            return
        self.old_ops.append(self.op)
        self.query, self.variables = query, variables
        self.probed = False
        await self.subscribe()

    async def complete_old(self) -> None:
        while self.old_ops and self.ws is not None:
            op = self.old_ops.pop()
            await self._send({"type": "complete" if self.protocol == TRANSPORT_WS else "stop", "id": str(op)})

    async def _session(self) -> None:
        if self.protocol == SSE:
            await self._sse_session()
            return
        async with self.worker.connect_slots:
            self.ws = await LightSocket.connect(self.url, self.protocol, timeout=30)
            await self._send({"type": "connection_init", "payload": {}})
            while True:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
                # that arrives as the message does, and the task then lives on after close.
                async with asyncio.timeout(30):
                    raw = await self.ws.recv()
                ack = json.loads(raw)
                if ack.get("type") == "connection_ack":
                    break
                if ack.get("type") not in ("ka", "ping", "pong"):
                    raise RuntimeError(f"expected connection_ack, got {ack}")
            self.instance = (ack.get("payload") or {}).get("instance")
            if self.closing:
                self.ws.transport.close()
                return
            await self.subscribe()
        self.error = None
        self.subscribed.set()
        self.ws.listen(functools.partial(self.worker.on_message, self))
        await self.ws.wait_closed()

    async def _sse_session(self) -> None:
        """An SSE stream: the request is the subscription, the response's head says it is live."""
        async with self.worker.connect_slots:
            self.ws = await LightSse.connect(self.url, self.query, self.variables, timeout=30)
            self.op = 1  # LightSse labels every event as operation "1"
            if self.closing:
                self.ws.transport.close()
                return
        self.error = None
        self.subscribed.set()
        self.ws.listen(functools.partial(self.worker.on_message, self))
        await self.ws.wait_closed()

    async def run(self) -> None:
        """Connect and subscribe; retry a failed first connect, and reconnect later when told to."""
        established = False
        attempts = 0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.error = f"{type(error).__name__}: {error}"[:200]
            if self.subscribed.is_set():
                established = True
            # The socket ended (server closed it or crashed), or connecting failed.
            self.ws = None
            self.subscribed.clear()
            if self.closing or (established and not self.worker.reconnect):
                self.subscribed.set()  # wake whoever waits, with self.error or a closed socket
                return
            if established:
                self.reconnects += 1
                established = False
                attempts = 0
            else:
                self.worker.connect_failures += 1
            attempts += 1
            # A real client backs off too; jitter keeps a storm from re-synchronising.
            await asyncio.sleep(random.uniform(0.05, 0.3) * min(attempts, 8))

    @property
    def alive(self) -> bool:
        return self.ws is not None and self.subscribed.is_set()


async def stop_clients(clients: list[Client]) -> None:
    """End these clients for good: close their sockets, cancel their tasks, never hang on one."""
    for client in clients:
        client.closing = True
    for _ in range(3):
        for client in clients:
            # Like a closed browser tab: the TCP connection ends (FIN) without waiting for the
            # close handshake, which a server busy with thousands of disconnects answers slowly.
            if client.ws is not None:
                client.ws.transport.close()
            if client.task is not None and not client.task.done():
                client.task.cancel()
        pending = [c.task for c in clients if c.task is not None and not c.task.done()]
        if not pending:
            return
        await asyncio.wait(pending, timeout=5)


class Worker:
    def __init__(self, conn: multiprocessing.connection.Connection, worker_id: int) -> None:
        self.conn = conn
        self.worker_id = worker_id
        self.clients: list[Client] = []
        self.connect_slots = asyncio.Semaphore(64)
        self.reconnect = False
        self.connect_failures = 0
        # blog id -> receive times (one per client that received it)
        self.received: dict[str, list[float]] = defaultdict(list)
        self.duplicates = 0
        self.errors_in_payload = 0
        self.changed = asyncio.Event()
        self.background: set[asyncio.Future[None]] = set()  # fire-and-forget sends, kept referenced
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    # --- receiving -------------------------------------------------------------------------
    def on_message(self, client: Client, raw: str | bytes) -> None:
        now = time.time()
        message = json.loads(raw)
        kind = message.get("type")
        if kind in ("next", "data"):
            payload = message.get("payload") or {}
            if payload.get("errors"):
                self.errors_in_payload += 1
            data = payload.get("data") or {}
            event = next(iter(data.values()), None) or {}
            blog_id, title = event_key(event)
            if blog_id is None:
                return
            if title.startswith(PROBE_PREFIX):
                # Only a probe on the current operation proves that operation is live.
                if message.get("id") == str(client.op):
                    client.probed = True
            elif blog_id in client.seen:
                self.duplicates += 1
            else:
                client.seen.add(blog_id)
                self.received[blog_id].append(now)
            self.changed.set()
        elif kind == "ping":
            pong = asyncio.ensure_future(client.send_quietly({"type": "pong"}))
            self.background.add(pong)
            pong.add_done_callback(self.background.discard)

    # --- commands --------------------------------------------------------------------------
    async def cmd_connect(
        self,
        n: int,
        urls: list[str],
        subs: list[list[Any]],
        offset: int,
        protocol: str,
        concurrency: int,
        reconnect: bool,
        timeout: float,
    ) -> dict[str, Any]:
        self.connect_slots = asyncio.Semaphore(concurrency)
        self.reconnect = reconnect
        began = time.time()
        new = []
        for i in range(n):
            query, variables = subs[(offset + i) % len(subs)]
            url = urls[(offset + i) % len(urls)]
            client = Client(self, url, query, variables, protocol)
            client.task = asyncio.ensure_future(client.run())
            new.append(client)
        self.clients.extend(new)
        failures_before = self.connect_failures
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in new)), timeout)
        elapsed = time.time() - began
        ok = [c for c in new if c.alive]
        late = [c for c in new if not c.alive]
        errors = Counter(c.error or "still connecting at the deadline" for c in late)
        # Whoever is not subscribed by the deadline is given up, so it cannot disturb what follows.
        await stop_clients(late)
        given_up = set(late)
        self.clients = [c for c in self.clients if c not in given_up]
        return {
            "ok": len(ok),
            "failed": len(late),
            "errors": dict(errors.most_common(3)),
            "retries": self.connect_failures - failures_before,
            "instances": dict(Counter(c.instance for c in ok)),
            "elapsed": elapsed,
        }

    async def cmd_resubscribe(self, subs: list[list[Any]], offset: int) -> dict[str, Any]:
        for i, client in enumerate(self.clients):
            query, variables = subs[(offset + i) % len(subs)]
            await client.resubscribe(query, variables)
        return {"ok": len(self.clients)}

    async def cmd_complete_old(self) -> dict[str, Any]:
        for client in self.clients:
            await client.complete_old()
        return {"ok": len(self.clients)}

    def cmd_status(self) -> dict[str, Any]:
        alive = [c for c in self.clients if c.alive]
        return {
            "clients": len(self.clients),
            "alive": len(alive),
            "probed": sum(c.probed for c in self.clients),
            "connect_failures": self.connect_failures,
            "reconnects": sum(c.reconnects for c in self.clients),
            "reconnected": sum(1 for c in alive if c.reconnects),
            "instances": dict(Counter(c.instance for c in alive)),
            "duplicates": self.duplicates,
            "errors_in_payload": self.errors_in_payload,
            "errors": dict(Counter(c.error for c in self.clients if c.error).most_common(3)),
        }

    def cmd_probe_reset(self) -> dict[str, Any]:
        for client in self.clients:
            client.probed = False
        return {"ok": True}

    def cmd_clear(self) -> dict[str, Any]:
        self.received.clear()
        for client in self.clients:
            client.seen.clear()
        self.duplicates = 0
        self.errors_in_payload = 0
        return {"ok": True}

    async def cmd_await(self, ids: list[str], expected: int | None, timeout: float) -> dict[str, Any]:
        """Wait until each id was received by `expected` clients (default: all of ours)."""
        want = len(self.clients) if expected is None else expected
        deadline = time.monotonic() + timeout
        while True:
            if all(len(self.received.get(i, ())) >= want for i in ids):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return self.cmd_collect(ids, full=False)

    def cmd_collect(self, ids: list[str], full: bool) -> dict[str, Any]:
        out = {}
        for i in ids:
            times = self.received.get(i, [])
            if full:
                out[i] = {"count": len(times), "times": sorted(times)}
            elif times:
                out[i] = {"count": len(times), "min": min(times), "max": max(times), "median": statistics.median(times)}
            else:
                out[i] = {"count": 0}
        return {"ids": out, "clients": len(self.clients)}

    async def cmd_close(self) -> dict[str, Any]:
        clients, self.clients = self.clients, []
        await stop_clients(clients)
        self.cmd_clear()
        return {"closed": len(clients)}

    async def handle(self, command: dict[str, Any]) -> Any:
        name = command.pop("cmd")
        method = getattr(self, f"cmd_{name}")
        result = method(**command)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    def _read_commands(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while True:
                loop.call_soon_threadsafe(self.commands.put_nowait, self.conn.recv())
        except (EOFError, OSError, RuntimeError):  # the parent went away, or the loop closed
            return

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # A thread of its own reads commands: with the pipe watched by the loop, a readable pipe
        # did not mean a whole message (BlockingIOError mid-message on a large command).
        threading.Thread(target=self._read_commands, args=(loop,), daemon=True).start()
        while True:
            command = await self.commands.get()
            if command.get("cmd") == "exit":
                await self.cmd_close()
                self.conn.send({"ok": True})
                return
            # Commands run one at a time in order, but never block receiving.
            seq = command.pop("seq", None)
            try:
                reply = await self.handle(command)
            except Exception as error:
                reply = {"error": f"{type(error).__name__}: {error}"}
            self.conn.send({"seq": seq, "reply": reply})


def worker_main(conn: multiprocessing.connection.Connection, worker_id: int) -> None:
    # uvloop's C event loop: a socket's read costs the clients, which share the cores with the
    # servers being measured, a fraction of asyncio's pure-Python selector path.
    import uvloop

    uvloop.run(Worker(conn, worker_id).run())


class ClientPool:
    """N worker processes; commands go to all (or some) and their replies are gathered."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.seq = 0
        self._spawn()

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for i in range(self.processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, i), name=f"bench-client-{i}", daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def __len__(self) -> int:
        return len(self.conns)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid]

    def call(self, command: dict[str, Any] | list[dict[str, Any] | None], timeout: float = 600) -> list[Any]:
        """Send a command to every worker (or one command per worker, None: none) and return their replies."""
        commands: list[dict[str, Any] | None] = command if isinstance(command, list) else [command] * len(self.conns)
        targets = [c for c, cmd in zip(self.conns, commands, strict=True) if cmd is not None]
        self.seq += 1
        for conn, cmd in zip(self.conns, commands, strict=True):
            if cmd is not None:
                conn.send({**cmd, "seq": self.seq})
        replies: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(replies) < len(targets):
            left = deadline - time.monotonic()
            if left <= 0:
                name = next(c for c in commands if c is not None).get("cmd")
                raise TimeoutError(f"client workers did not answer {name} in {timeout:.0f}s")
            for ready in multiprocessing.connection.wait([c for c in targets if id(c) not in replies], left):
                conn = cast(multiprocessing.connection.Connection, ready)
                answer = conn.recv()
                # A reply to a command that timed out earlier arrives late: skip it.
                if answer.get("seq") == self.seq:
                    replies[id(conn)] = answer["reply"]
        out = [replies[id(c)] for c in targets]
        for reply in out:
            if isinstance(reply, dict) and "error" in reply:
                raise RuntimeError(f"client worker failed: {reply['error']}")
        return out

    def connect(
        self,
        n: int,
        urls: list[str],
        subs: list[tuple[str, dict[str, Any]]],
        *,
        protocol: str = TRANSPORT_WS,
        concurrency: int = 200,
        reconnect: bool = False,
        timeout: float = 120,
    ) -> dict[str, Any]:
        """Open n subscribers spread over the workers; returns totals."""
        per = [n // len(self) + (1 if i < n % len(self) else 0) for i in range(len(self))]
        offsets = [sum(per[:i]) for i in range(len(self))]
        slots = max(1, concurrency // len(self))
        commands: list[dict[str, Any] | None] = [
            {
                "cmd": "connect",
                "n": k,
                "urls": urls,
                "subs": [list(s) for s in subs],
                "offset": off,
                "protocol": protocol,
                "concurrency": slots,
                "reconnect": reconnect,
                "timeout": timeout,
            }
            if k
            else None
            for k, off in zip(per, offsets, strict=True)
        ]
        began = time.time()
        replies = self.call(commands, timeout=timeout + 30)
        total: dict[str, Any] = {"ok": 0, "failed": 0, "retries": 0, "instances": Counter(), "errors": Counter()}
        for reply in replies:
            total["ok"] += reply["ok"]
            total["failed"] += reply["failed"]
            total["retries"] += reply["retries"]
            total["instances"].update(reply["instances"])
            total["errors"].update(reply["errors"])
        total["elapsed"] = time.time() - began
        total["instances"] = dict(total["instances"])
        total["errors"] = dict(total["errors"])
        return total

    def status(self) -> dict[str, Any]:
        total: Counter[str] = Counter()
        instances: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for reply in self.call({"cmd": "status"}):
            instances.update(reply.pop("instances"))
            errors.update(reply.pop("errors"))
            total.update(reply)
        return {**total, "instances": dict(instances), "errors": dict(errors)}

    def resubscribe(self, subs: list[tuple[str, dict[str, Any]]]) -> None:
        """Every client starts a new operation (old ones stay until complete_old)."""
        sizes = [r["clients"] for r in self.call({"cmd": "status"})]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.call([{"cmd": "resubscribe", "subs": [list(s) for s in subs], "offset": o} for o in offsets])

    def complete_old(self) -> None:
        self.call({"cmd": "complete_old"})

    def await_ids(
        self, ids: list[str], timeout: float, expected_per_worker: list[int] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Wait (up to timeout) until every client got every id; merged count/min/max per id."""
        expected: list[int | None] = list(expected_per_worker) if expected_per_worker else [None] * len(self)
        commands: list[dict[str, Any] | None] = [
            {"cmd": "await", "ids": ids, "expected": e, "timeout": timeout} for e in expected
        ]
        return self._merge(self.call(commands, timeout=timeout + 30))

    def collect(self, ids: list[str], full: bool = False) -> dict[str, dict[str, Any]]:
        return self._merge(self.call({"cmd": "collect", "ids": ids, "full": full}))

    @staticmethod
    def _merge(replies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for reply in replies:
            for blog_id, info in reply["ids"].items():
                into = merged.setdefault(blog_id, {"count": 0, "times": [], "min": None, "max": None})
                into["count"] += info["count"]
                if "times" in info:
                    into["times"].extend(info["times"])
                    if info["times"]:
                        info = {**info, "min": info["times"][0], "max": info["times"][-1]}
                if info["count"]:
                    into["min"] = info["min"] if into["min"] is None else min(into["min"], info["min"])
                    into["max"] = info["max"] if into["max"] is None else max(into["max"], info["max"])
        return merged

    def close_clients(self) -> None:
        self.call({"cmd": "close"}, timeout=120)

    def restart(self) -> None:
        """Kill the workers (their sockets close with them) and start fresh ones: the way out when
        a worker stopped answering, so one stuck phase cannot spoil the next."""
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)
        for conn in self.conns:
            conn.close()
        self._spawn()

    def stop(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send({"cmd": "exit"})
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
