"""The hub's side of the channel layer: one channel in one group, every publication handed on.

channels-redis forgets a group's members after `group_expiry`, and all of them when Redis
restarts empty, so membership is renewed. Whenever the layer could not be reached, what was
published meanwhile may never arrive: after rejoining, the receiver asks for the log to be read.
Works with any channel layer (tests use Channels' in-memory one).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from channels.layers import BaseChannelLayer

from notifications.publishing.broadcast import publication_from
from notifications.publishing.publication import Publication

logger = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 0.5  # one receiver per process: cheap to retry often, and delivery waits on it


class LayerReceiver:
    def __init__(
        self,
        layer: BaseChannelLayer,
        group: str,
        *,
        on_publication: Callable[[Publication], None],
        on_resync: Callable[[], None],
    ) -> None:
        self.layer = layer
        self.group = group
        self.on_publication = on_publication
        self.on_resync = on_resync
        self.channel = ""
        self.problem: str | None = None  # why the layer cannot be reached, while it cannot

    async def join(self) -> None:
        """Name our channel (once) and join the group; raises while the layer is unreachable."""
        if not self.channel:
            # The default prefix shares channels-redis's one BRPOP loop with any other channel.
            self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)

    async def run(self) -> None:
        """Receive until cancelled; an unreachable layer is retried, then rejoined and the log read."""
        failures = 0
        while True:
            try:
                if failures:
                    # The layer may have restarted empty (our membership gone), and publications may
                    # have been committed meanwhile without reaching it.
                    await self.join()
                    failures, self.problem = 0, None
                    self.on_resync()
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                self.problem = f"cannot reach the channel layer: {_describe(error)}"
                delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2**failures) * random.uniform(0.5, 1.0)
                logger.warning("Hub %s; retrying in %.1fs", self.problem, delay)
                await asyncio.sleep(delay)
                continue
            try:
                publication = publication_from(message)
            except ValueError as error:
                # Another release's shape (a rolling deploy): the publication is in the log.
                logger.warning("Hub %s; reading the log instead", error)
                self.on_resync()
                continue
            if publication is not None:
                self.on_publication(publication)

    async def renew(self, interval: float) -> None:
        """Join again every `interval` seconds, so neither expiry nor a Redis restart drops us."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.join()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("Hub could not renew its group membership: %s", _describe(error))

    def renew_interval(self) -> float:
        expiry: Any = getattr(self.layer, "group_expiry", 86400)
        return max(0.5, min(60.0, float(expiry) / 3))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
