"""The HTTP subscription router in-process, as any ASGI server other than Daphne drives it.

Under Daphne, streams write straight to the socket (tests/test_http_streams.py, on live
instances). Elsewhere (uvicorn, hypercorn) `send` is a plain coroutine function: every message
goes through it, in order. The hub here is a real one on Channels' in-memory layer with a list
for its log, as in tests/test_hub.py; nothing needs Redis, Daphne or a database.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from core import process
from notifications.hub import hub as hub_module
from notifications.hub.hub import Hub
from notifications.models import PublicationCounter
from notifications.transports import connections, limits
from notifications.transports.http_subscriptions import HttpSubscriptions
from tests.hubs import QUERY, Log, publish
from tests.streamclient import APOLLO_ACCEPT, SSE_ACCEPT

Message = dict[str, Any]


class Forwarded:
    """The app behind the router (Django in production): records what reached it, body included."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append((scope, body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"django"})


class Exchange:
    """One request through the router: what it sent back, and a way to hang up."""

    def __init__(self, app: HttpSubscriptions, scope: dict[str, Any], body: bytes) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.incoming.put_nowait({"type": "http.request", "body": body, "more_body": False})
        self.sent: list[Message] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(app(scope, self.incoming.get, self.send))

    async def send(self, message: Message) -> None:
        await asyncio.sleep(0)  # a real server's send yields: order must not depend on it not doing so
        self.sent.append(message)
        self.changed.set()

    @property
    def body(self) -> bytes:
        return b"".join(message.get("body", b"") for message in self.sent if message["type"] == "http.response.body")

    async def until(self, predicate: Any, timeout: float = 3) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

    async def hang_up(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})
        await asyncio.wait_for(self.task, 3)


def request(
    method: str, accept: str, body: Any = None, query_string: bytes = b"", **headers: str
) -> tuple[dict, bytes]:
    raw = json.dumps(body).encode() if body is not None else b""
    header_list = [(b"host", b"127.0.0.1"), (b"accept", accept.encode())]
    if method == "POST":
        header_list.append((b"content-type", b"application/json"))
    header_list += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    scope = {
        "type": "http",
        "method": method,
        "path": "/graphql/",
        "query_string": query_string,
        "headers": header_list,
        "client": ["192.0.2.7", 5000],
        "scheme": "http",
    }
    return scope, raw


@pytest.fixture
async def router(
    settings, monkeypatch
) -> AsyncIterator[tuple[HttpSubscriptions, Forwarded, InMemoryChannelLayer, Log]]:
    settings.HUB_REORDER_WINDOW_SECONDS = 0.05
    settings.HUB_LOG_CHECK_SECONDS = 3600
    settings.GRAPHQL_WS_MAX_CONNECTIONS_PER_IP = 2
    monkeypatch.setattr(process, "_installed", True)  # never take this test process's SIGTERM
    layer, log = InMemoryChannelLayer(), Log()
    loop = asyncio.get_running_loop()
    hub = hub_module._hubs[loop] = Hub(
        layer, read_log=log.read, read_position=log.position, read_deletions=log.deletions
    )
    forwarded = Forwarded()
    yield HttpSubscriptions(forwarded), forwarded, layer, log
    await hub.close()
    del hub_module._hubs[loop]


async def test_a_stream_through_plain_asgi_sends_keeps_its_order_and_ends_with_its_tail(router):
    app, forwarded, layer, log = router
    exchange = Exchange(app, *request("POST", APOLLO_ACCEPT, {"query": QUERY, "variables": {"author": "ada"}}))
    await exchange.until(lambda e: b"{}" in e.body)
    start = exchange.sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert dict(start["headers"])[b"content-type"] == b'multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"'
    [stream] = connections.live()
    assert stream.protocol_name == "multipart-http" and stream.subscription_count() == 1
    await publish(layer, log, 1, 2, 3)
    await exchange.until(lambda e: e.body.count(b'"payload"') == 3)
    titles = [part["payload"]["data"]["blogPublished"]["blog"]["title"] for part in _parts(exchange.body)[1:]]
    assert titles == ["blog 1", "blog 2", "blog 3"]
    assert limits._open_connections["192.0.2.7"] == 1

    stream.going_away()
    await exchange.until(lambda e: e.sent[-1].get("more_body") is False)
    assert exchange.body.endswith(b"\r\n--graphql--\r\n")
    assert _parts(exchange.body)[-1]["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    await exchange.hang_up()
    assert connections.live() == [] and "192.0.2.7" not in limits._open_connections
    assert forwarded.requests == []


async def test_last_event_id_resumes_an_sse_stream_after_that_cursor(router, transactional_db):
    app, _, layer, log = router
    await publish(layer, log, 1, 2, 3, 4, live=False)
    await PublicationCounter.objects.filter(pk=1).aupdate(last_seq=4)  # resume_point checks the cursor is known
    exchange = Exchange(
        app,
        *request(
            "GET", SSE_ACCEPT, query_string=b"query=" + QUERY.encode().replace(b" ", b"+"), last_event_id="cHViOjI"
        ),
    )
    await exchange.until(lambda e: e.body.count(b"event: next") == 2)
    ids = [line[4:] for line in exchange.body.decode().split("\n") if line.startswith("id: ")]
    assert ids == ["cHViOjM", "cHViOjQ"]  # the cursors of 3 and 4: what came after cursor 2
    await exchange.hang_up()


@pytest.mark.parametrize(
    ("method", "accept", "body", "query_string"),
    [
        ("POST", "application/json", {"query": QUERY}, b""),  # no stream asked for
        ("POST", SSE_ACCEPT, {"query": "{ latestCursor }"}, b""),  # a query: graphql-sse's next + complete, by Django
        ("POST", SSE_ACCEPT, {"query": "subscription { nope }"}, b""),  # invalid: Django words the errors
        ("POST", SSE_ACCEPT, {"query": QUERY, "variables": [1]}, b""),  # not well-formed: Django's 400
        ("POST", SSE_ACCEPT, {"query": QUERY}, b"query=x"),  # parameters in the URL too: graphene-django's rules
        ("GET", APOLLO_ACCEPT, None, b"query=subscription+%7B+blogPublished+%7B+cursor+%7D+%7D"),  # multipart: POSTs
    ],
)
async def test_everything_else_goes_on_to_django_with_its_body_intact(router, method, accept, body, query_string):
    app, forwarded, _, _ = router
    scope, raw = request(method, accept, body, query_string)
    exchange = Exchange(app, scope, raw)
    await asyncio.wait_for(exchange.task, 3)
    assert exchange.body == b"django"
    [(seen_scope, seen_body)] = forwarded.requests
    assert seen_scope is scope and seen_body == raw


async def test_the_per_address_limit_refuses_the_next_stream_with_429(router):
    app, _, _, _ = router
    held = [Exchange(app, *request("POST", SSE_ACCEPT, {"query": QUERY})) for _ in range(2)]
    for exchange in held:
        await exchange.until(lambda e: bool(e.sent))
    refused = Exchange(app, *request("POST", SSE_ACCEPT, {"query": QUERY}))
    await refused.until(lambda e: len(e.sent) == 2)
    assert refused.sent[0]["status"] == 429
    assert json.loads(refused.body)["errors"][0]["extensions"]["limit"] == "connectionsPerAddress"
    await refused.hang_up()
    for exchange in held:
        await exchange.hang_up()
    assert limits._open_connections.get("192.0.2.7") is None


def _parts(body: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(part.split(b"\r\n\r\n", 1)[1])
        for part in body.split(b"\r\n--graphql")
        if b"\r\n\r\n" in part and part.strip(b"-\r\n")
    ]


async def test_only_a_started_stream_stops_counting_as_a_request_in_flight(router):
    """Until its body is read and checked, a request asking for a stream may be a mutation: the
    SIGTERM drain must wait for it. A stream, once started, must not hold the drain up."""
    app, _, _, _ = router
    scope, raw = request("POST", SSE_ACCEPT, {"query": QUERY})
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.create_task(app(scope, incoming.get, send))
    await asyncio.sleep(0.05)
    assert process.requests_in_flight() == 1  # its body has not arrived yet
    incoming.put_nowait({"type": "http.request", "body": raw, "more_body": False})
    async with asyncio.timeout(3):
        while not sent:
            await asyncio.sleep(0.01)
    assert sent[0]["status"] == 200 and process.requests_in_flight() == 0
    incoming.put_nowait({"type": "http.disconnect"})
    await asyncio.wait_for(task, 3)
