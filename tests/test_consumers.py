"""Bad input on the websocket gets the protocol's answer, and the server keeps serving others."""

import asyncio
import json

import pytest
import websockets

from tests.live import BLOG_PUBLISHED, LiveApi
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, GraphQLWSClient

UNKNOWN_FIELD = "subscription { blogVanished { id } }"


async def closed_with(client: GraphQLWSClient) -> int | None:
    assert client.ws is not None
    with pytest.raises(websockets.ConnectionClosed):
        await client.receive(timeout=5)
    return client.ws.close_code


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        b"\x00\x01binary",
        json.dumps([1, 2, 3]),
        json.dumps({"no": "type"}),
        json.dumps({"type": "launch_missiles"}),
        json.dumps({"type": "subscribe", "payload": {"query": "subscription { blogPublished { cursor } }"}}),
        json.dumps({"type": "subscribe", "id": "1", "payload": {"query": 42}}),
        json.dumps(
            {"type": "subscribe", "id": "1", "payload": {"query": "{ blogs { edges { cursor } } }", "variables": [1]}}
        ),
    ],
)
async def test_transport_ws_closes_4400_on_malformed_messages(daphne_server, frame):
    client = await GraphQLWSClient(daphne_server.ws_url, TRANSPORT_WS).connect()
    await client.send(frame)
    assert await closed_with(client) == 4400


@pytest.mark.parametrize(
    "frame",
    ["{not json", b"\x00binary", json.dumps("just a string"), json.dumps({"type": "launch_missiles", "id": "7"})],
)
async def test_legacy_protocol_answers_malformed_messages_with_an_error_and_stays_open(daphne_server, frame):
    client = await GraphQLWSClient(daphne_server.ws_url, LEGACY_WS).connect()
    try:
        await client.send(frame)
        reply = await client.receive()
        assert reply["type"] == "error"
        assert reply["payload"]
        result = await client.execute("query { viewer { username } }")
        assert result["payload"] == {"data": {"viewer": None}}
    finally:
        await client.close()


async def test_transport_ws_subscribe_before_connection_init_closes_4401(daphne_server):
    client = GraphQLWSClient(daphne_server.ws_url, TRANSPORT_WS)
    client.ws = await websockets.connect(daphne_server.ws_url, subprotocols=[TRANSPORT_WS])
    await client.start(BLOG_PUBLISHED)
    assert await closed_with(client) == 4401


async def test_legacy_start_before_connection_init_is_an_error(daphne_server):
    client = GraphQLWSClient(daphne_server.ws_url, LEGACY_WS)
    client.ws = await websockets.connect(daphne_server.ws_url, subprotocols=[LEGACY_WS])
    try:
        await client.start(BLOG_PUBLISHED)
        reply = await client.receive()
        assert reply["type"] == "error"
        assert "connection_init" in reply["payload"]["message"]
    finally:
        await client.close()


async def test_transport_ws_second_connection_init_closes_4429(daphne_server):
    client = await GraphQLWSClient(daphne_server.ws_url, TRANSPORT_WS).connect()
    await client.send({"type": "connection_init"})
    assert await closed_with(client) == 4429


async def test_transport_ws_duplicate_operation_id_closes_4409(daphne_server):
    client = await GraphQLWSClient(daphne_server.ws_url, TRANSPORT_WS).connect()
    await client.start(BLOG_PUBLISHED, op_id="same")
    await client.start(BLOG_PUBLISHED, op_id="same")
    assert await closed_with(client) == 4409


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_subscription_to_an_unknown_field_is_a_validation_error(daphne_server, protocol):
    client = await GraphQLWSClient(daphne_server.ws_url, protocol).connect()
    try:
        op_id = await client.start(UNKNOWN_FIELD)
        reply = await client.receive()
        assert reply["id"] == op_id
        errors = reply["payload"] if protocol == TRANSPORT_WS else reply["payload"]["errors"]
        assert reply["type"] == ("error" if protocol == TRANSPORT_WS else "data")
        assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert "blogVanished" in errors[0]["message"]
        if protocol == LEGACY_WS:
            assert await client.receive() == {"type": "complete", "id": op_id}
        # The connection is still usable.
        assert (await client.execute("query { viewer { username } }"))["payload"] == {"data": {"viewer": None}}
    finally:
        await client.close()


@pytest.mark.parametrize("subprotocols", [None, ["chat"], ["graphql-wrong"]])
async def test_clients_without_a_graphql_subprotocol_are_refused(daphne_server, subprotocols):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(daphne_server.ws_url, subprotocols=subprotocols)
    assert refused.value.response.status_code == 403


async def test_server_keeps_serving_others_after_abuse(daphne_server, api: LiveApi, redis_server):
    username, token = api.sign_up()
    good = await GraphQLWSClient(daphne_server.ws_url, TRANSPORT_WS).connect()
    try:
        await good.subscribe(BLOG_PUBLISHED, {"author": username})
        for protocol, frame in [(TRANSPORT_WS, "{"), (LEGACY_WS, "{"), (TRANSPORT_WS, b"\xff"), (LEGACY_WS, "[]")]:
            bad = await GraphQLWSClient(daphne_server.ws_url, protocol).connect()
            await bad.send(frame)
            await bad.close()
        api.create_blog(token, "Still here")
        assert (await good.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] == "Still here"
    finally:
        await good.close()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_acknowledged_sockets_get_the_protocols_keepalive_every_interval(daphne_server, protocol):
    """graphql-ws: `ka` right after the ack, then every GRAPHQL_WS_PING_SECONDS (3 s in tests);
    graphql-transport-ws: `ping` every interval. One task per process sends them to every socket."""
    keepalive = "ping" if protocol == TRANSPORT_WS else "ka"
    client = GraphQLWSClient(daphne_server.ws_url, protocol)
    client.ws = await websockets.connect(daphne_server.ws_url, subprotocols=[protocol])
    try:
        await client.send({"type": "connection_init", "payload": {}})
        assert (await client.receive(skip_keepalive=False))["type"] == "connection_ack"
        if protocol == LEGACY_WS:
            assert (await client.receive(timeout=1, skip_keepalive=False))["type"] == "ka"
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []
        while len(arrivals) < 2:
            message = await client.receive(timeout=8, skip_keepalive=False)
            assert message["type"] == keepalive, message
            arrivals.append(loop.time())
        assert 2 <= arrivals[1] - arrivals[0] <= 5  # the interval, give or take a busy machine
    finally:
        await client.close()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_completed_subscription_gets_nothing_more_and_only_legacy_stop_is_confirmed(
    daphne_server, api: LiveApi, redis_server, protocol
):
    """graphql-transport-ws: after the client's `complete`, nothing is sent for that id (not even a
    `complete`); the legacy protocol answers `stop` with `complete`."""
    username, token = api.sign_up()
    client = await GraphQLWSClient(daphne_server.ws_url, protocol).connect()
    try:
        stopped = await client.subscribe(BLOG_PUBLISHED, {"author": username})
        kept = await client.subscribe(BLOG_PUBLISHED, {"author": username})
        await client.send({"type": "complete" if protocol == TRANSPORT_WS else "stop", "id": stopped})
        if protocol == LEGACY_WS:
            assert await client.receive() == {"type": "complete", "id": stopped}
        api.create_blog(token, "After complete")
        event = await client.receive()
        assert event["id"] == kept and event["payload"]["data"]["blogPublished"]["blog"]["title"] == "After complete"
        # A round trip after the event: anything sent for the stopped id would have come before it.
        await client.execute("query { viewer { username } }")
        assert [message for message in client.backlog if message.get("id") == stopped] == []
    finally:
        await client.close()
