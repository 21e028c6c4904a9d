"""The hub's parts wired together, in-process: Channels' in-memory layer, a list for a log.

Nothing here needs Redis, Daphne or a database: the resume seam, hub start-up failures and a
send that raises are driven directly. The live tests (test_resume, test_faults, test_stack)
prove the same paths on real processes.
"""

import asyncio
import json

import pytest
from channels.layers import InMemoryChannelLayer

from api import validation
from notifications.hub import hub as hub_module
from notifications.hub.cohorts import Cohort, cohort_key
from notifications.hub.hub import Hub, HubUnavailable
from notifications.hub.subscription import EventFrames, LiveSubscription
from notifications.publishing.broadcast import HUB_GROUP, MESSAGE_TYPE, message_for, publication_from
from notifications.publishing.publication import cursor_for
from tests.factories import publication
from tests.hubs import QUERY, Log, QuietConnection, publish


class Sink(QuietConnection):
    """A connection: records what it was sent; `fail_on` makes one write raise."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.seqs: list[int] = []
        self.fail_on = fail_on
        self.failed: list[Exception] = []

    def send_event(self, subscription: LiveSubscription, frames: EventFrames) -> None:
        event = json.loads(frames.payload_json)["data"]["blogPublished"]
        seq = int(event["blog"]["title"].split()[1])
        if seq == self.fail_on:
            raise BrokenPipeError("socket gone")
        self.seqs.append(seq)

    def send_failed(self, subscription: LiveSubscription, error: Exception) -> None:
        self.failed.append(error)  # a real connection closes itself; the fan-out deactivates it


def subscription(sink: Sink, after: int | None = None, author: str | None = None) -> LiveSubscription:
    variables = {"author": author, "after": cursor_for(after) if after is not None else None}
    prepared = validation.check(QUERY, variables).prepared
    assert prepared is not None and prepared.document is not None
    key = cohort_key(prepared, None, variables)
    return LiveSubscription(sink, "1", key, prepared.document, None, variables, author, after)


@pytest.fixture
async def running(settings):
    settings.HUB_REORDER_WINDOW_SECONDS = 0.05
    settings.HUB_START_WAIT_SECONDS = 0.3
    settings.HUB_LOG_CHECK_SECONDS = 3600
    layer = InMemoryChannelLayer()
    log = Log()
    hub = Hub(layer, read_log=log.read, read_position=log.position, read_deletions=log.deletions)
    yield hub, layer, log
    await hub.close()


async def settle(condition, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_live_events_reach_subscribers_in_order(running):
    hub, layer, log = running
    sink = Sink()
    await hub.subscribe(subscription(sink))
    await publish(layer, log, 1, 2, 3)
    await settle(lambda: sink.seqs == [1, 2, 3])


def test_a_publication_crosses_the_channel_layer_unchanged():
    sent = publication(7, "grace", title="Ünïcode & <tags>")
    message = message_for(sent)
    assert message["type"] == MESSAGE_TYPE
    assert publication_from(message) == sent
    assert publication_from({"type": "something.else"}) is None


async def test_an_unreadable_publication_message_makes_the_hub_read_the_log(running):
    """A message of the project's type it cannot read (another release's shape) loses nothing."""
    hub, layer, log = running
    sink = Sink()
    await hub.subscribe(subscription(sink))
    await publish(layer, log, 1, live=False)
    await layer.group_send(HUB_GROUP, {"type": MESSAGE_TYPE, "publication": {"seq": "one"}})
    await settle(lambda: sink.seqs == [1])


@pytest.mark.parametrize(
    ("hub_at", "cursor", "expected"),
    [
        (5, 2, [3, 4, 5, 6, 7]),  # hub ahead of the cursor: replay 3..5, then live 6, 7
        (5, 5, [6, 7]),  # equal: nothing to replay
        (5, 6, [7]),  # hub behind (another instance delivered 6 first): 6 is not sent again
    ],
)
async def test_the_resume_seam_has_no_gap_and_no_duplicate(running, hub_at, cursor, expected):
    hub, layer, log = running
    await publish(layer, log, *range(1, hub_at + 1), live=False)
    await hub.subscribe(subscription(Sink()))  # starts the hub at the log's position
    assert hub.feed is not None and hub.feed.position == hub_at
    sink = Sink()
    await hub.subscribe(subscription(sink, after=cursor))
    await publish(layer, log, *range(hub_at + 1, 8))
    await settle(lambda: hub.feed is not None and hub.feed.position == 7)
    await asyncio.sleep(0.05)
    assert sink.seqs == expected


async def test_live_events_during_a_replay_are_held_then_sent_once(running):
    hub, layer, log = running
    await publish(layer, log, 1, 2, 3, live=False)
    await hub.subscribe(subscription(Sink()))
    slow_read = asyncio.Event()

    async def publish_meanwhile(after, upto, author):
        if author is None and upto == 3 and after == 0:  # the replay of the resuming subscriber
            log.before_read = None
            await publish(layer, log, 4, 5)
            await settle(lambda: hub.feed is not None and hub.feed.position == 5)
            slow_read.set()

    log.before_read = publish_meanwhile
    sink = Sink()
    await hub.subscribe(subscription(sink, after=0))
    assert slow_read.is_set()
    assert sink.seqs == [1, 2, 3, 4, 5]


async def test_a_send_that_raises_ends_only_that_connection(running):
    hub, layer, log = running
    sinks = [Sink(), Sink(fail_on=2), Sink()]
    for sink in sinks:
        await hub.subscribe(subscription(sink))
    await publish(layer, log, 1, 2, 3)
    await settle(lambda: sinks[2].seqs == [1, 2, 3])
    assert sinks[0].seqs == [1, 2, 3]
    assert sinks[1].seqs == [1] and [type(e) for e in sinks[1].failed] == [BrokenPipeError]


async def test_a_hub_that_cannot_start_refuses_then_recovers(running, monkeypatch):
    monkeypatch.setattr(hub_module, "START_RETRY_FIRST_SECONDS", 0.02)
    monkeypatch.setattr(hub_module, "START_RETRY_MAX_SECONDS", 0.05)
    hub, layer, log = running
    log.down = True  # the database is down when the first subscriber arrives
    with pytest.raises(HubUnavailable, match="database down"):
        await hub.subscribe(subscription(Sink()))
    assert hub.problem is not None and "database down" in hub.problem
    log.down = False
    sink = Sink()
    await hub.subscribe(subscription(sink))  # the hub kept retrying by itself
    assert hub.problem is None
    await publish(layer, log, 1)
    await settle(lambda: sink.seqs == [1])


async def test_a_hub_slow_to_start_keeps_its_subscribers_waiting_and_refuses_none(running):
    """Starting takes three times HUB_START_WAIT_SECONDS, but nothing failed: nobody is refused."""
    hub, layer, log = running
    log.position_delay = 0.9
    sinks = [Sink() for _ in range(200)]
    await asyncio.gather(*(hub.subscribe(subscription(sink)) for sink in sinks))
    assert hub.problem is None
    await publish(layer, log, 1)
    await settle(lambda: all(sink.seqs == [1] for sink in sinks))


async def test_a_hub_whose_start_hangs_refuses_once_the_attempt_times_out(running, monkeypatch):
    monkeypatch.setattr(hub_module, "START_ATTEMPT_SECONDS", 0.2)
    hub, _, log = running
    log.position_delay = 3600  # a database that accepts and never answers
    with pytest.raises(HubUnavailable, match="TimeoutError"):
        await asyncio.wait_for(hub.subscribe(subscription(Sink())), 5)


async def test_a_publication_whose_broadcast_never_happened_arrives_with_the_log_check(running, settings):
    settings.HUB_LOG_CHECK_SECONDS = 0.1
    hub, layer, log = running
    sink = Sink()
    await hub.subscribe(subscription(sink))
    await publish(layer, log, 1, live=False)  # committed, but its writer died before the broadcast
    await settle(lambda: sink.seqs == [1])


async def test_while_nothing_is_missed_the_log_check_reads_only_the_counter(running, settings):
    settings.HUB_LOG_CHECK_SECONDS = 0.05
    hub, layer, log = running
    await publish(layer, log, 1, 2, live=False)
    sink = Sink()
    await hub.subscribe(subscription(sink))
    await publish(layer, log, 3)
    await settle(lambda: sink.seqs == [3])
    log.reads.clear()
    checks = log.position_reads
    await asyncio.sleep(0.5)
    assert log.position_reads >= checks + 3
    assert log.reads == []  # the publication log itself: not read while nothing is missed
    await publish(layer, log, 4, live=False)
    await settle(lambda: sink.seqs == [3, 4])
    assert len(log.reads) == 1


async def test_cohorts_ignore_after_and_keep_everything_else(running):
    first = subscription(Sink(), after=3)
    second = subscription(Sink(), after=9)
    other_author = subscription(Sink(), after=3, author="bob")
    assert first.cohort_key == second.cohort_key != other_author.cohort_key
    literal = validation.check('subscription { blogPublished(after: "x") { cursor blog { title } } }').prepared
    plain = validation.check("subscription { blogPublished { cursor blog { title } } }").prepared
    assert literal is not None and plain is not None
    assert cohort_key(literal, None, {}) == cohort_key(plain, None, {})
    # A variable that `after` shares with another field still counts.
    shared = validation.check("subscription S($c: String) { blogPublished(author: $c, after: $c) { cursor } }").prepared
    assert shared is not None
    assert cohort_key(shared, None, {"c": "a"}) != cohort_key(shared, None, {"c": "b"})


async def test_a_crowd_resuming_from_many_cursors_shares_log_reads_and_renders(running, monkeypatch):
    """After an instance dies, its subscribers resume here at once: one read and one render per event."""
    hub, layer, log = running
    await publish(layer, log, *range(1, 41))
    await hub.subscribe(subscription(Sink()))
    await settle(lambda: hub.feed is not None and hub.feed.position == 40)
    renders = 0
    render = Cohort.render

    async def counting_render(cohort, publication):
        nonlocal renders
        renders += 1
        return await render(cohort, publication)

    monkeypatch.setattr(Cohort, "render", counting_render)
    log.reads.clear()
    cursors = [20 + i % 20 for i in range(400)]  # 20 distinct cursors, 400 subscribers
    sinks = [Sink() for _ in cursors]
    await asyncio.gather(
        *(hub.subscribe(subscription(sink, after=after)) for sink, after in zip(sinks, cursors, strict=True))
    )
    await publish(layer, log, 41)
    await settle(lambda: all(sink.seqs[-1:] == [41] for sink in sinks))
    for sink, after in zip(sinks, cursors, strict=True):
        assert sink.seqs == list(range(after + 1, 42))
    assert len(log.reads) <= 20, log.reads  # one per subscriber (400) before
    assert renders <= 20 + 2, renders  # the 20 replayed events, 41 and the first subscriber's cohort
