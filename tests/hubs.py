"""Publications without a database, for the in-process hub tests (tests/test_hub.py,
tests/test_http_subscriptions_asgi.py): a publication log in a list, and publishing onto a channel layer."""

import asyncio
from collections.abc import Awaitable, Callable

from channels.layers import InMemoryChannelLayer

from notifications.publishing.broadcast import HUB_GROUP, message_for
from notifications.publishing.publication import ChangeKind, Publication
from tests.factories import publication

QUERY = """subscription Listen($author: String, $after: String) {
  blogPublished(author: $author, after: $after) { cursor blog { title } }
}"""


class Log:
    """The publication log as the hub reads it; `down` makes every read fail like a database that is gone."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.down = False
        self.reads: list[tuple[int, int | None, str | None]] = []
        self.position_reads = 0
        self.before_read: Callable[[int, int | None, str | None], Awaitable[None]] | None = None
        self.position_delay = 0.0  # a slow database (a fresh instance busy with a connect storm)

    async def read(self, after: int, upto: int | None, limit: int, author: str | None) -> list[Publication]:
        if self.before_read is not None:
            await self.before_read(after, upto, author)
        if self.down:
            raise ConnectionError("database down")
        self.reads.append((after, upto, author))
        found = [
            p
            for p in self.publications
            if p.seq > after and (upto is None or p.seq <= upto) and author in (None, p.author)
        ]
        return found[:limit]

    async def deletions(self, after: int) -> dict[int, int]:
        """{blog id: tombstone seq} of the deletions after `after` (the hub's re-check before a shared replay)."""
        if self.down:
            raise ConnectionError("database down")
        return {p.blog_id: p.seq for p in self.publications if p.seq > after and p.kind == ChangeKind.DELETED}

    async def position(self) -> int:
        self.position_reads += 1
        await asyncio.sleep(self.position_delay)
        if self.down:
            raise ConnectionError("database down")
        return max((p.seq for p in self.publications), default=0)


async def publish(layer: InMemoryChannelLayer, log: Log, *seqs: int, live: bool = True) -> None:
    for seq in seqs:
        log.publications.append(publication(seq))
        if live:
            await layer.group_send(HUB_GROUP, message_for(publication(seq)))


async def settle(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class QuietConnection:
    """What a transport's connection does besides receiving events, done by nothing: a base for
    the recording connections of the in-process hub tests."""

    protocol_name = "test"
    keepalive_seconds = 3600.0

    def subscription_count(self) -> int:
        return 1

    def send_keepalive(self) -> None:
        pass

    def going_away(self) -> None:
        pass
