"""Graceful shutdown on SIGTERM (a deploy, `docker stop`, a scale-down).

Daphne's reactor would stop at once: in-flight requests are cancelled and websockets drop with
1006. Instead: stop accepting connections, finish the HTTP requests in flight (a mutation that
was sent is answered), close every websocket with 1001 so clients reconnect elsewhere and
resume with their cursor, then let the reactor stop as usual. HTTP subscription streams (SSE,
multipart) are live connections, not requests in flight: they end with the websockets.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from notifications.transports import connections

logger = logging.getLogger(__name__)

_in_flight = 0
_installed = False
_stopping = False
_shutdown_task: "asyncio.Task[None] | None" = None  # the loop keeps only a weak reference to tasks


def install() -> None:
    """Make SIGTERM ours (once the reactor runs): called as connections and requests arrive."""
    _install()


class InFlightRequests:
    """ASGI middleware counting HTTP requests being served, so shutdown can wait for them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with in_flight():
            return await self.app(scope, receive, send)


@contextlib.contextmanager
def in_flight() -> Iterator[None]:
    """Count what runs inside as an HTTP request in flight (the drain waits for it)."""
    global _in_flight
    _install()
    _in_flight += 1
    try:
        yield
    finally:
        _in_flight -= 1


def requests_in_flight() -> int:
    """HTTP requests this process is serving right now (long-lived subscription streams are not counted)."""
    return _in_flight


def stopping() -> bool:
    """SIGTERM arrived: new subscribers are refused, so they go to another instance."""
    return _stopping


def _install() -> None:
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
    global _stopping, _shutdown_task
    if not _stopping:
        _stopping = True
        _shutdown_task = asyncio.ensure_future(shut_down())


async def shut_down() -> None:
    from twisted.internet import reactor, tcp

    logger.info(
        "SIGTERM: no new connections; finishing %d request(s), closing %d connection(s)",
        _in_flight,
        len(connections.live()),
    )
    # zope.interface declares the reactor's methods without `self`; mypy needs the mypy-zope plugin for them.
    for reader in list(reactor.getReaders()):  # type: ignore[misc]
        if isinstance(reader, tcp.Port):
            reader.stopListening()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.GRACEFUL_SHUTDOWN_SECONDS
    while _in_flight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    # Publications those requests just committed come back through Redis within milliseconds:
    # deliver them here rather than make every client replay them after reconnecting.
    await asyncio.sleep(0.2)
    for connection in connections.live():
        connection.going_away()
    await asyncio.sleep(0.5)  # let close frames reach the clients
    reactor.stop()  # type: ignore[misc]
