"""Keep-alives for every live connection, from one task per process.

Websockets get their protocol's keep-alive (`ping` on graphql-transport-ws, `ka` on graphql-ws),
HTTP subscription streams theirs (an SSE comment, a multipart `{}` part). django-channels-graphql-ws
runs a sleeping task per connection for them: a task, a coroutine, a future and a timer held by
every idle socket, and a wake-up each. Here one loop walks the live connections
(notifications/transports/connections.py) whenever an interval falls due and sends each connection whose
`keepalive_seconds` it is its prebuilt keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from django.conf import settings

from notifications.transports import connections

logger = logging.getLogger(__name__)

_task: asyncio.Task[None] | None = None
_due: dict[float, float] = {}  # interval (s) -> loop time it next falls due
_wake: asyncio.Event | None = None


def ensure_running(interval: float | None = None) -> None:
    """Keep-alives go out every `interval` seconds (default GRAPHQL_WS_PING_SECONDS) from now on, in this loop."""
    global _task, _wake
    loop = asyncio.get_running_loop()
    if interval is None:
        interval = settings.GRAPHQL_WS_PING_SECONDS
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _due.clear()
        _wake = asyncio.Event()
        _task = loop.create_task(_run())
    if interval not in _due:
        _due[interval] = loop.time() + interval
        assert _wake is not None
        _wake.set()  # it may fall due before whatever the task sleeps towards


async def _run() -> None:
    loop = asyncio.get_running_loop()
    while True:
        assert _wake is not None
        _wake.clear()
        delay = min(_due.values()) - loop.time() if _due else None
        if delay is None or delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_wake.wait(), delay)
            continue
        now = loop.time()
        firing = {interval for interval, at in _due.items() if at <= now}
        for interval in firing:
            _due[interval] = max(_due[interval] + interval, now + interval / 2)
        await _send(firing)


async def _send(intervals: set[float]) -> None:
    for count, connection in enumerate(connections.live(), 1):
        if connection.keepalive_seconds in intervals:
            try:
                connection.send_keepalive()
            except Exception:
                logger.exception("Keep-alive failed for one connection")
        if count % 500 == 0:
            await asyncio.sleep(0)  # thousands of connections: let others be served meanwhile
