"""Process-level fan-out of publications: each event crosses Redis once per process, not per subscriber.

One Hub per process joins a single channel-layer group. For each publication it receives it
runs the subscription's GraphQL selection once per *cohort* (subscribers sharing document,
variables and operation name) and writes the same serialized result to every member's socket.
Events are delivered strictly in sequence order; a gap (a publication that reached Redis late,
or never, because Redis was down) is filled from the publication log, so a subscriber sees every
publication exactly once and in cursor order. That is what makes `after:` resume gap-free.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import graphql
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels_graphql_ws.serializer import Serializer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from api.errors import format_error
from notifications import publications, telemetry
from notifications.shutdown import requests_in_flight
from notifications.subscriptions import BlogPublished
from notifications.transport import EventFrames

if TYPE_CHECKING:
    from notifications.consumers import GraphqlConsumer

logger = logging.getLogger(__name__)

# A fan-out to 10,000 sockets is most of a second of event-loop time; it yields this often.
FAN_OUT_SLICE_SECONDS = 0.005
FAN_OUT_GIVES_REQUESTS_SECONDS = 0.01


@dataclass(eq=False)
class Cohort:
    """Subscribers whose result for an event is byte-for-byte the same."""

    key: tuple[Any, ...]
    document: graphql.DocumentNode
    operation_name: str | None
    variables: dict[str, Any]
    author: str | None
    members: set[LiveSubscription] = field(default_factory=set)

    async def render(self, payload: dict[str, Any]) -> str:
        """The `payload` of a next/data message for this event, as JSON text."""
        from notifications.consumers import run_orm_resolvers_in_thread
        from project.schema import schema

        result = graphql.execute(
            schema.graphql_schema,
            self.document,
            root_value=payload,
            context_value=CohortContext(),
            variable_values=self.variables,
            operation_name=self.operation_name,
            middleware=[run_orm_resolvers_in_thread],
        )
        if graphql.pyutils.is_awaitable(result):
            result = await result  # type: ignore[misc]
        body: dict[str, Any] = {"data": result.data}  # type: ignore[union-attr]
        if result.errors:  # type: ignore[union-attr]
            body["errors"] = [format_error(error) for error in result.errors]  # type: ignore[union-attr]
        return json.dumps(body, separators=(",", ":"))


class CohortContext:
    """The context a shared execution sees: no user, because the result is shared by many."""

    user = None
    channels_scope: dict[str, Any] = {}


class LiveSubscription:
    """One `blogPublished` operation on one socket."""

    __slots__ = (
        "active",
        "after_seq",
        "author",
        "cohort_key",
        "consumer",
        "document",
        "held",
        "op_id",
        "operation_name",
        "variables",
    )

    def __init__(
        self,
        consumer: GraphqlConsumer,
        op_id: str,
        cohort_key: tuple[Any, ...],
        document: graphql.DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any],
        author: str | None,
        after_seq: int | None,
    ) -> None:
        self.consumer = consumer
        self.op_id = op_id
        self.cohort_key = cohort_key
        self.document = document
        self.operation_name = operation_name
        self.variables = variables
        self.author = author
        self.after_seq = after_seq
        # While catching up from the log, live events wait here (ordered by seq).
        self.held: list[tuple[int, EventFrames]] | None = None
        self.active = True

    def deliver(self, seq: int, frames: EventFrames) -> bool:
        """Send the event now (True), or hold it while the log is replayed, or drop it after unsubscribe."""
        if not self.active:
            return False
        if self.held is not None:
            self.held.append((seq, frames))
            return False
        self.consumer.send_event(self, frames)
        return True


class Hub:
    def __init__(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            raise ImproperlyConfigured("CHANNEL_LAYERS needs a default layer: subscriptions are delivered through it.")
        self.layer = layer
        self.channel = ""  # the hub's own channel, named once it starts
        self.last_seq = 0
        self.cohorts: dict[tuple[Any, ...], Cohort] = {}
        self.cohorts_by_author: dict[str | None, set[Cohort]] = defaultdict(set)
        self.pending: dict[int, dict[str, Any]] = {}
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.started: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.gap_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle

    async def ensure_started(self) -> None:
        if self.started is None:
            self.started = asyncio.ensure_future(self._start())
        await asyncio.shield(self.started)

    async def _start(self) -> None:
        # The default prefix shares channels-redis's one BRPOP loop with the consumers' channels.
        self.channel = await self.layer.new_channel()
        await self._join()
        # Joined first, then read: nothing committed after this point can be missed.
        self.last_seq = await database_sync_to_async(publications.last_published_seq)()
        self.tasks = [
            asyncio.ensure_future(self._receive_loop()),
            asyncio.ensure_future(self._deliver_loop()),
            asyncio.ensure_future(self._renew_loop()),
        ]
        logger.info("Hub %s listening from seq %s", self.channel, self.last_seq)

    async def _join(self) -> None:
        await self.layer.group_add(BlogPublished.hub_group(), self.channel)

    # ------------------------------------------------------------------ subscribers

    async def subscribe(self, subscription: LiveSubscription) -> None:
        """Register a subscription; with `after`, first replay what it missed, then go live seamlessly."""
        await self.ensure_started()
        if subscription.after_seq is not None and subscription.after_seq < self.last_seq:
            subscription.held = []
            upto = self.last_seq
            self._add(subscription)
            try:
                missed = await database_sync_to_async(publications.payloads_between)(
                    subscription.after_seq, upto, subscription.author
                )
                cohort = self.cohorts[subscription.cohort_key]
                for payload in missed:
                    subscription.consumer.send_event(subscription, EventFrames(await cohort.render(payload)))
                telemetry.events_sent(len(missed))
            finally:
                held, subscription.held = subscription.held or [], None
            for seq, frames in held:
                if seq > upto:
                    subscription.consumer.send_event(subscription, frames)
                    telemetry.events_sent(1)
        else:
            self._add(subscription)

    def _add(self, subscription: LiveSubscription) -> None:
        cohort = self.cohorts.get(subscription.cohort_key)
        if cohort is None:
            cohort = Cohort(
                subscription.cohort_key,
                subscription.document,
                subscription.operation_name,
                subscription.variables,
                subscription.author,
            )
            self.cohorts[cohort.key] = cohort
            self.cohorts_by_author[cohort.author].add(cohort)
        cohort.members.add(subscription)

    def unsubscribe(self, subscription: LiveSubscription) -> None:
        subscription.active = False
        cohort = self.cohorts.get(subscription.cohort_key)
        if cohort is None:
            return
        cohort.members.discard(subscription)
        if not cohort.members:
            del self.cohorts[cohort.key]
            self.cohorts_by_author[cohort.author].discard(cohort)
            if not self.cohorts_by_author[cohort.author]:
                del self.cohorts_by_author[cohort.author]

    @property
    def subscription_count(self) -> int:
        return sum(len(cohort.members) for cohort in self.cohorts.values())

    # ------------------------------------------------------------------ receiving

    async def _receive_loop(self) -> None:
        failures = 0
        while True:
            try:
                if failures:
                    # Redis was unreachable: it may have restarted empty (our membership gone), and
                    # publications may have been committed meanwhile without reaching it.
                    await self._join()
                    failures = 0
                    self.inbox.put_nowait(None)  # ask the delivery loop to read the log
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                delay = min(1.0, 0.1 * 2**failures) * random.uniform(0.5, 1.0)  # one hub per process: cheap to retry
                logger.warning(
                    "Hub cannot reach the channel layer (%s); retrying in %.1fs", error or type(error).__name__, delay
                )
                await asyncio.sleep(delay)
                continue
            if message.get("type") == "broadcast":
                self.inbox.put_nowait(Serializer.deserialize(message["payload"]))

    async def _renew_loop(self) -> None:
        """channels-redis forgets group members after group_expiry (and all of them when Redis restarts)."""
        interval = max(0.5, min(60.0, getattr(self.layer, "group_expiry", 86400) / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._join()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("Hub could not renew its group membership: %s", error)

    # ------------------------------------------------------------------ delivering in order

    async def _deliver_loop(self) -> None:
        while True:
            payload = await self.inbox.get()
            try:
                if payload is None:
                    await self._fill_from_log(upto=None)
                else:
                    seq = payload["seq"]
                    if seq > self.last_seq:
                        self.pending[seq] = payload
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Hub failed to deliver an event")

    async def _drain(self) -> None:
        while self.last_seq + 1 in self.pending:
            payload = self.pending.pop(self.last_seq + 1)
            self.last_seq += 1
            await self._fan_out(payload)
        if self.pending and self.gap_timer is None:
            # A later publication overtook an earlier one (two publishers racing to Redis), or the
            # earlier one never reached Redis. Give it a moment, then read it from the log.
            loop = asyncio.get_running_loop()
            self.gap_timer = loop.call_later(settings.HUB_REORDER_WINDOW_SECONDS, self._gap_timeout)

    def _gap_timeout(self) -> None:
        self.gap_timer = None
        if self.pending:
            self.inbox.put_nowait(None)

    async def _fill_from_log(self, upto: int | None) -> None:
        if self.pending:
            upto = max(self.pending)
        missed = await database_sync_to_async(publications.payloads_between)(self.last_seq, upto)
        for payload in missed:
            self.pending.setdefault(payload["seq"], payload)
        newest = max([self.last_seq, *(p["seq"] for p in missed)])
        # Numbers the log no longer has were deleted blogs: skip them.
        for seq in range(self.last_seq + 1, newest + 1):
            if seq not in self.pending:
                self.pending[seq] = {"seq": seq, "deleted": True}
        if missed:
            logger.info("Hub read %d publication(s) from the log after seq %d", len(missed), self.last_seq)

    async def _fan_out(self, payload: dict[str, Any]) -> None:
        if payload.get("deleted"):
            return
        author = payload["blog"]["author"]["username"]
        seq = payload["seq"]
        loop = asyncio.get_running_loop()
        slice_ends = loop.time() + FAN_OUT_SLICE_SECONDS
        gave_requests = 0.0
        for cohort in list(self._cohorts_for(author)):
            frames = EventFrames(await cohort.render(payload))
            sent = 0
            for count, subscription in enumerate(list(cohort.members), 1):
                sent += subscription.deliver(seq, frames)
                if count % 64 == 0 and loop.time() > slice_ends:
                    # Let the loop breathe: the mutation that caused this event is still waiting
                    # for its HTTP response, and other sockets for their reads. Order is kept:
                    # the next event's fan-out starts only when this one has finished.
                    await asyncio.sleep(0)
                    if requests_in_flight() and gave_requests < FAN_OUT_GIVES_REQUESTS_SECONDS:
                        # An HTTP request (often the mutation behind this very event) is being
                        # served in Django's thread: leave it the GIL for a moment, so its answer
                        # does not wait for the whole fan-out. At most this long per event.
                        began = loop.time()
                        await asyncio.sleep(0.001)
                        gave_requests += loop.time() - began
                    slice_ends = loop.time() + FAN_OUT_SLICE_SECONDS
            # Once per cohort, not per subscriber: metrics were a tenth of a fan-out's time.
            telemetry.events_sent(sent)
            telemetry.delivery_latency(payload)

    def _cohorts_for(self, author: str) -> Iterable[Cohort]:
        yield from self.cohorts_by_author.get(None, ())
        yield from self.cohorts_by_author.get(author, ())


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop (one per process under Daphne)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
