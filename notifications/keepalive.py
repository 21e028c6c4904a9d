"""Protocol keep-alives (`ping` on graphql-transport-ws, `ka` on graphql-ws) from one task per process.

django-channels-graphql-ws runs a sleeping task per connection for them: a task, a coroutine,
a future and a timer held by every idle socket, and a wake-up each. One loop over the live
connections (notifications/connections.py) sends each its prebuilt keep-alive instead.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from notifications import connections

logger = logging.getLogger(__name__)

_task: asyncio.Task[None] | None = None


def ensure_running() -> None:
    """Keep-alives go out every GRAPHQL_WS_PING_SECONDS from now on, in this event loop."""
    global _task
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_run(settings.GRAPHQL_WS_PING_SECONDS))


async def _run(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for count, connection in enumerate(connections.live(), 1):
            try:
                connection.send_keepalive()
            except Exception:
                logger.exception("Keep-alive failed for one connection")
            if count % 500 == 0:
                await asyncio.sleep(0)  # thousands of sockets: let others be served meanwhile
