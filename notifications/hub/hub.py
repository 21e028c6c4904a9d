"""Each process's delivery hub: publications in, events out, every one once and in sequence order.

One hub per process (per event loop) joins a single channel-layer group, so an event crosses
Redis once per process, not once per subscriber. It is made of parts with one job each:

- feed.LayerReceiver: the group membership, and every broadcast handed to the feed;
- feed.OrderedFeed (with feed.Sequencer): strict sequence order, gaps filled from the log,
  each publication handed to the delivery;
- cohorts.CohortRegistry: who is subscribed, grouped so each event is rendered once per cohort;
- fanout.Delivery: the same bytes written to every member, one failing connection isolated;
- replay.ReplayWindow and RenderCache: resuming subscribers' replays, read and rendered once for all.

A publication goes one way, receiver -> feed -> delivery, never back through the hub. The hub
wires them together, starts them (retrying with backoff while Redis or the database is
down: never silently), checks the log now and then for a publication whose broadcast never
happened, and joins resuming subscribers to the live stream with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core import metrics
from notifications.hub.cohorts import CohortRegistry
from notifications.hub.fanout import Delivery
from notifications.hub.feed import LayerReceiver, OrderedFeed
from notifications.hub.replay import ReadDeletions, RenderCache, ReplayWindow, ResumePoints
from notifications.hub.subscription import LiveSubscription
from notifications.publishing import log as publications
from notifications.publishing.broadcast import HUB_GROUP
from notifications.publishing.publication import Publication

logger = logging.getLogger(__name__)

START_RETRY_FIRST_SECONDS = 0.2
START_RETRY_MAX_SECONDS = 5.0
# A start attempt (join the group, read the log's position) that hangs counts as failed: a Redis or
# database that answers nothing is down, and subscribers waiting for the hub must hear so.
START_ATTEMPT_SECONDS = 10.0

# (after, upto, limit, author) -> publications with after < seq <= upto, oldest first.
ReadLog = Callable[[int, int | None, int, str | None], Awaitable[list[Publication]]]


class HubUnavailable(Exception):
    """Subscriptions cannot be delivered by this process right now; the client should retry."""


async def _read_log(after: int, upto: int | None, limit: int, author: str | None) -> list[Publication]:
    return await database_sync_to_async(publications.publications_between)(after, upto, author, limit=limit)


class Hub:
    def __init__(
        self,
        layer: BaseChannelLayer | None = None,
        *,
        read_log: ReadLog = _read_log,
        read_position: Callable[[], Awaitable[int]] | None = None,
        check_resume_point: Callable[[str], Awaitable[int]] | None = None,
        read_deletions: ReadDeletions | None = None,
    ) -> None:
        layer = layer or get_channel_layer()
        if layer is None:
            raise ImproperlyConfigured("CHANNEL_LAYERS needs a default layer: subscriptions are delivered through it.")
        self.read_log = read_log
        self.read_position = read_position or database_sync_to_async(publications.last_published_seq)
        self.registry = CohortRegistry()
        self.replays = ReplayWindow(read_log, read_deletions or database_sync_to_async(publications.deletions_after))
        self.replay_renders = RenderCache()
        self.resume_points = ResumePoints(check_resume_point or database_sync_to_async(publications.resume_point))
        self.receiver = LayerReceiver(layer, HUB_GROUP)
        self.delivery = Delivery(self.registry, self.replays)
        self.feed: OrderedFeed | None = None
        self._started = asyncio.Event()
        # Replaced by a fresh one each time the start succeeds or fails: what waiting subscribers wake on.
        self._start_changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._start_problem: str | None = None

    # ------------------------------------------------------------------ state

    @property
    def problem(self) -> str | None:
        """Why this process cannot deliver right now, or None when it can."""
        if self._runner is not None and self._runner.done():
            return "the hub has stopped"
        if self.feed is None:
            return self._start_problem or ("starting" if self._runner is not None else None)
        return self._start_problem or self.receiver.problem or self.feed.problem

    # ------------------------------------------------------------------ running

    def ensure_running(self) -> None:
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop every task of this hub (tests; a process simply exits)."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            position = await self._join_and_locate()
            self.feed = OrderedFeed(
                position,
                read_log=lambda after, upto, limit: self.read_log(after, upto, limit, None),
                deliver=self.delivery.deliver,
                reorder_window=settings.HUB_REORDER_WINDOW_SECONDS,
            )
            if self._started.is_set():
                self.feed.resync()  # restarted after a crash: whatever came meanwhile is in the log
            self._started.set()
            self._announce_start_change()
            logger.info("Hub %s delivering from seq %s", self.receiver.channel, position)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self.receiver.run(self.feed))
                    tasks.create_task(self.feed.run())
                    tasks.create_task(self.receiver.renew(self.receiver.renew_interval()))
                    tasks.create_task(self._check_log(settings.HUB_LOG_CHECK_SECONDS))
            except Exception:
                # A bug in one part: restart them all from where delivery stood, loudly.
                logger.exception("Hub stopped unexpectedly; restarting it")
                self._set_start_problem("restarting after an internal error (see the log)")
                await asyncio.sleep(START_RETRY_MAX_SECONDS * random.uniform(0.5, 1.0))

    async def _join_and_locate(self) -> int:
        """Join the group, then read where the log stands: nothing committed after that is missed."""
        failures = 0
        while True:
            try:
                position = await asyncio.wait_for(self._join_then_position(), START_ATTEMPT_SECONDS)
            except Exception as error:
                failures += 1
                delay = min(START_RETRY_MAX_SECONDS, START_RETRY_FIRST_SECONDS * 2 ** (failures - 1))
                delay *= random.uniform(0.5, 1.0)
                self._set_start_problem(f"cannot start: {type(error).__name__}: {error}")
                logger.warning("Hub %s; retrying in %.1fs", self._start_problem, delay)
                await asyncio.sleep(delay)
            else:
                self._set_start_problem(None)
                return position

    async def _join_then_position(self) -> int:
        await self.receiver.join()
        return self.feed.position if self.feed is not None else await self.read_position()

    def _set_start_problem(self, problem: str | None) -> None:
        self._start_problem = problem
        self._announce_start_change()

    def _announce_start_change(self) -> None:
        self._start_changed.set()
        self._start_changed = asyncio.Event()

    async def _check_log(self, interval: float) -> None:
        """Read the log every `interval` seconds while anyone listens here.

        A publication whose broadcast never happened (its writer died between commit and
        broadcast) is otherwise noticed only when the next one arrives. One look at the counter
        row per process per interval, not per subscriber; the log itself is read only when the
        counter is ahead of what was delivered.
        """
        while True:
            await asyncio.sleep(interval)
            feed = self.feed
            if not self.registry or feed is None:
                continue
            try:
                behind = await self.read_position() > feed.position
            except Exception:
                behind = True  # the feed's own read retries with backoff and reports the problem
            if behind:
                feed.resync()

    # ------------------------------------------------------------------ subscribers

    async def subscribe(self, subscription: LiveSubscription) -> None:
        """Register a subscription; with `after`, first replay what it missed, then go live seamlessly.

        Raises HubUnavailable when the hub cannot start (see _running_feed).
        """
        feed = await self._running_feed()
        upto = feed.position
        if subscription.position is None or subscription.position >= upto:
            # Nothing to replay. A cursor ahead of this hub (another instance delivered it first)
            # is kept: deliver() skips what the subscriber already has as the hub catches up.
            self.registry.add(subscription)
            return
        subscription.held = []
        cohort = self.registry.add(subscription)
        sent = 0
        try:
            async for page in self.replays.pages(subscription.position, upto, subscription.author):
                for publication in page:
                    if not subscription.active:
                        break
                    if publication.kind not in cohort.kinds:
                        continue
                    subscription.connection.send_event(
                        subscription, await self.replay_renders.render(cohort, publication)
                    )
                    sent += 1
            subscription.position = upto
        except BaseException:
            self.registry.remove(subscription)
            raise
        finally:
            held, subscription.held = subscription.held or [], None
            metrics.events_delivered(sent)
        for seq, frames in held:
            subscription.deliver(seq, frames)  # skips what the replay covered

    async def resume_point(self, cursor: str) -> int:
        """The sequence number `cursor` resumes after; BadUserInput when it cannot be resumed from."""
        return await self.resume_points.seq(cursor)

    def unsubscribe(self, subscription: LiveSubscription) -> None:
        self.registry.remove(subscription)

    async def _running_feed(self) -> OrderedFeed:
        """The feed, once the hub delivers.

        A hub that is still starting is waited for as long as its start takes: a fresh instance
        accepting a connect storm is busy, not broken, and refusing would only send the storm
        round again. Once a start attempt has failed (Redis or the database unreachable, or
        silent for START_ATTEMPT_SECONDS), a subscriber waits HUB_START_WAIT_SECONDS for a
        retry to succeed, then HubUnavailable (the transports answer 1013: try again later).
        """
        self.ensure_running()
        while self.feed is None:
            if self._runner is not None and self._runner.done():
                raise HubUnavailable(self.problem or "the hub has stopped")
            if self._start_problem is None:
                await self._start_changed.wait()
                continue
            try:
                await asyncio.wait_for(self._started.wait(), settings.HUB_START_WAIT_SECONDS)
            except TimeoutError:
                raise HubUnavailable(self.problem or "starting") from None
        return self.feed


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop (one per process under Daphne)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


def hub_states() -> list[tuple[str | None, int | None]]:
    """(problem, last delivered seq) of every hub in this process (one under Daphne), for metrics."""
    return [(hub.problem, hub.feed.position if hub.feed else None) for hub in list(_hubs.values())]


def start_hub() -> None:
    """Start this process's hub, on the running event loop: at process start, before any subscriber."""
    get_hub().ensure_running()


def hub_problem() -> str | None:
    """Why this process's hub does not deliver (yet), or None when it does. Starts it if need be."""
    hub = get_hub()
    hub.ensure_running()
    return hub.problem


class HubCollector(Collector):
    """The delivery hub's state, read at scrape time: alert on `blogpush_hub_up == 0`."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "blogpush_hub_up",
            "1 while this process's delivery hub can deliver, 0 while it cannot (see /readyz for why); "
            "absent before anyone subscribed here.",
            labels=[metrics.INSTANCE_LABEL],
        )
        position = GaugeMetricFamily(
            "blogpush_hub_delivered_seq",
            "The last publication sequence number this process's hub delivered (compare across instances).",
            labels=[metrics.INSTANCE_LABEL],
        )
        for problem, delivered in hub_states():
            up.add_metric([metrics.instance_name()], 0 if problem else 1)
            if delivered is not None:
                position.add_metric([metrics.instance_name()], delivered)
        yield up
        yield position


metrics.REGISTRY.register(HubCollector())
