"""Protocol keep-alives (`ping` on graphql-transport-ws, `ka` on graphql-ws) from one task per process.

django-channels-graphql-ws runs a sleeping task per connection for them: a task, a coroutine,
a future and a timer held by every idle socket, and a wake-up each. One loop over the
acknowledged sockets sends the same prebuilt frame to each instead.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

_sockets: weakref.WeakSet[Any] = weakref.WeakSet()
_task: asyncio.Task[None] | None = None


def keep_alive(consumer: Any) -> None:
    """From now on `consumer.send_keepalive()` is called every GRAPHQL_WS_PING_SECONDS."""
    global _task
    _sockets.add(consumer)
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_run(settings.GRAPHQL_WS_PING_SECONDS))


def forget(consumer: Any) -> None:
    _sockets.discard(consumer)


async def _run(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for count, consumer in enumerate(list(_sockets), 1):
            try:
                consumer.send_keepalive()
            except Exception:
                logger.exception("Keep-alive failed for one websocket")
            if count % 500 == 0:
                await asyncio.sleep(0)  # thousands of sockets: let others be served meanwhile
