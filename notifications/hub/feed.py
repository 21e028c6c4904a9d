"""What a process receives, in sequence order: the channel layer's publications, gaps from the log.

Three parts, each with one job, so each is read (and tested) alone:

- `LayerReceiver`: the hub's channel in the one group, every publication handed to the feed.
  channels-redis forgets a group's members after `group_expiry`, and all of them when Redis
  restarts empty, so membership is renewed. Whenever the layer could not be reached, what was
  published meanwhile may never arrive: after rejoining, the receiver asks for the log to be read.
  Works with any channel layer (tests use Channels' in-memory one).
- `Sequencer`: pure bookkeeping, no I/O, no clock: what to deliver next, and what is missing.
  Sequence numbers are contiguous among committed publications (the counter is taken under a
  lock held until commit, and rolls back with its transaction), so a number the log lacks below a
  newer one it has was a blog deleted since: it is skipped, not waited for.
- `OrderedFeed`: one that overtook an earlier one waits up to `reorder_window` seconds for its
  turn; an earlier one that never comes (it reached Redis late, or never) is read from the
  publication log. `resync()` asks for the log to be read now: after the channel layer was
  unreachable, and on the hub's periodic check. A log that cannot be read is retried with backoff
  until it can; the feed never gives up and goes quiet. `read_log` and `deliver` are given to it,
  so it is tested in-process (tests/test_sequencer.py) with a list for a log.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from channels.layers import BaseChannelLayer

from core import metrics
from notifications.publishing.broadcast import publication_from
from notifications.publishing.publication import Publication

logger = logging.getLogger(__name__)

LAYER_RETRY_FIRST_SECONDS = 0.1
LAYER_RETRY_MAX_SECONDS = 0.5  # one receiver per process: cheap to retry often, and delivery waits on it


class LayerReceiver:
    def __init__(self, layer: BaseChannelLayer, group: str) -> None:
        self.layer = layer
        self.group = group
        self.channel = ""
        self.problem: str | None = None  # why the layer cannot be reached, while it cannot

    async def join(self) -> None:
        """Name our channel (once) and join the group; raises while the layer is unreachable."""
        if not self.channel:
            # The default prefix shares channels-redis's one BRPOP loop with any other channel.
            self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)

    async def run(self, feed: OrderedFeed) -> None:
        """Hand `feed` every publication until cancelled; an unreachable layer is retried, then
        rejoined and the log read."""
        failures = 0
        while True:
            try:
                if failures:
                    # The layer may have restarted empty (our membership gone), and publications may
                    # have been committed meanwhile without reaching it.
                    await self.join()
                    failures, self.problem = 0, None
                    feed.resync()
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                self.problem = f"cannot reach the channel layer: {_describe(error)}"
                delay = min(LAYER_RETRY_MAX_SECONDS, LAYER_RETRY_FIRST_SECONDS * 2**failures) * random.uniform(0.5, 1.0)
                logger.warning("Hub %s; retrying in %.1fs", self.problem, delay)
                await asyncio.sleep(delay)
                continue
            try:
                publication = publication_from(message)
            except ValueError as error:
                # Another release's shape (a rolling deploy): the publication is in the log.
                logger.warning("Hub %s; reading the log instead", error)
                feed.resync()
                continue
            if publication is not None:
                feed.offer(publication)
                # The feed's task is ready to deliver it; the layer's next receive does a round of
                # bookkeeping before it waits. Yield first, so the event goes out before that.
                await asyncio.sleep(0)

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


class Sequencer:
    def __init__(self, position: int) -> None:
        # The last sequence number delivered or skipped; everything at or below it is done.
        self.position = position
        # None stands for a number the log no longer has: skipped when its turn comes.
        self._pending: dict[int, Publication | None] = {}

    def offer(self, publication: Publication) -> bool:
        """A publication arrived; False when it is already delivered or already waiting."""
        seq = publication.seq
        if seq <= self.position or seq in self._pending:
            return False
        self._pending[seq] = publication
        return True

    def pop_ready(self) -> Publication | None:
        """The next publication in order, or None while the next number has not arrived.

        Deleted numbers are passed over; `position` moves on before the publication is returned, so a
        subscriber arriving while it is being delivered knows it is covered.
        """
        while self.position + 1 in self._pending:
            publication = self._pending.pop(self.position + 1)
            self.position += 1
            if publication is not None:
                return publication
        return None

    @property
    def waiting(self) -> bool:
        """Something newer waits for an older number (a gap)."""
        return bool(self._pending)

    @property
    def newest_waiting(self) -> int | None:
        return max(self._pending) if self._pending else None

    def fill(self, found: Iterable[Publication], *, through: int | None) -> None:
        """What the log holds after `position`, up to `through` (None: up to its newest entry).

        Every number up to `through`, or up to the newest found when `through` is None, that
        neither arrived nor was found no longer exists: it is marked for skipping.
        """
        newest = self.position if through is None else through
        for publication in found:
            seq = publication.seq
            if seq > self.position:
                self._pending.setdefault(seq, publication)
                newest = max(newest, seq)
        for seq in range(self.position + 1, newest + 1):
            self._pending.setdefault(seq, None)


# (after, upto, limit) -> publications with after < seq <= upto (upto None: no bound), oldest first.
ReadLog = Callable[[int, int | None, int], Awaitable[list[Publication]]]
Deliver = Callable[[Publication], Awaitable[None]]

LOG_PAGE = 500  # publications read at once: a long outage is caught up page by page
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0

_RESYNC = "resync"
_GAP_TIMEOUT = "gap timeout"


class OrderedFeed:
    def __init__(self, position: int, *, read_log: ReadLog, deliver: Deliver, reorder_window: float) -> None:
        self.sequencer = Sequencer(position)
        self.read_log = read_log
        self.deliver = deliver
        self.reorder_window = reorder_window
        self.inbox: asyncio.Queue[Publication | str] = asyncio.Queue()
        self.problem: str | None = None  # why the log could not be read, while it cannot
        self._log_wanted = False
        self._gap_timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._failures = 0

    @property
    def position(self) -> int:
        """The last sequence number delivered (or skipped)."""
        return self.sequencer.position

    def offer(self, publication: Publication) -> None:
        self.inbox.put_nowait(publication)

    def resync(self) -> None:
        self.inbox.put_nowait(_RESYNC)

    async def run(self) -> None:
        while True:
            item = await self.inbox.get()
            if isinstance(item, Publication):
                self.sequencer.offer(item)
            elif item == _RESYNC:
                self._log_wanted = True
            elif item == _GAP_TIMEOUT:
                self._log_wanted = self._log_wanted or self.sequencer.waiting
            await self._advance()

    async def _advance(self) -> None:
        while True:
            await self._deliver_ready()
            if not self._log_wanted:
                break
            if self._retry_timer is not None:
                return  # a read failed: the retry timer asks again
            if not await self._read_log_page():
                return
        if self.sequencer.waiting and self._gap_timer is None:
            # A later publication overtook an earlier one (two publishers racing to Redis), or the
            # earlier one never reached Redis: give it a moment, then read it from the log.
            self._gap_timer = asyncio.get_running_loop().call_later(self.reorder_window, self._gap_timeout)

    async def _deliver_ready(self) -> None:
        while (publication := self.sequencer.pop_ready()) is not None:
            try:
                await self.deliver(publication)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One event's failure must not stop the ones after it (fan-out isolates sockets).
                logger.exception("Delivering publication %s failed", publication.seq)

    async def _read_log_page(self) -> bool:
        """Read the next page of what the log has after `position`; False when it failed."""
        through = self.sequencer.newest_waiting
        try:
            found = await self.read_log(self.position, through, LOG_PAGE)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._failures += 1
            delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (self._failures - 1)) * random.uniform(0.5, 1)
            self.problem = f"cannot read the publication log: {type(error).__name__}: {error}"
            logger.warning("Hub %s; retrying in %.1fs", self.problem, delay)
            self._retry_timer = asyncio.get_running_loop().call_later(delay, self._retry)
            return False
        self._failures, self.problem = 0, None
        metrics.publications_read_from_log(len(found))
        full_page = len(found) >= LOG_PAGE
        # A full page may end before `through`: numbers past it are not known to be deleted yet.
        self.sequencer.fill(found, through=None if full_page else through)
        self._log_wanted = full_page
        if found:
            logger.info("Hub read %d publication(s) from the log, up to seq %d", len(found), found[-1].seq)
        return True

    def _gap_timeout(self) -> None:
        self._gap_timer = None
        self.inbox.put_nowait(_GAP_TIMEOUT)

    def _retry(self) -> None:
        self._retry_timer = None
        self.inbox.put_nowait(_RESYNC)
