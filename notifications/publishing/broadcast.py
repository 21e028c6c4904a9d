"""The after-commit broadcast: one channel-layer message per publication, to every process's hub.

publishing/signals.py hands `pending_broadcast(publication)` to events.call_event, which runs it
once the transaction commits.

The message is the project's own (`type` MESSAGE_TYPE, the publication in its wire form), sent
with the channel layer's documented `group_send`; hub/feed.py reads it back with
`publication_from`. Each process's hub joins the one group and filters by author locally, so an
event crosses Redis once per process and subscribers of other authors are never woken.

The request's thread sends it itself, on the channel layer's blocking client
(`group_send_blocking`), so that a response normally means "sent". A layer without one (the
in-memory layer, a sharded Redis) has the send made on the server's event loop (bound at start by
`send_from`), where its connections live, as a task of its own: the thread hands it over and
waits for it to leave. Either way a Redis that hangs holds no response longer than
BROADCAST_WAIT_SECONDS. A broadcast that fails or never
leaves loses nothing: the publication is committed in the log, and every hub reads the log
when it notices the gap (the next publication, or its periodic check).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
import weakref
from collections import defaultdict
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import metrics
from notifications.publishing.publication import ChangeKind, Publication

logger = logging.getLogger(__name__)

HUB_GROUP = "notifications.hubs"
MESSAGE_TYPE = "notifications.publication"


def message_for(publication: Publication) -> dict[str, Any]:
    return {"type": MESSAGE_TYPE, "publication": publication.to_message()}


def publication_from(message: dict[str, Any]) -> Publication | None:
    """The publication a hub message carries; None for a message of another type.

    ValueError for a message of this type that cannot be read (another release's shape).
    """
    if message.get("type") != MESSAGE_TYPE:
        return None
    try:
        return Publication.from_message(message["publication"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"unreadable {MESSAGE_TYPE} message: {type(error).__name__}: {error}") from error


_server_loop: asyncio.AbstractEventLoop | None = None


def send_from(loop: asyncio.AbstractEventLoop) -> None:
    """Broadcasts go out on `loop` (the server's, where the channel layer's connections live)."""
    global _server_loop
    _server_loop = loop


def pending_broadcast(publication: Publication) -> PendingBroadcast:
    """The broadcast of `publication`, to be called once its transaction has committed.

    A blog deleted in the same transaction that created or edited it: those changes' broadcasts
    are cancelled, so its text is never sent; their numbers are gone from the log with the blog,
    and the hubs pass over them as over any deleted number.
    """
    unsent = _unsent()
    if publication.kind == ChangeKind.DELETED:
        for earlier in unsent.pop(publication.blog_id, ()):
            earlier.cancelled = True
    send = PendingBroadcast(publication)
    if publication.kind != ChangeKind.DELETED:
        unsent[publication.blog_id].add(send)
    return send


class PendingBroadcast:
    """One after-commit broadcast, which a deletion later in the same transaction may cancel."""

    __slots__ = ("__weakref__", "cancelled", "publication")

    def __init__(self, publication: Publication) -> None:
        self.publication = publication
        self.cancelled = False

    def __call__(self) -> None:
        unsent = _unsent()
        pending = unsent.get(self.publication.blog_id)
        if pending is not None:
            pending.discard(self)
            if not pending:
                del unsent[self.publication.blog_id]
        if not self.cancelled:
            broadcast(self.publication)


_local = threading.local()
_SWEEP_FROM = 1024


def _unsent() -> defaultdict[int, weakref.WeakSet[PendingBroadcast]]:
    """This thread's broadcasts waiting for their commit, by blog id. Weak: those of a transaction
    that rolled back go when Django drops its commit hooks. Per thread, as transactions are."""
    unsent = getattr(_local, "unsent", None)
    if unsent is None:
        unsent = _local.unsent = defaultdict(weakref.WeakSet)
    if len(unsent) > _local.__dict__.setdefault("swept_at", _SWEEP_FROM):
        # Keys left by rolled-back transactions (sent broadcasts remove their own): swept now and
        # then, so a bulk write of many blogs in one transaction stays linear.
        for blog_id in [blog_id for blog_id, pending in unsent.items() if not pending]:
            del unsent[blog_id]
        _local.swept_at = max(_SWEEP_FROM, 2 * len(unsent))
    return unsent


def broadcast(publication: Publication) -> None:
    """Send the publication to every hub, stamped with the time it was sent (delivery latency).

    Raises what the send raised when it failed within the wait (the caller counts and logs it).
    """
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured("CHANNEL_LAYERS needs a default layer: publications are broadcast through it.")
    stamped = dataclasses.replace(publication, announced_at=time.time())
    message = message_for(stamped)
    loop = _server_loop if _server_loop is not None and not _server_loop.is_closed() else None
    if loop is not None and _running_here(loop):
        _send_in_background(loop, layer, message)  # called from the loop itself: it cannot be waited for
        return
    if getattr(layer, "sends_from_threads", False):
        _send_from_this_thread(layer, message, loop, publication.seq)
        return
    if loop is None:
        # No server loop (a management command, the test client): a loop of asgiref's for the call.
        async_to_sync(layer.group_send)(HUB_GROUP, message)
        return
    sent = asyncio.run_coroutine_threadsafe(layer.group_send(HUB_GROUP, message), loop)
    try:
        sent.result(timeout=settings.BROADCAST_WAIT_SECONDS)
    except concurrent.futures.TimeoutError:
        logger.warning(
            "Broadcast of seq %s still under way after %.1fs; the response goes out, hubs read the log if it fails",
            publication.seq,
            settings.BROADCAST_WAIT_SECONDS,
        )
        sent.add_done_callback(_late_outcome)


def _send_from_this_thread(
    layer: Any, message: dict[str, Any], loop: asyncio.AbstractEventLoop | None, seq: int
) -> None:
    """Sent by the request's own thread on a blocking client: the publication leaves without
    waiting for the event loop to wake up and take it. A Redis that does not answer within
    BROADCAST_WAIT_SECONDS holds the response no longer: the send is made again from the event
    loop, where it may finish later (hubs drop a second copy by sequence number, and read the log
    if it never arrives)."""
    try:
        layer.group_send_blocking(HUB_GROUP, message, timeout=settings.BROADCAST_WAIT_SECONDS)
    except RedisTimeoutError:
        if loop is None:
            raise
        logger.warning(
            "Broadcast of seq %s unanswered after %.1fs; the response goes out, the event loop sends it again",
            seq,
            settings.BROADCAST_WAIT_SECONDS,
        )
        _send_in_background(loop, layer, message)


def _running_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _send_in_background(loop: asyncio.AbstractEventLoop, layer: BaseChannelLayer, message: dict[str, Any]) -> None:
    task = loop.create_task(layer.group_send(HUB_GROUP, message))
    _background.add(task)
    task.add_done_callback(_background.discard)
    task.add_done_callback(_late_outcome)


_background: set[asyncio.Task[None]] = set()  # referenced until done


def _late_outcome(done: concurrent.futures.Future[None] | asyncio.Future[None]) -> None:
    """The outcome of a broadcast nobody waits for any more: counted as the waited-for ones are."""
    if done.cancelled() or done.exception() is not None:
        error = None if done.cancelled() else done.exception()
        metrics.broadcast_failed()
        logger.warning("Broadcast failed after the response (%s); hubs read it from the publication log", error)
