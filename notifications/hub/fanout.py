"""Writing one event to every subscriber it concerns, without one connection holding up the rest.

The event is rendered once per cohort and the same bytes go to each member. A connection whose
write raises is ended on its own (it reconnects and resumes with its cursor); the members after
it still get the event. A fan-out to thousands of sockets is a long stretch of event-loop time,
so it yields now and then: the mutation behind the event is still waiting for its answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from core import metrics
from core.process import requests_in_flight
from notifications.hub.cohorts import Cohort, CohortRegistry
from notifications.hub.replay import ReplayWindow
from notifications.hub.subscription import LiveSubscription
from notifications.publishing.publication import ChangeKind, Publication

logger = logging.getLogger(__name__)

SLICE_SECONDS = 0.005
GIVE_REQUESTS_SECONDS = 0.01


class Delivery:
    """Where the ordered feed delivers: each publication to the cohorts it concerns."""

    def __init__(self, registry: CohortRegistry, replays: ReplayWindow) -> None:
        self.registry = registry
        self.replays = replays

    async def deliver(self, publication: Publication) -> None:
        if publication.kind == ChangeKind.DELETED:
            # Before anyone else is served: no replay shows this blog's text from here on.
            self.replays.forget(publication.blog_id, publication.seq)
        await fan_out(publication, self.registry.for_change(publication.author, publication.kind))


async def fan_out(publication: Publication, cohorts: Iterable[Cohort]) -> None:
    seq = publication.seq
    loop = asyncio.get_running_loop()
    slice_ends = loop.time() + SLICE_SECONDS
    gave_requests = 0.0
    for cohort in list(cohorts):
        try:
            frames = await cohort.render(publication)
        except Exception as error:
            # A bug, not a bad input (resolver errors are part of the result): its members must
            # not silently miss the event, so they are closed and resume.
            logger.exception("Rendering publication %s failed for one cohort", seq)
            for subscription in list(cohort.members):
                _failed(subscription, error)
            continue
        sent = 0
        for count, subscription in enumerate(list(cohort.members), 1):
            try:
                sent += subscription.deliver(seq, frames)
            except Exception as error:
                _failed(subscription, error)
            if count % 64 == 0 and loop.time() > slice_ends:
                # Order is kept: the next event's fan-out starts only when this one has finished.
                await asyncio.sleep(0)
                if requests_in_flight() and gave_requests < GIVE_REQUESTS_SECONDS:
                    # An HTTP request (often the mutation behind this very event) is being served in
                    # Django's thread: leave it the GIL for a moment, at most this long per event.
                    began = loop.time()
                    await asyncio.sleep(0.001)
                    gave_requests += loop.time() - began
                slice_ends = loop.time() + SLICE_SECONDS
        # Once per cohort, not per subscriber: each metrics call has a fixed cost, and a fan-out
        # would pay it thousands of times.
        metrics.events_delivered(sent)
        metrics.delivery_latency(publication.announced_at)


def _failed(subscription: LiveSubscription, error: Exception) -> None:
    logger.error("Writing an event failed; closing that connection (%s: %s)", type(error).__name__, error)
    try:
        subscription.connection.send_failed(subscription, error)
    except Exception:
        logger.exception("Closing a connection whose write failed also failed")
    finally:
        subscription.active = False
