"""Threads for Django's sync request handling, started once and reused request after request.

Under ASGI Django runs each request's sync code (middleware, the view, `response.close()` with
its `request_finished` receivers) in a thread-sensitive context of its own, and asgiref gives
each such context a new single-thread executor: one thread started and joined per request.
asgiref's documented `ThreadSensitiveContext(executor=...)` lets the caller supply that executor
instead; each request here leases one of a bounded set of single-thread executors, so a request
still runs all its sync code on one thread (Django's per-thread database connections and their
`close_old_connections` at the start and end of the request keep their meaning), and at most
`size` such threads exist, however many requests arrive. A request that finds them all busy
waits for one.

A lease ends when its thread has finished everything submitted to it: a view that outlives its
request (the client went away, Django cancelled the wait) keeps its thread from the next request.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any


class RequestThread(ThreadPoolExecutor):
    """One worker thread that knows how much work it still has queued or running."""

    def __init__(self, name: str) -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._pending = 0
        self._lock = threading.Lock()
        self._on_idle: Callable[[], object] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self._pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
            callback = self._on_idle if self._pending == 0 else None
            if callback is not None:
                self._on_idle = None
        if callback is not None:
            callback()

    def idle_or_later(self, callback: Callable[[], object]) -> bool:
        """True if nothing is queued or running; else `callback` is called (from the thread) once so."""
        with self._lock:
            if self._pending:
                self._on_idle = callback
                return False
            return True


class RequestThreads:
    """At most `size` RequestThreads, each leased to one request at a time (most recent first)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._idle: list[RequestThread] = []
        self._started = 0
        self._free = asyncio.Semaphore(size)

    @property
    def started(self) -> int:
        return self._started

    @property
    def in_use(self) -> int:
        return self._started - len(self._idle)

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[RequestThread]:
        await self._free.acquire()
        if self._idle:
            thread = self._idle.pop()
        else:
            self._started += 1
            thread = RequestThread(f"{self.name}-{self._started}")
        try:
            yield thread
        finally:
            loop = asyncio.get_running_loop()
            if thread.idle_or_later(lambda: loop.call_soon_threadsafe(self._give_back, thread)):
                self._give_back(thread)

    def _give_back(self, thread: RequestThread) -> None:
        self._idle.append(thread)
        self._free.release()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RequestThreads]] = weakref.WeakKeyDictionary()


def threads_for(name: str, size: int) -> RequestThreads:
    """The running event loop's set called `name` (one loop per process under Daphne)."""
    sets = _by_loop.setdefault(asyncio.get_running_loop(), {})
    threads = sets.get(name)
    if threads is None:
        threads = sets[name] = RequestThreads(name, size)
    return threads


def all_threads() -> list[RequestThreads]:
    """Every set of every loop of this process (for metrics)."""
    return [threads for sets in list(_by_loop.values()) for threads in sets.values()]
