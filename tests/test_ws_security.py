"""Websocket handshakes and sign-in: origins, subprotocols, session cookies, bad tokens."""

import asyncio

import pytest
import websockets

from tests.wsclient import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, GraphQLWSClient

VIEWER = "query { viewer { username } }"


FOREIGN = {
    "another site": lambda port: "https://evil.example",
    "a suffix of this host": lambda port: "http://127.0.0.1.evil.example",
    "a sandboxed page": lambda port: "null",
    "another port of this host": lambda port: f"http://127.0.0.1:{port + 1}",
    "another scheme": lambda port: f"https://127.0.0.1:{port}",
    "this host without the port": lambda port: "http://127.0.0.1",
}


@pytest.mark.parametrize("origin", FOREIGN)
async def test_websockets_from_a_foreign_origin_are_refused(daphne_server, origin):
    """Cross-site websocket hijacking: a page elsewhere must not ride on a visitor's cookies. An
    origin is its scheme, host and port: another port of this very host is another page."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(
            daphne_server.ws_url,
            subprotocols=[TRANSPORT_WS],
            additional_headers={"Origin": FOREIGN[origin](daphne_server.port)},
        )
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_websockets_from_the_sites_own_origin_connect(daphne_server, host):
    """The page's origin is the one the socket was opened to, under any host name the site answers to."""
    origin = f"http://{host}:{daphne_server.port}"
    client = GraphQLWSClient(f"ws://{host}:{daphne_server.port}/graphql/")
    await client.connect(additional_headers={"Origin": origin})
    try:
        assert (await client.execute(VIEWER))["payload"] == {"data": {"viewer": None}}
    finally:
        await client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_browser_on_the_same_origin_is_signed_in_by_its_session_cookie(
    daphne_server, browser_session, protocol
):
    username, session = browser_session
    headers = {"Origin": daphne_server.url, "Cookie": f"sessionid={session}"}
    client = await GraphQLWSClient(daphne_server.ws_url, protocol).connect(additional_headers=headers)
    try:
        assert (await client.execute(VIEWER))["payload"] == {"data": {"viewer": {"username": username}}}
    finally:
        await client.close()


async def test_a_bad_token_gets_a_connection_error_on_the_legacy_protocol(daphne_server):
    async with websockets.connect(daphne_server.ws_url, subprotocols=[LEGACY_WS]) as socket:
        client = GraphQLWSClient(daphne_server.ws_url, LEGACY_WS)
        client.ws = socket
        await client.send({"type": "connection_init", "payload": {"authorization": "Bearer blog_forged"}})
        reply = await client.receive()
        assert reply["type"] == "connection_error"
        assert reply["payload"]["extensions"] == {"code": "UNAUTHENTICATED"}
        assert "invalid or has been revoked" in reply["payload"]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await client.receive()


@pytest.mark.parametrize("subprotocols", [None, ["chat"], ["graphql-wrong", "soap"]])
async def test_refusing_a_missing_or_wrong_subprotocol_logs_no_exception(daphne_server, subprotocols):
    log_start = daphne_server.log_path.stat().st_size
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(daphne_server.ws_url, subprotocols=subprotocols)
    assert refused.value.response.status_code == 403
    # The server still answers, and logged the refusal without a traceback.
    client = await GraphQLWSClient(daphne_server.ws_url).connect()
    await client.close()
    await asyncio.sleep(0.2)  # let the server flush the lines of that connection
    with daphne_server.log_path.open(errors="replace") as log:
        log.seek(log_start)
        written = log.read()
    assert "no GraphQL subprotocol offered" in written
    assert "Traceback" not in written and "ERROR" not in written
