"""Graceful shutdown on SIGTERM (a deploy, `docker stop`, a scale-down).

Daphne's reactor would stop at once: in-flight requests are cancelled and websockets drop with
1006. Instead: stop accepting connections, finish the HTTP requests in flight (a mutation that
was sent is answered), close every websocket with 1001 so clients reconnect elsewhere and
resume with their cursor, then let the reactor stop as usual. HTTP subscription streams (SSE,
multipart) are live connections, not requests in flight: they end with the websockets.
"""

import asyncio
import logging
from collections.abc import Callable

from django.conf import settings

from core import process
from notifications.transports import connections

logger = logging.getLogger(__name__)

PUBLICATIONS_IN_FLIGHT_SECONDS = 0.2
CLOSE_FRAMES_SECONDS = 0.5

_shutdown_task: "asyncio.Task[None] | None" = None  # the loop keeps only a weak reference to tasks


def _begin() -> None:
    global _shutdown_task
    if _shutdown_task is None:
        _shutdown_task = asyncio.ensure_future(shut_down())


process.on_sigterm(_begin)


async def shut_down() -> None:
    from twisted.internet import reactor, tcp

    logger.info(
        "SIGTERM: no new connections; finishing %d request(s), closing %d connection(s)",
        process.requests_in_flight(),
        len(connections.live()),
    )
    # zope.interface declares the reactor's methods without `self`; mypy needs the mypy-zope plugin for them.
    for reader in list(reactor.getReaders()):  # type: ignore[misc]
        if isinstance(reader, tcp.Port):
            reader.stopListening()
    await _while(process.requests_in_flight, settings.GRACEFUL_SHUTDOWN_SECONDS, poll=0.05)
    if connections.live():
        # Publications those requests just committed come back through Redis within milliseconds:
        # deliver them here rather than make every client replay them after reconnecting.
        await asyncio.sleep(PUBLICATIONS_IN_FLIGHT_SECONDS)
    for connection in connections.live():
        connection.going_away()
    # A connection leaves the registry once its transport has closed, its last frames flushed (the
    # close handshake answered, or the stream's last bytes written); stopping the reactor before
    # then could cut them off. No connection, no wait.
    await _while(connections.live, CLOSE_FRAMES_SECONDS, poll=0.02)
    reactor.stop()  # type: ignore[misc]


async def _while(condition: Callable[[], object], seconds: float, *, poll: float) -> None:
    """Until `condition()` is false, or `seconds` have passed."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while condition() and loop.time() < until:
        await asyncio.sleep(poll)
