"""Replays for resuming subscribers, shared: a crowd resuming at once costs one log read and one
render per event, not one per subscriber.

A subscriber that resumes with `after:` first gets what it missed from the publication log. When
an instance dies, its subscribers resume on the others all at once, from a handful of cursors.
Read and rendered for each of them alone, their replays queue on Django's one database thread and
render the same events once per subscriber, and live delivery to them waits behind it all. Here:

- `ReplayWindow`: one log read at a time, and what was read serves every replay whose range it
  covers for `FRESH_SECONDS` (other authors' publications filtered out in memory). A range next
  to it or overlapping it is added by reading only what is missing. Once older than that, it is
  read again. Ranges longer than `MAX_SPAN` numbers are read directly. Deleted means deleted:
  before a replay is served from what was read earlier, the tombstones committed since are read
  (one read, begun after the replay asked, shared by every replay waiting for it), and the
  deleted blogs' creations and edits are dropped, as the log itself dropped them; a deletion
  the hub delivers drops them at once. (A read racing the deletion's commit is ordered before it.)
- `RenderCache`: a cohort's result for one publication, kept (bounded in bytes) so every member
  replaying it gets the same bytes, and a render under way is awaited, not repeated.
- `ResumePoints`: whether a cursor can be resumed from (two queries), checked once for the crowd.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from core.lru import CostBoundedLRU
from notifications.hub.subscription import EventFrames
from notifications.publishing.publication import Publication

FRESH_SECONDS = 1.0
PAGE = 500
# Sequence numbers in the one shared window: no more payloads in memory than one page of a direct
# read (a blog's content may be 100,000 characters).
MAX_SPAN = PAGE
RENDER_CACHE_BYTES = 16 * 1024 * 1024
RESUME_POINT_SECONDS = 10.0
RESUME_POINT_ENTRIES = 4096

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# (after, upto, limit, author) -> publications with after < seq <= upto, oldest first.
ReadLog = Callable[[int, int | None, int, str | None], Awaitable[list[Publication]]]
# after -> {blog id: seq of its tombstone} for the deletions numbered after `after`.
ReadDeletions = Callable[[int], Awaitable[dict[int, int]]]


def _seq(publication: Publication) -> int:
    return publication.seq


class ReplayWindow:
    def __init__(
        self,
        read_log: ReadLog,
        read_deletions: ReadDeletions,
        *,
        fresh_seconds: float = FRESH_SECONDS,
        max_span: int = MAX_SPAN,
    ) -> None:
        self._read_log = read_log
        self._deletions: FreshRead[dict[int, int]] = FreshRead(lambda: read_deletions(self._lo))
        self.fresh_seconds = fresh_seconds
        self.max_span = max_span
        self._lock = asyncio.Lock()
        # Every publication with lo < seq <= hi, oldest first, as read at `_read_at` (or later).
        self._lo = self._hi = 0
        self._items: list[Publication] = []
        self._read_at: float | None = None

    async def pages(self, after: int, upto: int, author: str | None) -> AsyncIterator[list[Publication]]:
        """Publications with after < seq <= upto, by `author` (None: by anyone), oldest first, a page at a time."""
        if upto <= after:
            return
        if upto - after > self.max_span:
            # Far behind: read for this subscriber alone, a page at a time (never all in memory).
            while True:
                page = await self._read_log(after, upto, PAGE, author)
                yield page
                if len(page) < PAGE:
                    return
                after = page[-1].seq
        if self._is_fresh():
            deletions = await self._deletions.get()  # what was read may predate a deletion
            async with self._lock:
                self._drop_deleted(deletions)
        async with self._lock:
            await self._cover(after, upto)
            start = bisect.bisect_right(self._items, after, key=_seq)
            end = bisect.bisect_right(self._items, upto, key=_seq)
            found = [p for p in self._items[start:end] if author is None or p.author == author]
        yield found

    def forget(self, blog_id: int, deleted_seq: int) -> None:
        """A deletion was delivered: drop the blog's earlier changes from what is kept."""
        self._drop_deleted({blog_id: deleted_seq})

    def _drop_deleted(self, deletions: dict[int, int]) -> None:
        if deletions and self._items:
            self._items = [p for p in self._items if not (p.blog_id in deletions and p.seq < deletions[p.blog_id])]

    def _is_fresh(self) -> bool:
        now = asyncio.get_running_loop().time()
        return self._read_at is not None and now - self._read_at <= self.fresh_seconds

    async def _cover(self, after: int, upto: int) -> None:
        now = asyncio.get_running_loop().time()
        fresh = self._read_at is not None and now - self._read_at <= self.fresh_seconds
        touching = after <= self._hi and upto >= self._lo
        if not fresh or not touching or max(upto, self._hi) - min(after, self._lo) > self.max_span:
            items = await self._read_all(after, upto)
            self._lo, self._hi, self._items, self._read_at = after, upto, items, now
        else:
            if after < self._lo:
                self._items[:0] = await self._read_all(after, self._lo)
                self._lo = after
            if upto > self._hi:
                self._items += await self._read_all(self._hi, upto)
                self._hi = upto

    async def _read_all(self, after: int, upto: int) -> list[Publication]:
        found: list[Publication] = []
        while True:
            page = await self._read_log(after, upto, PAGE, None)
            found += page
            if len(page) < PAGE:
                return found
            after = page[-1].seq


class FreshRead(Generic[V]):
    """A read every caller needs begun after it arrived, shared by all who arrive while it waits to begin.

    A caller arriving while a read is under way cannot use it (it may predate what the caller must
    see): it waits for the next one, which begins when the current one ends and serves everyone
    who arrived meanwhile. A crowd thus costs about one read per read's duration.
    """

    def __init__(self, read: Callable[[], Awaitable[V]]) -> None:
        self._read = read
        self._running: asyncio.Future[V] | None = None
        self._next: asyncio.Future[V] | None = None

    async def get(self) -> V:
        if self._next is None:
            self._next = asyncio.ensure_future(self._after(self._running))
            self._next.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(self._next)

    async def _after(self, running: asyncio.Future[V] | None) -> V:
        if running is not None:
            await asyncio.wait([running])
        this, self._next = self._next, None
        self._running = this
        try:
            return await self._read()
        finally:
            if self._running is this:
                self._running = None


class SingleFlight(Generic[K, V]):
    """One call per key at a time: callers that arrive while it runs get its result (or its error)."""

    def __init__(self) -> None:
        self._pending: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        while (pending := self._pending.get(key)) is not None:
            await asyncio.wait([pending])  # raises nothing of the call's: its result or error comes below
            if not pending.cancelled():
                return pending.result()
            # The caller running it was cancelled: run it here instead.
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await call()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # marked retrieved: there may be nobody waiting
            raise
        finally:
            del self._pending[key]
        future.set_result(value)
        return value


class Renders(Protocol):
    """What the cache needs of a cohort."""

    @property
    def key(self) -> Hashable: ...

    async def render(self, publication: Publication) -> EventFrames: ...


class RenderCache:
    def __init__(self, max_bytes: int = RENDER_CACHE_BYTES) -> None:
        self._done: CostBoundedLRU[tuple[Hashable, int], EventFrames] = CostBoundedLRU(max_bytes)
        self._flights: SingleFlight[tuple[Hashable, int], EventFrames] = SingleFlight()

    @property
    def bytes(self) -> int:
        return self._done.bytes

    async def render(self, cohort: Renders, publication: Publication) -> EventFrames:
        key = (cohort.key, publication.seq)
        done = self._done.get(key)
        if done is not None:
            return done

        async def render_and_keep() -> EventFrames:
            frames = await cohort.render(publication)
            # The result, and a wrapping of about its size per transport that uses it.
            self._done.put(key, frames, 4 * len(frames.payload_json) + 256)
            return frames

        return await self._flights.run(key, render_and_keep)

    def __len__(self) -> int:
        return len(self._done)


class ResumePoints:
    """Where each cursor resumes, checked in the database once per `ttl` however many resume from it.

    Only cursors found good are remembered (at most `max_entries`): a bad one is checked each time.
    A cursor may thus be accepted up to `ttl` after it left the replay window, which is days long.
    """

    def __init__(
        self,
        check: Callable[[str], Awaitable[int]],
        *,
        ttl: float = RESUME_POINT_SECONDS,
        max_entries: int = RESUME_POINT_ENTRIES,
    ) -> None:
        self._check = check
        self.ttl = ttl
        self._known: CostBoundedLRU[str, tuple[int, float]] = CostBoundedLRU(max_entries)  # cost 1 each
        self._flights: SingleFlight[str, int] = SingleFlight()

    async def seq(self, cursor: str) -> int:
        now = asyncio.get_running_loop().time()
        known = self._known.get(cursor)
        if known is not None and now - known[1] <= self.ttl:
            return known[0]

        async def check_and_keep() -> int:
            seq = await self._check(cursor)
            self._known.put(cursor, (seq, now), 1)
            return seq

        return await self._flights.run(cursor, check_and_keep)

    def __len__(self) -> int:
        return len(self._known)
