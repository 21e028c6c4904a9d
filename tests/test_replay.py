"""Shared replays (notifications/hub/replay.py), in-process: a list for a log, a counter for a renderer."""

import asyncio

import pytest

from notifications.hub.replay import PAGE, RenderCache, ReplayWindow, ResumePoints
from notifications.hub.subscription import EventFrames
from notifications.publishing.publication import Publication
from tests.factories import publication


class Log:
    def __init__(self, seqs) -> None:
        self.publications = [publication(seq, "ada" if seq % 2 else "bob") for seq in seqs]
        self.reads: list[tuple[int, int | None, str | None]] = []
        self.stall: tuple[int, int] | None = None  # a range whose read hangs until cancelled

    async def read(self, after: int, upto: int | None, limit: int, author: str | None) -> list[Publication]:
        if (after, upto) == self.stall:
            await asyncio.Event().wait()
        self.reads.append((after, upto, author))
        found = [
            p
            for p in self.publications
            if after < p.seq <= (upto if upto is not None else p.seq) and author in (None, p.author)
        ]
        return found[:limit]

    async def deletions(self, after: int) -> dict[int, int]:
        return {}


async def replay(window: ReplayWindow, after: int, upto: int, author: str | None = None) -> list[int]:
    return [p.seq async for page in window.pages(after, upto, author) for p in page]


async def test_ranges_inside_overlapping_and_beside_the_window_read_only_what_is_missing():
    log = Log(range(1, 101))
    window = ReplayWindow(log.read, log.deletions, fresh_seconds=60)
    assert await replay(window, 50, 60) == list(range(51, 61))
    assert await replay(window, 55, 60, "ada") == [57, 59]
    assert await replay(window, 40, 70) == list(range(41, 71))
    assert await replay(window, 45, 65, "bob") == list(range(46, 66, 2))
    assert log.reads == [(50, 60, None), (40, 50, None), (60, 70, None)]


async def test_a_window_past_its_freshness_is_read_again_so_deleted_blogs_are_skipped():
    log = Log(range(1, 11))
    window = ReplayWindow(log.read, log.deletions, fresh_seconds=0.05)
    assert await replay(window, 0, 10) == list(range(1, 11))
    log.publications = [p for p in log.publications if p.seq != 5]  # blog 5 deleted
    await asyncio.sleep(0.1)
    assert await replay(window, 0, 10) == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert len(log.reads) == 2


async def test_a_range_longer_than_the_window_is_read_for_that_subscriber_page_by_page():
    log = Log(range(1, 3 * PAGE + 1))
    window = ReplayWindow(log.read, log.deletions, max_span=100)
    pages = [page async for page in window.pages(0, 3 * PAGE, "ada")]
    assert [p.seq for page in pages for p in page] == list(range(1, 3 * PAGE + 1, 2))
    assert all(len(page) <= PAGE for page in pages)
    assert all(author == "ada" for _, _, author in log.reads)


async def test_nothing_to_replay_reads_nothing():
    log = Log(range(1, 11))
    window = ReplayWindow(log.read, log.deletions)
    assert await replay(window, 10, 10) == []
    assert log.reads == []


class Cohort:
    def __init__(self, key: str, fail: bool = False) -> None:
        self.key = key
        self.fail = fail
        self.renders = 0

    async def render(self, payload: Publication) -> EventFrames:
        self.renders += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("render failed")
        return EventFrames("x" * 1000, str(payload.seq))


async def test_concurrent_renders_of_one_event_for_one_cohort_run_once():
    cache = RenderCache()
    cohort = Cohort("a")
    frames = await asyncio.gather(*(cache.render(cohort, publication(7)) for _ in range(50)))
    assert cohort.renders == 1
    assert all(f is frames[0] for f in frames)
    await cache.render(Cohort("b"), publication(7))  # another cohort's result is its own
    assert len(cache) == 2


async def test_a_failed_render_is_not_cached_and_every_waiter_gets_an_error_or_a_result():
    cache = RenderCache()
    failing = Cohort("a", fail=True)
    results = await asyncio.gather(*(cache.render(failing, publication(1)) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert len(cache) == 0
    failing.fail = False
    assert (await cache.render(failing, publication(1))).cursor == "1"


async def test_the_render_cache_stays_within_its_bytes_and_drops_the_oldest():
    cache = RenderCache(max_bytes=20_000)
    cohort = Cohort("a")
    for seq in range(1, 21):
        await cache.render(cohort, publication(seq))
    assert cache.bytes <= 20_000
    assert 0 < len(cache) < 20
    renders = cohort.renders
    await cache.render(cohort, publication(20))  # the newest is kept
    assert cohort.renders == renders
    await cache.render(cohort, publication(1))  # the oldest was dropped
    assert cohort.renders == renders + 1


@pytest.mark.parametrize("after, upto", [(5, 3), (5, 5)])
async def test_an_empty_range_is_empty(after, upto):
    assert await replay(ReplayWindow(Log(range(1, 11)).read, Log([]).deletions), after, upto) == []


async def test_a_crowd_resuming_from_one_cursor_is_checked_once_and_a_bad_cursor_every_time():
    checks: list[str] = []

    async def check(cursor: str) -> int:
        checks.append(cursor)
        await asyncio.sleep(0.01)
        if not cursor.isdigit():
            raise ValueError(f"bad cursor {cursor}")
        return int(cursor)

    points = ResumePoints(check, ttl=0.2)
    assert await asyncio.gather(*(points.seq("42") for _ in range(100))) == [42] * 100
    assert checks == ["42"]
    for _ in range(2):
        with pytest.raises(ValueError):
            await points.seq("nope")
    assert checks == ["42", "nope", "nope"]
    await asyncio.sleep(0.3)  # past the ttl: checked again
    assert await points.seq("42") == 42
    assert checks.count("42") == 2


async def test_remembered_resume_points_are_bounded():
    async def check(cursor: str) -> int:
        return int(cursor)

    points = ResumePoints(check, max_entries=10)
    for seq in range(100):
        await points.seq(str(seq))
    assert len(points) == 10


async def test_a_replay_cancelled_while_the_window_grows_leaves_it_consistent():
    log = Log(range(1, 101))
    window = ReplayWindow(log.read, log.deletions, fresh_seconds=60)
    assert await replay(window, 50, 60) == list(range(51, 61))
    log.stall = (60, 80)
    stalled = asyncio.create_task(replay(window, 40, 80))  # grows down (40, 50], then up (60, 80]
    await asyncio.sleep(0.05)
    stalled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stalled
    log.stall = None
    assert await replay(window, 40, 80) == list(range(41, 81))
    assert await replay(window, 45, 55, "bob") == list(range(46, 56, 2))
