"""Ordering and gap-filling, in-process: the feed with a list for a publication log."""

import asyncio

import pytest

from notifications.hub import feed as feed_module
from notifications.hub.feed import OrderedFeed, Sequencer
from notifications.publishing.publication import Publication
from tests.factories import publication


def drain(sequencer: Sequencer) -> list[int]:
    out = []
    while (publication := sequencer.pop_ready()) is not None:
        out.append(publication.seq)
    return out


def test_in_order_arrivals_are_delivered_at_once():
    sequencer = Sequencer(position=10)
    for seq in (11, 12, 13):
        assert sequencer.offer(publication(seq))
    assert drain(sequencer) == [11, 12, 13]
    assert sequencer.position == 13 and not sequencer.waiting


def test_an_overtaking_event_waits_for_the_one_it_overtook():
    sequencer = Sequencer(position=0)
    sequencer.offer(publication(2))
    assert drain(sequencer) == [] and sequencer.waiting and sequencer.newest_waiting == 2
    sequencer.offer(publication(1))
    assert drain(sequencer) == [1, 2]


def test_duplicates_and_old_numbers_are_refused():
    sequencer = Sequencer(position=5)
    assert not sequencer.offer(publication(5))
    assert not sequencer.offer(publication(3))
    assert sequencer.offer(publication(7))
    assert not sequencer.offer(publication(7))


def test_a_gap_filled_from_the_log_skips_deleted_numbers():
    sequencer = Sequencer(position=0)
    sequencer.offer(publication(5))
    # The log has 2 and 4; 1 and 3 were deleted since; 5 already arrived.
    sequencer.fill([publication(2), publication(4), publication(5)], through=5)
    assert drain(sequencer) == [2, 4, 5]
    assert sequencer.position == 5


def test_a_resync_reads_up_to_the_newest_in_the_log():
    sequencer = Sequencer(position=3)
    sequencer.fill([publication(4), publication(6)], through=None)  # 5 was deleted
    assert drain(sequencer) == [4, 6]
    sequencer.fill([], through=None)  # nothing new: nothing invented
    assert sequencer.position == 6 and not sequencer.waiting


class ListLog:
    """A publication log in a list; `fail` makes the next reads raise."""

    def __init__(self, seqs: list[int]) -> None:
        self.seqs = seqs
        self.fail = 0
        self.reads: list[tuple[int, int | None]] = []

    async def read(self, after: int, upto: int | None, limit: int) -> list[Publication]:
        self.reads.append((after, upto))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database down")
        found = [s for s in self.seqs if s > after and (upto is None or s <= upto)]
        return [publication(s) for s in found[:limit]]


async def run_feed(log: ListLog, position: int = 0, window: float = 0.05):
    delivered: list[int] = []

    async def deliver(publication):
        delivered.append(publication.seq)

    feed = OrderedFeed(position, read_log=log.read, deliver=deliver, reorder_window=window)
    task = asyncio.ensure_future(feed.run())
    return feed, delivered, task


async def settle(condition, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_feed_reads_a_missing_number_from_the_log_after_the_reorder_window():
    log = ListLog([1, 2, 3])
    feed, delivered, task = await run_feed(log)
    try:
        feed.offer(publication(1))
        feed.offer(publication(3))  # 2 never arrives live (Redis was down when it was published)
        await settle(lambda: delivered == [1, 2, 3])
        assert log.reads == [(1, 3)]
    finally:
        task.cancel()


async def test_feed_waits_for_a_late_arrival_without_reading_the_log():
    log = ListLog([1, 2])
    feed, delivered, task = await run_feed(log, window=1.0)
    try:
        feed.offer(publication(2))
        await asyncio.sleep(0.05)
        assert delivered == []
        feed.offer(publication(1))
        await settle(lambda: delivered == [1, 2])
        assert log.reads == []
    finally:
        task.cancel()


async def test_feed_retries_a_log_that_cannot_be_read_and_never_goes_quiet(monkeypatch):
    monkeypatch.setattr(feed_module, "RETRY_FIRST_SECONDS", 0.02)
    log = ListLog([1, 2])
    log.fail = 3
    feed, delivered, task = await run_feed(log)
    try:
        feed.offer(publication(2))
        await settle(lambda: feed.problem is not None)
        assert "database down" in feed.problem
        await settle(lambda: delivered == [1, 2])
        assert feed.problem is None
        assert len(log.reads) == 4
    finally:
        task.cancel()


async def test_feed_catches_up_a_long_outage_page_by_page(monkeypatch):
    monkeypatch.setattr(feed_module, "LOG_PAGE", 10)
    log = ListLog([s for s in range(1, 36) if s != 17])  # 17 was deleted
    feed, delivered, task = await run_feed(log)
    try:
        feed.resync()
        await settle(lambda: feed.position == 35)
        assert delivered == [s for s in range(1, 36) if s != 17]
        assert len(log.reads) == 4  # 10 + 10 + 10 + 4 (and the short page ends it)
    finally:
        task.cancel()


async def test_a_delivery_that_raises_does_not_stop_the_next_ones():
    log = ListLog([])
    delivered = []

    async def deliver(publication):
        if publication.seq == 2:
            raise RuntimeError("boom")
        delivered.append(publication.seq)

    feed = OrderedFeed(0, read_log=log.read, deliver=deliver, reorder_window=0.05)
    task = asyncio.ensure_future(feed.run())
    try:
        for seq in (1, 2, 3):
            feed.offer(publication(seq))
        await settle(lambda: delivered == [1, 3])
        assert feed.position == 3
    finally:
        task.cancel()


@pytest.mark.parametrize("seqs", [[3, 1, 2], [2, 3, 1], [1, 3, 2]])
async def test_any_arrival_order_is_delivered_in_sequence(seqs):
    feed, delivered, task = await run_feed(ListLog([1, 2, 3]), window=5)
    try:
        for seq in seqs:
            feed.offer(publication(seq))
        await settle(lambda: delivered == [1, 2, 3])
    finally:
        task.cancel()
