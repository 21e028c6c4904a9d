"""This process's lifecycle state, read by every floor: HTTP requests in flight, and whether it
is stopping (SIGTERM arrived).

The SIGTERM drain itself (notifications/runtime/shutdown.py) registers with `on_sigterm`; the
handler is installed once the server's loop runs (under Daphne only: other servers handle SIGTERM
themselves), when the first request or connection arrives.
"""

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

_in_flight = 0
_installed = False
_stopping = False
_drains: list[Callable[[], None]] = []


def on_sigterm(drain: Callable[[], None]) -> None:
    """Run `drain` on the loop when SIGTERM arrives (after `stopping()` turns True)."""
    _drains.append(drain)


def install() -> None:
    """Make SIGTERM ours (once the reactor runs): called as connections and requests arrive."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from twisted.internet import reactor  # noqa: F401  (only under Daphne)
    except ImportError:
        return
    loop = asyncio.get_running_loop()
    signal.signal(signal.SIGTERM, lambda signum, frame: loop.call_soon_threadsafe(_begin))


def _begin() -> None:
    global _stopping
    if not _stopping:
        _stopping = True
        for drain in _drains:
            drain()


def stopping() -> bool:
    """SIGTERM arrived: new subscribers are refused, so they go to another instance."""
    return _stopping


@contextlib.contextmanager
def in_flight() -> Iterator[None]:
    """Count what runs inside as an HTTP request in flight (the drain waits for it)."""
    global _in_flight
    install()
    _in_flight += 1
    try:
        yield
    finally:
        _in_flight -= 1


def requests_in_flight() -> int:
    """HTTP requests this process is serving right now (long-lived subscription streams are not counted)."""
    return _in_flight


class InFlightRequests:
    """ASGI middleware counting HTTP requests being served, so shutdown can wait for them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with in_flight():
            return await self.app(scope, receive, send)
