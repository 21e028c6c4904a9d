"""Publications in sequence order: what to deliver next, and what is missing.

Pure bookkeeping, no I/O, no clock. The feed (notifications/hub/feed.py) offers it what arrives live
and what it reads from the publication log, and delivers what `pop_ready()` gives, in order.
Sequence numbers are contiguous among committed publications (the counter is taken under a lock
held until commit, and rolls back with its transaction), so a number the log lacks below a
newer one it has was a blog deleted since: it is skipped, not waited for.
"""

from __future__ import annotations

from collections.abc import Iterable

from notifications.publishing.publication import Publication


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
