"""A blogPublished subscriber that stays subscribed: reconnects by itself and catches up.

Speaks graphql-transport-ws with the `websockets` library and nothing from Django, so any
Python program can use it (`manage.py listen` does):

    async for event in BlogListener("ws://127.0.0.1:8000/graphql/").events():
        print(event["blog"]["title"])

After any disconnect it reconnects with exponential backoff and jitter, answers the server's
pings, and resubscribes with `after: <last cursor>` so the server can replay what was missed.
A server that does not know `after` answers GRAPHQL_VALIDATION_FAILED; the listener then reads
the latest blogs instead and yields those published since the last one it saw. Blogs are
yielded once each, oldest first within a catch-up.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

SUBPROTOCOL = "graphql-transport-ws"
BLOG_FIELDS = "id title content publishedAt author { username }"
BLOG_PUBLISHED = f"""subscription Listen($author: String) {{
  blogPublished(author: $author) {{ cursor blog {{ {BLOG_FIELDS} }} }}
}}"""
BLOG_PUBLISHED_AFTER = f"""subscription ListenAfter($author: String, $after: String) {{
  blogPublished(author: $author, after: $after) {{ cursor blog {{ {BLOG_FIELDS} }} }}
}}"""
LATEST_BLOGS = f"""query CatchUp($first: Int!, $author: String) {{
  blogs(first: $first, author: $author) {{ edges {{ node {{ {BLOG_FIELDS} }} }} }}
}}"""
CATCH_UP_SIZE = 50
SEEN_REMEMBERED = 1000
# Close codes after which retrying cannot help: bad request (4400), forbidden (4403).
FATAL_CLOSE_CODES = {4400, 4403}

StatusCallback = Callable[[str], None]


class ListenerError(RuntimeError):
    """The server refused us in a way that retrying will not fix."""


def backoff_delay(failures: int, first: float, ceiling: float) -> float:
    """Exponential backoff with "equal jitter": between half and all of the capped delay."""
    capped = min(ceiling, first * 2 ** max(0, failures - 1))
    return capped / 2 + random.uniform(0, capped / 2)


def _published_at(blog: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(blog["publishedAt"])


class BlogListener:
    """Yields `blogPublished` events ({"cursor", "blog"}) for as long as it is iterated."""

    def __init__(
        self,
        url: str,
        author: str | None = None,
        *,
        on_status: StatusCallback | None = None,
        backoff_first: float = 0.5,
        backoff_max: float = 30.0,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.author = author
        self.on_status = on_status or (lambda message: None)
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.handshake_timeout = handshake_timeout
        self.last_cursor: str | None = None
        self.resume_supported = True  # until the server says it does not know `after`
        self.instance: str | None = None
        self._seen: OrderedDict[str, datetime] = OrderedDict()
        self._newest_seen: datetime | None = None
        self._operation = 0

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        failures = 0
        connected_before = False
        while True:
            try:
                async with websockets.connect(
                    self.url, subprotocols=[Subprotocol(SUBPROTOCOL)], open_timeout=self.handshake_timeout
                ) as ws:
                    await self._handshake(ws)
                    failures = 0
                    self.on_status(
                        f"listening on {self.url}" + (f" (instance {self.instance})" if self.instance else "")
                    )
                    if self._newest_seen is None:
                        self._newest_seen = datetime.now(UTC)  # what was published before we came is not news
                    reconnected, connected_before = connected_before, True
                    async for event in self._session(ws, reconnected=reconnected):
                        yield event
                reason = "the server ended the subscription"
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code in FATAL_CLOSE_CODES:
                    raise ListenerError(
                        f"the server closed the connection: {code} {closed.rcvd.reason if closed.rcvd else ''}"
                    ) from closed
                reason = f"connection lost ({code or 'no close frame'})"
            except websockets.InvalidStatus as refused:
                if refused.response.status_code < 500:
                    raise ListenerError(
                        f"the server refused the websocket: HTTP {refused.response.status_code}"
                    ) from refused
                reason = f"server unavailable (HTTP {refused.response.status_code})"
            except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
                reason = f"cannot connect ({type(error).__name__}: {error})"
            failures += 1
            delay = backoff_delay(failures, self.backoff_first, self.backoff_max)
            self.on_status(f"{reason}; reconnecting in {delay:.1f}s")
            await asyncio.sleep(delay)

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        async with asyncio.timeout(self.handshake_timeout):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "connection_ack":
                    self.instance = (message.get("payload") or {}).get("instance")
                    return
                if message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))

    def _next_id(self, kind: str) -> str:
        self._operation += 1
        return f"{kind}-{self._operation}"

    async def _subscribe(self, ws: ClientConnection) -> tuple[str, bool]:
        resumed = self.resume_supported and self.last_cursor is not None
        variables: dict[str, Any] = {"author": self.author}
        if resumed:
            variables["after"] = self.last_cursor
        op_id = self._next_id("listen")
        query = BLOG_PUBLISHED_AFTER if resumed else BLOG_PUBLISHED
        await ws.send(
            json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}})
        )
        return op_id, resumed

    async def _catch_up(self, ws: ClientConnection) -> str:
        op_id = self._next_id("catch-up")
        variables = {"first": CATCH_UP_SIZE, "author": self.author}
        await ws.send(
            json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": LATEST_BLOGS, "variables": variables}})
        )
        return op_id

    async def _session(self, ws: ClientConnection, reconnected: bool) -> AsyncIterator[dict[str, Any]]:
        """One connection's events; returns when the server completes the subscription."""
        subscription, resumed = await self._subscribe(ws)
        catch_up = await self._catch_up(ws) if reconnected and not resumed else None
        async for raw in ws:
            message = json.loads(raw)
            kind, op_id = message.get("type"), message.get("id")
            if kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "next" and op_id == subscription:
                event = (message["payload"].get("data") or {}).get("blogPublished")
                if event:
                    self.last_cursor = event["cursor"]
                    if self._remember(event["blog"]):
                        yield event
            elif kind == "next" and op_id == catch_up:
                for event in self._missed((message["payload"].get("data") or {}).get("blogs")):
                    yield event
            elif kind == "error" and op_id == subscription:
                if resumed and self._codes(message) == {"GRAPHQL_VALIDATION_FAILED"}:
                    self.resume_supported = False  # an older server: catch up by reading instead
                    subscription, resumed = await self._subscribe(ws)
                    catch_up = await self._catch_up(ws)
                    continue
                raise ListenerError(f"the subscription was rejected: {message.get('payload')}")
            elif kind == "complete" and op_id == subscription:
                return

    @staticmethod
    def _codes(message: dict[str, Any]) -> set[str | None]:
        errors = message.get("payload") or []
        return {(error.get("extensions") or {}).get("code") for error in errors if isinstance(error, dict)}

    def _missed(self, blogs: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Blogs from a catch-up read that are newer than anything seen and not yet yielded."""
        newest = self._newest_seen
        fresh = [
            edge["node"]
            for edge in (blogs or {}).get("edges", [])
            if edge["node"]["id"] not in self._seen and (newest is None or _published_at(edge["node"]) > newest)
        ]
        fresh.sort(key=_published_at)
        return [{"cursor": None, "blog": blog} for blog in fresh if self._remember(blog)]

    def _remember(self, blog: dict[str, Any]) -> bool:
        """Note a blog as yielded; False when it already was."""
        if blog["id"] in self._seen:
            return False
        published = _published_at(blog)
        self._seen[blog["id"]] = published
        if len(self._seen) > SEEN_REMEMBERED:
            self._seen.popitem(last=False)
        if self._newest_seen is None or published > self._newest_seen:
            self._newest_seen = published
        return True
