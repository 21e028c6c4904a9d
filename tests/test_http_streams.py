"""Subscriptions over HTTP: graphql-sse event streams and Apollo's multipart responses (docs/http.md).

First the negotiation and wire format alone, then real Daphne instances (production settings,
the suite's SQLite database and Redis) with short heartbeats and small limits: delivery once
and in order across instances, resume after `Last-Event-ID` and `after:`, every error answered
before a stream starts, the per-address connection limit shared with websockets, a stalled
reader ended, SIGTERM ending streams that then resume elsewhere, metrics by protocol, and a
hub that cannot start answered with 503 and Retry-After.
"""

import asyncio
import json
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from core import graphql_over_http as spec
from notifications.publishing.log import seq_from_cursor
from stack.services import DaphneInstance, RedisServer, running
from tests.live import BLOG_PUBLISHED, LATEST_CURSOR, LiveApi, assert_no_errors, error_codes, scrape, value
from tests.streamclient import APOLLO_ACCEPT, SSE_ACCEPT, StreamClient, cursors, titles
from tests.wsclient import TRANSPORT_WS, GraphQLWSClient

MAX_CONNECTIONS = 4
MAX_BUFFERED = 64 * 1024
STREAM_ENV = {
    "SSE_HEARTBEAT_SECONDS": "1",
    "MULTIPART_HEARTBEAT_SECONDS": "1",
    "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": str(MAX_CONNECTIONS),
    "TRUSTED_PROXIES": "127.0.0.1",  # tests tell clients apart with X-Forwarded-For
    "WS_MAX_BUFFERED_BYTES": str(MAX_BUFFERED),
    "HUB_START_WAIT_SECONDS": "1",
}
TRANSPORTS = {"sse": SSE_ACCEPT, "multipart": APOLLO_ACCEPT}
FOLLOW = """subscription Follow($author: String, $after: String) {
  blogPublished(author: $author, after: $after) { cursor blog { title } }
}"""


# --- Negotiation and wire format alone -----------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "method", "expected"),
    [
        ("text/event-stream", "GET", spec.SSE),  # EventSource
        ("text/event-stream", "POST", spec.SSE),  # graphql-sse's client
        ("text/event-stream;q=0.5, application/json", "POST", spec.SSE),
        (APOLLO_ACCEPT, "POST", spec.MULTIPART),
        ('multipart/mixed;subscriptionSpec="1.0", application/json', "POST", spec.MULTIPART),  # Apollo's docs
        ("multipart/mixed; subscriptionSpec=1.0", "POST", spec.MULTIPART),
        (APOLLO_ACCEPT, "GET", None),  # multipart subscriptions are POSTs
        ("multipart/mixed;boundary=other;subscriptionSpec=1.0", "POST", None),
        ("multipart/mixed;deferSpec=20220824, application/json", "POST", None),  # @defer, not a subscription
        ("application/json, multipart/mixed", "POST", None),  # GraphiQL's fetcher
        ("*/*", "GET", None),
        ("text/*", "GET", None),
        ("text/event-stream;q=0", "GET", None),
        (None, "POST", None),
    ],
)
def test_which_requests_ask_for_a_stream(accept, method, expected):
    assert spec.stream_for(accept, method) == expected


def test_an_sse_event_carries_every_line_of_its_data_and_always_a_data_field():
    assert spec.sse_event("next", '{"a":1}', "cHViOjE") == 'id: cHViOjE\nevent: next\ndata: {"a":1}\n\n'
    assert spec.sse_event("next", '{\n"a": 1\n}') == 'event: next\ndata: {\ndata: "a": 1\ndata: }\n\n'
    assert spec.sse_event("complete") == "event: complete\ndata: \n\n"


# --- Live instances --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_servers(live_env: dict[str, str]) -> Iterator[list[DaphneInstance]]:
    with running([DaphneInstance(f"streams-{i}", {**live_env, **STREAM_ENV}) for i in (1, 2)]) as servers:
        yield servers


@pytest.fixture(scope="module")
def author(stream_servers) -> tuple[LiveApi, str, str]:
    """Writes go to the first instance; subscribers listen on the second."""
    api = LiveApi(stream_servers[0].url)
    username, token = api.sign_up()
    return api, username, token


def client_address() -> dict[str, str]:
    """A client address of this test's own (the instances believe X-Forwarded-For from 127.0.0.1)."""
    return {"X-Forwarded-For": f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"}


def latest(api: LiveApi) -> str:
    return assert_no_errors(api.post(LATEST_CURSOR))["latestCursor"]


async def publish(api: LiveApi, token: str, names: list[str]) -> list[str]:
    await asyncio.to_thread(lambda: [api.create_blog(token, name) for name in names])
    return names


def stream(server: DaphneInstance, transport: str, variables: dict, **kwargs) -> StreamClient:
    headers = {**client_address(), **kwargs.pop("headers", {})}
    return StreamClient(server.url, FOLLOW, variables, accept=TRANSPORTS[transport], headers=headers, **kwargs)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_gets_every_blog_written_on_another_instance_once_in_order(stream_servers, author, transport):
    api, username, token = author
    async with stream(stream_servers[1], transport, {"author": username, "after": latest(api)}) as client:
        assert client.response is not None and client.response.status_code == 200
        headers = client.response.headers
        assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
        if transport == "sse":
            assert headers["content-type"] == "text/event-stream; charset=utf-8"
        else:
            assert headers["content-type"] == 'multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"'
            first = await client.next(skip=())
            assert (first.kind, first.data) == ("part", {})  # the opening heartbeat: the stream is live
        names = await publish(api, token, [f"{transport} {n}" for n in range(20)])
        results = await client.results(20)
        assert titles(results) == names
        seqs = [seq_from_cursor(cursor) for cursor in cursors(results)]
        assert seqs == sorted(set(seqs))
        await client.nothing_more()


async def test_each_sse_event_id_is_its_cursor(stream_servers, author):
    api, username, token = author
    async with stream(stream_servers[1], "sse", {"author": username, "after": latest(api)}) as client:
        await publish(api, token, ["one", "two"])
        events = [await client.next() for _ in range(2)]
        assert [event.kind for event in events] == ["next", "next"]
        assert [event.id for event in events] == cursors([event.data for event in events])


async def test_an_eventsource_reconnect_resumes_after_last_event_id_with_no_gap_and_no_duplicate(
    stream_servers, author
):
    """What a browser's EventSource does: the same GET again, with the id of the last event it saw."""
    api, username, token = author
    address = client_address()
    start = {"author": username, "after": latest(api)}
    async with stream(stream_servers[1], "sse", start, method="GET", headers=address) as first:
        await publish(api, token, ["seen 1", "seen 2"])
        seen = [await first.next() for _ in range(2)]
    missed = await publish(api, token, ["missed 1", "missed 2", "missed 3"])
    # The same URL (still `after:` the original cursor), as EventSource sends it, on the other instance.
    headers = {**address, "Last-Event-ID": seen[-1].id or ""}
    async with stream(stream_servers[0], "sse", start, method="GET", headers=headers) as resumed:
        assert titles(await resumed.results(3)) == missed
        live = await publish(api, token, ["live after resuming"])
        assert titles(await resumed.results(1)) == live
        await resumed.nothing_more()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_after_replays_what_was_missed_then_goes_live(stream_servers, author, transport):
    api, username, token = author
    cursor = latest(api)
    missed = await publish(api, token, [f"before {transport} {n}" for n in range(3)])
    async with stream(stream_servers[1], transport, {"author": username, "after": cursor}) as client:
        assert titles(await client.results(3)) == missed
        live = await publish(api, token, [f"live {transport}"])
        assert titles(await client.results(1)) == live
        await client.nothing_more()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_idle_streams_get_heartbeats(stream_servers, author, transport):
    _, username, _ = author
    async with stream(stream_servers[1], transport, {"author": username}) as client:
        beats = []
        for _ in range(3):
            message = await client.next(timeout=5, skip=())
            beats.append(message)
        if transport == "sse":
            assert all(message.kind == "comment" for message in beats), beats
        else:
            assert all((message.kind, message.data) == ("part", {}) for message in beats), beats


async def test_queries_and_mutations_sent_for_an_event_stream_answer_next_then_complete(stream_servers, author):
    """graphql-sse's distinct connections mode for any operation; the view answers, with its usual checks."""
    _, _, token = author
    server = stream_servers[1]
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10) as http:

        async def over_sse(query: str, **headers: str) -> list[tuple[str, Any]]:
            response = await http.post(
                "/graphql/", json={"query": query}, headers={"Accept": SSE_ACCEPT, **client_address(), **headers}
            )
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            blocks = [block for block in response.text.split("\n\n") if block]
            events = []
            for block in blocks:
                fields = {}
                for line in block.split("\n"):
                    name, _, data = line.partition(":")
                    fields[name] = data.removeprefix(" ")
                events.append((fields["event"], json.loads(fields["data"]) if fields["data"] else None))
            return events

        (kind, result), complete = await over_sse(LATEST_CURSOR)
        assert kind == "next" and result["data"]["latestCursor"] and complete == ("complete", None)
        create = 'mutation { createBlog(input: {title: "over SSE", content: "c"}) { blog { title } } }'
        (_, refused), _ = await over_sse(create)
        assert error_codes(refused) == ["UNAUTHENTICATED"]
        (_, created), _ = await over_sse(create, Authorization=f"Bearer {token}")
        assert created["data"]["createBlog"]["blog"]["title"] == "over SSE"
        # Apollo's multipart Accept on a query: the usual JSON answer.
        answer = await http.post("/graphql/", json={"query": LATEST_CURSOR}, headers={"Accept": APOLLO_ACCEPT})
        assert answer.headers["content-type"].startswith("application/graphql-response+json")
        assert answer.json()["data"]["latestCursor"]


DEEP = (
    "subscription { blogPublished { blog { author { blogs(first: 1) { edges { node { author {"
    " blogs(first: 1) { edges { node { author { username } } } } } } } } } } } }"
)
COSTLY = (
    "subscription { blogPublished { blog { author { blogs(first: 100) { edges { node { author {"
    " blogs(first: 100) { edges { cursor } } } } } } } } } }"
)
BAD_SUBSCRIPTIONS: dict[str, tuple[str, dict[str, Any], dict[str, str], str, int]] = {
    # name -> (query, variables, extra headers, code, HTTP status in graphql-response+json)
    "parse": ("subscription {", {}, {}, "GRAPHQL_PARSE_FAILED", 400),
    "validation": ("subscription { blogPublished { nope } }", {}, {}, "GRAPHQL_VALIDATION_FAILED", 400),
    "depth limit": (DEEP, {}, {}, "BAD_USER_INPUT", 400),
    "cost limit": (COSTLY, {}, {}, "BAD_USER_INPUT", 400),
    "size limit": ("subscription { blogPublished { cursor } }" + " " * 30_000, {}, {}, "BAD_USER_INPUT", 400),
    "variable coercion": (FOLLOW, {"author": 7}, {}, "GRAPHQL_VALIDATION_FAILED", 400),
    "malformed cursor": (FOLLOW, {"after": "not-a-cursor"}, {}, "BAD_USER_INPUT", 400),
    "bad token": (FOLLOW, {}, {"Authorization": "Bearer revoked-or-never-issued"}, "UNAUTHENTICATED", 401),
}


@pytest.mark.parametrize("case", BAD_SUBSCRIPTIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_bad_subscription_is_answered_before_any_stream_starts(stream_servers, transport, case):
    """An SSE-only client gets the errors in graphql-sse's own way (next, then complete: a browser's
    EventSource shows nothing of a 4xx body); Apollo's Accept also names JSON, which answers them."""
    query, variables, headers, code, status = BAD_SUBSCRIPTIONS[case]
    client = StreamClient(
        stream_servers[1].url, query, variables, accept=TRANSPORTS[transport], headers={**client_address(), **headers}
    )
    try:
        response = await client.open()
        body = await client.body()
        if transport == "sse":
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            next_block, complete_block, nothing = body.decode().split("\n\n")
            assert nothing == ""
            assert next_block.startswith("event: next\ndata: ") and complete_block == "event: complete\ndata: "
            result = json.loads(next_block.split("data: ", 1)[1])
        else:
            assert response.status_code == status
            assert response.headers["content-type"] == "application/graphql-response+json; charset=utf-8"
            result = json.loads(body)
        assert error_codes(result) == [code], result
        assert "data" not in result
        if case.endswith("limit"):
            limit = {"depth limit": "depth", "cost limit": "cost", "size limit": "documentSize"}[case]
            assert result["errors"][0]["extensions"]["limit"] == limit
    finally:
        await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_streams_and_websockets_share_the_connection_limit_per_address(stream_servers, author, transport):
    _, username, _ = author
    server = stream_servers[1]
    address = client_address()
    held: list[StreamClient] = []
    sockets: list[GraphQLWSClient] = []
    try:
        sockets.append(await GraphQLWSClient(server.ws_url).connect(additional_headers=address))
        for kind in ("sse", "multipart", "sse"):
            held.append(await stream(server, kind, {"author": username}, headers=address).__aenter__())
            assert held[-1].streaming
        refused = stream(server, transport, {"author": username}, headers=address)
        try:
            response = await refused.open()
            assert response.status_code == 429
            assert int(response.headers["retry-after"]) > 0
            result = json.loads(await refused.body())
            assert error_codes(result) == ["RATE_LIMITED"]
            assert result["errors"][0]["extensions"]["limit"] == "connectionsPerAddress"
        finally:
            await refused.close()
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.ws_url, subprotocols=[TRANSPORT_WS], additional_headers=address)
        # Another address still subscribes; a closed stream gives its slot back.
        async with stream(server, transport, {"author": username}) as other:
            assert other.streaming
        await held.pop().close()
        for _ in range(50):
            again = stream(server, transport, {"author": username}, headers=address)
            await again.open()
            if again.streaming:
                held.append(again)
                break
            await again.close()
            await asyncio.sleep(0.1)
        assert len(held) == 3
    finally:
        for client in held:
            await client.close()
        for socket_client in sockets:
            await socket_client.close()


class StalledStream:
    """A subscription (to whole blogs) on a plain socket with a small receive buffer, read only when told to."""

    def __init__(self, server: DaphneInstance, accept: str, variables: dict) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", server.port))
        body = json.dumps({"query": BLOG_PUBLISHED, "variables": variables}).encode()
        self.sock.sendall(
            b"POST /graphql/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Accept: {accept}\r\nX-Forwarded-For: {client_address()['X-Forwarded-For']}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.head = b""
        while b"\r\n\r\n" not in self.head:
            self.head += self.sock.recv(1)  # the headers only: then it stops reading

    def read_to_the_end(self) -> bytes:
        self.sock.settimeout(20)  # the server closes it (after the ending) well before its 30 s cut
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        finally:
            self.sock.close()
        return data


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stalled_reader_has_its_stream_ended_and_others_are_not_held_up(stream_servers, author, transport):
    api, username, token = author
    server = stream_servers[1]
    start = {"author": username, "after": latest(api)}
    stalled = await asyncio.to_thread(StalledStream, server, TRANSPORTS[transport], start)
    assert stalled.head.startswith(b"HTTP/1.1 200")
    good = StreamClient(server.url, BLOG_PUBLISHED, start, accept=TRANSPORTS[transport], headers=client_address())
    async with good:
        count, big = 80, "x" * 90_000  # far more than loopback buffers and MAX_BUFFERED
        publishing = asyncio.create_task(
            asyncio.to_thread(lambda: [api.create_blog(token, f"big {n}", big) for n in range(count)])
        )
        assert titles(await good.results(count, timeout=30)) == [f"big {n}" for n in range(count)]
        await publishing
    body = await asyncio.to_thread(stalled.read_to_the_end)  # what was buffered, then the end: not all of them
    assert body.endswith(b"0\r\n\r\n"), body[-300:]  # the response was ended properly, then the connection
    received = body.count(b"big ")
    print(f"\nthe stalled {transport} reader got {received} of {count} events before its stream was ended")
    assert 0 < received < count
    if transport == "sse":
        assert b"not read fast enough" in body
    else:
        assert b'"payload": null' in body and b'"TOO_SLOW"' in body and body.rstrip(b"\r\n0").endswith(b"--graphql--")


@pytest.fixture
def doomed_server(live_env: dict[str, str]) -> Iterator[DaphneInstance]:
    with DaphneInstance("streams-doomed", {**live_env, **STREAM_ENV}) as server:
        yield server


async def test_sigterm_ends_streams_and_their_clients_resume_elsewhere(stream_servers, author, doomed_server):
    api, username, token = author
    start = {"author": username, "after": latest(api)}
    sse = await stream(doomed_server, "sse", start).__aenter__()
    multipart = await stream(doomed_server, "multipart", start).__aenter__()
    try:
        before = await publish(api, token, ["before the deploy"])
        got_sse, got_multipart = await sse.results(1), await multipart.results(1)
        assert titles(got_sse) == titles(got_multipart) == before
        doomed_server.terminate()
        sse_end = await sse.until_end()
        multipart_end = await multipart.until_end()
        assert not [message for message in sse_end if message.kind in ("next", "complete")], sse_end
        assert any("shutting down" in message.raw for message in sse_end if message.kind == "comment")
        parts = [message.data for message in multipart_end if message.kind == "part" and message.data != {}]
        assert parts and parts[-1]["payload"] is None
        assert error_codes(parts[-1]) == ["SERVICE_UNAVAILABLE"]
        assert [message.kind for message in multipart_end][-2:] == ["closing-delimiter", "end"]
        assert await asyncio.to_thread(doomed_server.wait, 15) is not None
    finally:
        await sse.close()
        await multipart.close()
    during = await publish(api, token, ["while it was gone"])
    # Each resumes on a live instance from its last cursor: exactly what it missed, then live.
    resume_sse = stream(stream_servers[1], "sse", start, headers={"Last-Event-ID": cursors(got_sse)[-1]})
    resume_multipart = stream(stream_servers[0], "multipart", {**start, "after": cursors(got_multipart)[-1]})
    async with resume_sse as again_sse, resume_multipart as again_multipart:
        assert titles(await again_sse.results(1)) == titles(await again_multipart.results(1)) == during
        await again_sse.nothing_more()
        await again_multipart.nothing_more()


async def test_metrics_count_streams_and_their_subscriptions_by_protocol(stream_servers, author):
    api, username, token = author
    server = stream_servers[1]
    before = scrape(server)
    async with (
        stream(server, "sse", {"author": username, "after": latest(api)}) as sse,
        stream(server, "multipart", {"author": username, "after": latest(api)}) as multipart,
    ):
        during = scrape(server)
        for protocol in (spec.SSE, spec.MULTIPART):
            labels = {"instance_name": server.name, "protocol": protocol}
            assert value(during, "blogpush_http_streams", **labels) >= 1
            assert value(during, "blogpush_subscriptions_active", **labels) >= 1
            assert value(during, "blogpush_websocket_connections", **labels) == 0
        await publish(api, token, ["counted"])
        await sse.results(1)
        await multipart.results(1)
    after = scrape(server)
    delivered = value(after, "blogpush_events_delivered_total") - value(before, "blogpush_events_delivered_total")
    assert delivered >= 2
    for protocol in (spec.SSE, spec.MULTIPART):  # the gauges follow the streams down once they are gone
        for _ in range(50):
            now = value(scrape(server), "blogpush_http_streams", protocol=protocol)
            if now <= value(during, "blogpush_http_streams", protocol=protocol) - 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{protocol} streams are still counted after closing")


async def test_a_hub_that_cannot_start_answers_503_with_retry_after(live_env):
    """Redis is down when the instance starts: nothing could be delivered, so no stream starts."""
    with RedisServer() as redis:
        env = {**live_env, **STREAM_ENV, "REDIS_URL": redis.url}
        with DaphneInstance("streams-no-hub", env) as server:
            redis.terminate()
            redis.wait(10)
            server.restart()  # its hub cannot start
            for transport in TRANSPORTS:
                async with stream(server, transport, {}) as client:
                    assert client.response is not None and client.response.status_code == 503
                    assert int(client.response.headers["retry-after"]) > 0
                    assert error_codes(json.loads(await client.body())) == ["SERVICE_UNAVAILABLE"]


async def test_a_variable_of_the_wrong_type_is_the_clients_error_on_every_transport(stream_servers):
    """It was an INTERNAL_SERVER_ERROR (api/errors.format_error took graphql-core's wrapped coercion
    error for a server fault) over HTTP and websockets alike."""
    server = stream_servers[1]
    query = "query Q($a: String) { blogs(author: $a, first: 1) { edges { cursor } } }"
    answer = LiveApi(server.url).post(query, {"a": 7})
    assert error_codes(answer) == ["GRAPHQL_VALIDATION_FAILED"], answer
    assert "String cannot represent a non string value: 7" in answer["errors"][0]["message"]
    client = await GraphQLWSClient(server.ws_url).connect(additional_headers=client_address())
    try:
        await client.start(FOLLOW, {"author": 7})
        error = await client.receive()
        assert error["type"] == "error" and [e["extensions"]["code"] for e in error["payload"]] == [
            "GRAPHQL_VALIDATION_FAILED"
        ]
    finally:
        await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_pages_of_a_foreign_origin_are_refused_as_websocket_handshakes_are(stream_servers, transport):
    server = stream_servers[1]
    foreign = stream(server, transport, {}, headers={"Origin": "https://evil.example"})
    try:
        response = await foreign.open()
        assert response.status_code == 403
        assert error_codes(json.loads(await foreign.body())) == ["FORBIDDEN"]
    finally:
        await foreign.close()
    async with stream(server, transport, {}, headers={"Origin": server.url}) as own:
        assert own.streaming
