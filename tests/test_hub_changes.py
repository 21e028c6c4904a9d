"""Edits and deletions through the hub, in-process: who gets which kind, and what a replay may show.

The live tests (tests/test_changes.py) prove the same on real processes.
"""

import asyncio
import json
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from api import validation
from notifications.hub.cohorts import Cohort, cohort_key
from notifications.hub.hub import Hub
from notifications.hub.subscription import EventFrames, LiveSubscription
from notifications.publishing.broadcast import HUB_GROUP, message_for
from notifications.publishing.publication import ChangeKind, Publication, cursor_for
from tests.factories import publication
from tests.hubs import Log, QuietConnection, settle

CHANGES = """subscription Changes($author: String, $after: String) {
  blogChanged(author: $author, after: $after) { cursor kind blogId blog { title content } }
}"""
PUBLISHED = """subscription Published($author: String, $after: String) {
  blogPublished(author: $author, after: $after) { cursor blog { title } }
}"""
CREATED, UPDATED, DELETED = ChangeKind.CREATED, ChangeKind.UPDATED, ChangeKind.DELETED


def change(seq: int, kind: ChangeKind, blog_id: int, title: str = "", author: str = "ada") -> Publication:
    return publication(seq, author, title=title, kind=kind, blog_id=blog_id)


class Sink(QuietConnection):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send_event(self, subscription: LiveSubscription, frames: EventFrames) -> None:
        data = json.loads(frames.payload_json)["data"]
        self.events.append(data.get("blogChanged") or data["blogPublished"])

    def send_failed(self, subscription: LiveSubscription, error: Exception) -> None:
        raise AssertionError(error)

    def seen(self) -> list[tuple[str | None, str | None]]:
        return [(e.get("kind"), (e.get("blog") or {}).get("title")) for e in self.events]


def subscription(sink: Sink, query: str, after: int | None = None, author: str | None = None) -> LiveSubscription:
    variables = {"author": author, "after": cursor_for(after) if after is not None else None}
    prepared = validation.check(query, variables).prepared
    assert prepared is not None and prepared.document is not None
    key = cohort_key(prepared, None, variables)
    return LiveSubscription(sink, "1", key, prepared.document, None, variables, author, after)


async def record(layer: InMemoryChannelLayer, log: Log, entry: Publication, *, live: bool = True) -> None:
    """Commit one change to the fake log (a deletion takes the blog's earlier entries with it), then broadcast it."""
    if entry.kind == DELETED:
        log.publications[:] = [p for p in log.publications if p.blog_id != entry.blog_id]
    log.publications.append(entry)
    if live:
        await layer.group_send(HUB_GROUP, message_for(entry))


@pytest.fixture
async def running(settings):
    settings.HUB_REORDER_WINDOW_SECONDS = 0.05
    settings.HUB_START_WAIT_SECONDS = 0.3
    settings.HUB_LOG_CHECK_SECONDS = 3600
    layer, log = InMemoryChannelLayer(), Log()
    hub = Hub(layer, read_log=log.read, read_position=log.position, read_deletions=log.deletions)
    yield hub, layer, log
    await hub.close()


async def test_blog_changed_gets_every_kind_in_order_and_blog_published_only_creations(running):
    hub, layer, log = running
    changes, published, bobs = Sink(), Sink(), Sink()
    await hub.subscribe(subscription(changes, CHANGES))
    await hub.subscribe(subscription(published, PUBLISHED))
    await hub.subscribe(subscription(bobs, CHANGES, author="bob"))
    await record(layer, log, change(1, CREATED, 10, "first"))
    await record(layer, log, change(2, UPDATED, 10, "edited"))
    await record(layer, log, change(3, CREATED, 11, "bob's", author="bob"))
    await record(layer, log, change(4, DELETED, 10))
    await record(layer, log, change(5, DELETED, 11, author="bob"))
    await settle(lambda: len(changes.events) == 5 and len(bobs.events) == 2)
    assert changes.seen() == [
        ("CREATED", "first"),
        ("UPDATED", "edited"),
        ("CREATED", "bob's"),
        ("DELETED", None),
        ("DELETED", None),
    ]
    assert changes.events[3]["blogId"] == "QmxvZzoxMA==" and changes.events[3]["blog"] is None
    assert bobs.seen() == [("CREATED", "bob's"), ("DELETED", None)]
    await asyncio.sleep(0.05)
    assert published.seen() == [(None, "first"), (None, "bob's")]


async def test_a_replay_after_a_deletion_the_hub_has_not_heard_of_shows_no_text_of_it(running):
    """The shared replay window read the blog before its deletion committed; the deletion has not
    reached this hub yet (Redis slow or down). A replay asked for after the commit must not show it."""
    hub, layer, log = running
    await record(layer, log, change(1, CREATED, 10, "kept"), live=False)
    await record(layer, log, change(2, CREATED, 11, "doomed"), live=False)
    await record(layer, log, change(3, UPDATED, 11, "doomed, edited"), live=False)
    await hub.subscribe(subscription(Sink(), CHANGES))  # starts the hub at seq 3
    early = Sink()
    await hub.subscribe(subscription(early, CHANGES, after=0))
    assert early.seen() == [("CREATED", "kept"), ("CREATED", "doomed"), ("UPDATED", "doomed, edited")]

    await record(layer, log, change(4, DELETED, 11), live=False)  # committed; not broadcast
    for query in (CHANGES, PUBLISHED):
        late = Sink()
        await hub.subscribe(subscription(late, query, after=0))
        assert "doomed" not in repr(late.events), late.events
        assert [e["blog"]["title"] for e in late.events] == ["kept"]


async def test_a_delivered_deletion_drops_the_blogs_text_from_later_replays(running):
    hub, layer, log = running
    await record(layer, log, change(1, CREATED, 10, "doomed"), live=False)
    await hub.subscribe(subscription(Sink(), CHANGES))
    first = Sink()
    await hub.subscribe(subscription(first, CHANGES, after=0))
    assert first.seen() == [("CREATED", "doomed")]
    await record(layer, log, change(2, DELETED, 10))
    await settle(lambda: hub.feed is not None and hub.feed.position == 2)
    again = Sink()
    await hub.subscribe(subscription(again, CHANGES, after=0))
    assert again.seen() == [("DELETED", None)]


async def test_identical_blog_changed_subscriptions_share_one_execution_per_change(running, monkeypatch):
    """The cohort key holds the subscription field: blogChanged and blogPublished never share a result,
    and identical blogChanged subscriptions (whatever their `after:`) render each change once."""
    hub, layer, log = running
    renders: list[tuple[str, int]] = []
    original = Cohort.render

    async def counted(self: Cohort, publication: Publication):
        renders.append(("blogChanged" if ChangeKind.UPDATED in self.kinds else "blogPublished", publication.seq))
        return await original(self, publication)

    monkeypatch.setattr(Cohort, "render", counted)
    sinks = [Sink() for _ in range(3)]
    await hub.subscribe(subscription(sinks[0], CHANGES))
    await hub.subscribe(subscription(sinks[1], CHANGES, after=0))
    await hub.subscribe(subscription(sinks[2], PUBLISHED))
    await record(layer, log, change(1, CREATED, 10, "first"))
    await record(layer, log, change(2, UPDATED, 10, "edited"))
    await settle(lambda: len(sinks[0].events) == 2 and len(sinks[1].events) == 2 and len(sinks[2].events) == 1)
    assert sorted(renders) == [("blogChanged", 1), ("blogChanged", 2), ("blogPublished", 1)]
