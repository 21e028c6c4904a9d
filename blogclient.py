"""A subscriber that stays subscribed: reconnects by itself and misses nothing.

Speaks graphql-transport-ws with the `websockets` library and nothing from Django, so any
Python program can use it (`manage.py listen` does). It follows `blogPublished` (new blogs):

    async for event in BlogListener("ws://127.0.0.1:8000/graphql/").events():
        print(event["blog"]["title"])

or, with `changes=True`, `blogChanged` (every creation, edit and deletion; `blog` is None for a
deletion):

    async for change in BlogListener(url, changes=True).events():
        print(change["kind"], change["blogId"], change["blog"] and change["blog"]["title"])

It starts from the server's `latestCursor` and subscribes with `after:` that cursor; after any
disconnect it reconnects with exponential backoff and jitter and resubscribes after the last
cursor it saw, so the server replays what was published meanwhile, once and in order. It
answers the server's pings. A cursor the server can no longer resume from (older than its
replay window) is reported and replaced by the latest one.

`connection_params` is the `connection_init` payload (e.g. `{"authorization": "Bearer …"}`), or a
function returning it, called for every connection. When the server ends the sign-in (close
4403: the token was revoked or expired, the author signed out), the listener reconnects: with the
function's fresh params, or, given a fixed payload, without it (subscriptions are public), and
resumes after its last cursor as after any other drop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

SUBPROTOCOL = "graphql-transport-ws"
BLOG_PUBLISHED = """subscription Listen($author: String, $after: String) {
  blogPublished(author: $author, after: $after) { cursor blog { id title content publishedAt author { username } } }
}"""
BLOG_CHANGED = """subscription ListenChanges($author: String, $after: String) {
  blogChanged(author: $author, after: $after) {
    cursor kind blogId changedAt blog { id title content publishedAt author { username } }
  }
}"""
LATEST_CURSOR = "query LatestCursor { latestCursor }"
# Close codes after which retrying cannot help: a bad request (4400).
FATAL_CLOSE_CODES = {4400}
# The server ended the connection's sign-in (or refused its token): retried with fresh params.
SIGNED_OUT_CLOSE = 4403

StatusCallback = Callable[[str], None]
ConnectionParams = (
    dict[str, Any] | Callable[[], dict[str, Any] | None] | Callable[[], Awaitable[dict[str, Any] | None]] | None
)


class ListenerError(RuntimeError):
    """The server refused us in a way that retrying will not fix."""


def backoff_delay(failures: int, first: float, ceiling: float) -> float:
    """Exponential backoff with "equal jitter": between half and all of the capped delay."""
    capped = min(ceiling, first * 2 ** max(0, failures - 1))
    return capped / 2 + random.uniform(0, capped / 2)


class BlogListener:
    """Yields `blogPublished` events ({"cursor", "blog"}), or with `changes` `blogChanged` events
    ({"cursor", "kind", "blogId", "changedAt", "blog"}), for as long as it is iterated."""

    def __init__(
        self,
        url: str,
        author: str | None = None,
        *,
        on_status: StatusCallback | None = None,
        backoff_first: float = 0.5,
        backoff_max: float = 30.0,
        handshake_timeout: float = 10.0,
        connection_params: ConnectionParams = None,
        changes: bool = False,
    ) -> None:
        self.url = url
        self.connection_params = connection_params
        self.author = author
        self.field = "blogChanged" if changes else "blogPublished"
        self.query = BLOG_CHANGED if changes else BLOG_PUBLISHED
        self.on_status = on_status or (lambda message: None)
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.handshake_timeout = handshake_timeout
        self.last_cursor: str | None = None  # where the next subscription resumes
        self.instance: str | None = None
        self._operation = 0

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        failures = 0
        while True:
            try:
                async with websockets.connect(
                    self.url, subprotocols=[Subprotocol(SUBPROTOCOL)], open_timeout=self.handshake_timeout
                ) as ws:
                    await self._handshake(ws)
                    if self.last_cursor is None:  # what was published before we came is not news
                        self.last_cursor = await self._latest_cursor(ws)
                    failures = 0
                    self.on_status(f"listening on {self.url}" + (f" ({self.instance})" if self.instance else ""))
                    async for event in self._session(ws):
                        yield event
                reason = "the server ended the subscription"
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                detail = closed.rcvd.reason if closed.rcvd else ""
                if code in FATAL_CLOSE_CODES:
                    raise ListenerError(f"the server closed the connection: {code} {detail}") from closed
                if code == SIGNED_OUT_CLOSE:
                    reason = self._signed_out(detail)
                else:
                    reason = f"connection lost ({code or 'no close frame'})"
            except websockets.InvalidStatus as refused:
                status = refused.response.status_code
                if status < 500:
                    raise ListenerError(f"the server refused the websocket: HTTP {status}") from refused
                reason = f"server unavailable (HTTP {status})"
            except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
                reason = f"cannot connect ({type(error).__name__}: {error})"
            failures += 1
            delay = backoff_delay(failures, self.backoff_first, self.backoff_max)
            self.on_status(f"{reason}; reconnecting in {delay:.1f}s")
            await asyncio.sleep(delay)

    def _signed_out(self, detail: str) -> str:
        if self.connection_params is not None and not callable(self.connection_params):
            self.connection_params = None  # a fixed payload will not sign in again: go on without it
            return f"signed out by the server ({detail or 4403}); continuing without signing in"
        return f"signed out by the server ({detail or 4403}); signing in afresh"

    async def _params(self) -> dict[str, Any]:
        params: Any = self.connection_params
        if callable(params):
            params = params()
            if inspect.isawaitable(params):
                params = await params
        return dict(params or {})

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "connection_init", "payload": await self._params()}))
        await self._reply(ws, None, "connection_ack")

    async def _reply(self, ws: ClientConnection, op_id: str | None, kind: str) -> dict[str, Any]:
        """Read until the `kind` message (of `op_id`) arrives, answering pings meanwhile."""
        async with asyncio.timeout(self.handshake_timeout):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif message.get("type") == "connection_ack" and kind == "connection_ack":
                    self.instance = (message.get("payload") or {}).get("instance")
                    return message
                elif message.get("id") == op_id and message.get("type") in (kind, "error"):
                    if message["type"] == "error":
                        raise ListenerError(f"the server rejected {op_id}: {message.get('payload')}")
                    return message

    async def _latest_cursor(self, ws: ClientConnection) -> str:
        op_id = await self._start(ws, "cursor", LATEST_CURSOR, {})
        answer = await self._reply(ws, op_id, "next")
        return str(answer["payload"]["data"]["latestCursor"])

    async def _start(self, ws: ClientConnection, kind: str, query: str, variables: dict[str, Any]) -> str:
        self._operation += 1
        op_id = f"{kind}-{self._operation}"
        await ws.send(
            json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}})
        )
        return op_id

    async def _session(self, ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
        """One connection's events; returns when the server completes the subscription."""
        subscription = await self._start(ws, "listen", self.query, {"author": self.author, "after": self.last_cursor})
        async for raw in ws:
            message = json.loads(raw)
            kind, op_id = message.get("type"), message.get("id")
            if kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "next" and op_id == subscription:
                event = (message["payload"].get("data") or {}).get(self.field)
                if event:
                    self.last_cursor = event["cursor"]
                    yield event
            elif kind == "error" and op_id == subscription:
                if self._codes(message) != {"BAD_USER_INPUT"}:
                    raise ListenerError(f"the subscription was rejected: {message.get('payload')}")
                self.on_status(
                    "cannot resume from the last cursor (older than the replay window): some blogs were missed"
                )
                self.last_cursor = await self._latest_cursor(ws)
                subscription = await self._start(
                    ws, "listen", self.query, {"author": self.author, "after": self.last_cursor}
                )
            elif kind == "complete" and op_id == subscription:
                return

    @staticmethod
    def _codes(message: dict[str, Any]) -> set[str | None]:
        errors = message.get("payload") or []
        return {(error.get("extensions") or {}).get("code") for error in errors if isinstance(error, dict)}
