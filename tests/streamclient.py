"""Test clients for the HTTP subscription streams: graphql-sse event streams and Apollo's multipart responses.

Both read the raw response body (httpx undoes the chunked framing, nothing else) and parse it
the way the protocols define it, so a test sees exactly what a client would: events with their
`id:`, comments (heartbeats), multipart parts (`{}` heartbeats included), and the end of the body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

SSE_ACCEPT = "text/event-stream"
# What Apollo Client's HttpLink sends for a subscription.
APOLLO_ACCEPT = (
    "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,application/graphql-response+json,application/json;q=0.9"
)
BOUNDARY = b"\r\n--graphql"


@dataclass
class Message:
    """One SSE event or comment, or one multipart part; `data` is parsed JSON (None for a comment)."""

    kind: str  # "next", "complete" (SSE events), "comment" (SSE), "part" (multipart), "end"
    data: Any = None
    id: str | None = None
    raw: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class StreamClient:
    """One subscription request; `messages()` yields what the response body carries, in order."""

    def __init__(
        self,
        base_url: str,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        accept: str = SSE_ACCEPT,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=None), trust_env=False)
        self.query, self.variables = query, variables or {}
        self.accept, self.method = accept, method
        self.headers = {"Accept": accept, **(headers or {})}
        self.response: httpx.Response | None = None
        self._stream: Any = None
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> httpx.Response:
        if self.method == "GET":
            params = {"query": self.query, "variables": json.dumps(self.variables)}
            request = self.client.build_request("GET", "/graphql/", params=params, headers=self.headers)
        else:
            body = {"query": self.query, "variables": self.variables}
            request = self.client.build_request("POST", "/graphql/", json=body, headers=self.headers)
        self.response = await self.client.send(request, stream=True)
        if self.streaming:
            self._reader = asyncio.create_task(self._read())
        return self.response

    @property
    def streaming(self) -> bool:
        assert self.response is not None
        content_type = self.response.headers.get("content-type", "")
        return self.response.status_code == 200 and content_type.startswith(("text/event-stream", "multipart/mixed"))

    async def body(self) -> bytes:
        assert self.response is not None
        return await self.response.aread()

    async def _read(self) -> None:
        assert self.response is not None
        multipart = self.response.headers["content-type"].startswith("multipart/mixed")
        buffer = b""
        try:
            async for data in self.response.aiter_raw():
                buffer += data
                buffer = self._multipart(buffer) if multipart else self._sse(buffer)
        except httpx.HTTPError as error:
            self._queue.put_nowait(Message("end", raw=f"{type(error).__name__}: {error}"))
            return
        self._queue.put_nowait(Message("end", raw=buffer.decode(errors="replace")))

    def _sse(self, buffer: bytes) -> bytes:
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            comments = []
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value
            if "event" in fields:
                data = json.loads(fields["data"]) if fields.get("data") else None
                self._queue.put_nowait(Message(fields["event"], data, fields.get("id"), block.decode(), fields))
            elif comments or fields:
                self._queue.put_nowait(Message("comment", None, None, "\n".join(comments), fields))
        return buffer

    def _multipart(self, buffer: bytes) -> bytes:
        # The body starts with "--graphql"; each part is "\r\n<headers>\r\n\r\n<json>" before the next delimiter.
        if buffer.startswith(b"--graphql") and not buffer.startswith(b"--graphql--"):
            buffer = b"\r\n" + buffer
        while True:
            if not buffer.startswith(BOUNDARY):
                return buffer
            rest = buffer[len(BOUNDARY) :]
            if rest.startswith(b"--"):
                self._queue.put_nowait(Message("closing-delimiter", raw=rest.decode(errors="replace")))
                return b""
            end = rest.find(BOUNDARY)
            if end < 0:
                return buffer
            part, buffer = rest[:end], rest[end:]
            _, _, body = part.partition(b"\r\n\r\n")
            self._queue.put_nowait(Message("part", json.loads(body), raw=part.decode()))

    async def next(self, timeout: float = 15, *, skip: tuple[str, ...] = ("comment",)) -> Message:
        """The next message, skipping heartbeats (SSE comments, multipart `{}` parts) unless asked for."""
        while True:
            message = await asyncio.wait_for(self._queue.get(), timeout)
            if message.kind in skip or (message.kind == "part" and message.data == {} and "heartbeat" in skip):
                continue
            return message

    async def results(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """The next `count` GraphQL results (SSE `next` data, or multipart `payload`), heartbeats skipped."""
        results: list[dict[str, Any]] = []
        while len(results) < count:
            message = await self.next(timeout, skip=("comment", "heartbeat"))
            if message.kind == "next":
                results.append(message.data)
            elif message.kind == "part":
                results.append(message.data["payload"])
            else:
                raise AssertionError(f"expected a result, got {message}")
        return results

    async def nothing_more(self, within: float = 0.5) -> None:
        try:
            message = await self.next(within, skip=("comment", "heartbeat"))
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message {message}")

    async def until_end(self, timeout: float = 30) -> list[Message]:
        """Everything up to the end of the body (heartbeats included)."""
        seen = []
        while True:
            message = await self.next(timeout, skip=())
            seen.append(message)
            if message.kind == "end":
                return seen

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.response is not None:
            await self.response.aclose()
        await self.client.aclose()

    async def __aenter__(self) -> StreamClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def stream_lines(process: asyncio.subprocess.Process) -> AsyncIterator[dict[str, Any]]:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        yield json.loads(line)


def titles(results: list[dict[str, Any]]) -> list[str]:
    return [result["data"]["blogPublished"]["blog"]["title"] for result in results]


def cursors(results: list[dict[str, Any]]) -> list[str]:
    return [result["data"]["blogPublished"]["cursor"] for result in results]
