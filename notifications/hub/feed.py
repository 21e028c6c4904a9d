"""The ordered stream of publications a process delivers: live arrivals, gaps filled from the log.

Live publications come from the channel layer (`offer`). One that overtook an earlier one waits
up to `reorder_window` seconds for its turn; an earlier one that never comes (it reached Redis
late, or never) is read from the publication log. `resync()` asks for the log to be read now:
after the channel layer was unreachable, and on the hub's periodic check. A log that cannot be
read is retried with backoff until it can; the feed never gives up and goes quiet.

It does no I/O of its own: `read_log` and `deliver` are given to it, so it is tested in-process
(tests/test_feed.py) with a list for a log.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from notifications.hub.sequencer import Sequencer
from notifications.publishing.publication import Publication

logger = logging.getLogger(__name__)

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
