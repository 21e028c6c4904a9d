"""The same hostile documents over HTTP and both websocket protocols get the same coded errors.

Against the shared live servers, which run with the default limits (depth 10, cost 5,000,
20,000 characters, 2,000 tokens, introspection off because DJANGO_DEBUG is off).
"""

import json
from typing import Any

import pytest
import websockets

from tests.live import BLOG_PUBLISHED, LiveApi, assert_no_errors, unique_name
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, GraphQLWSClient

PATHS = ["http", TRANSPORT_WS, LEGACY_WS]

DEEP_QUERY = (
    "{ blogs { edges { node { author { blogs { edges { node { author {"
    " blogs { edges { node { title } } } } } } } } } } } }"
)
DEEP_SUBSCRIPTION = (
    "subscription { blogPublished { blog { author { blogs(first: 1) { edges { node { author {"
    " blogs(first: 1) { edges { node { author { username } } } } } } } } } } } }"
)
COSTLY_QUERY = "{ authors { edges { node { blogs { edges { node { title } } } } } } }"  # 1 + 100 * (3 + 100 * 3)
AFFORDABLE_QUERY = "{ authors(first: 10) { edges { node { blogs(first: 10) { edges { node { title } } } } } } }"
HUGE_DOCUMENT = "{ viewer { id } }" + " " * 20_001
MANY_TOKENS = "{ viewer { " + "id " * 2_001 + "} }"
INTROSPECTION = "{ __schema { queryType { name } } }"
MISSPELLED = "{ blgs { edges { cursor } } }"
HUGE_PAGE = "{ blogs(first: 1000) { edges { cursor } } }"
HUGE_PAGE_IN_VARIABLE = "query Page($n: Int) { blogs(last: $n) { edges { cursor } } }"
TYPENAME = "{ __typename viewer { __typename } }"

# document, variables, expected code, expected extensions.limit (None: not a limit)
HOSTILE = {
    "depth": (DEEP_QUERY, None, "BAD_USER_INPUT", "depth"),
    "depth-subscription": (DEEP_SUBSCRIPTION, None, "BAD_USER_INPUT", "depth"),
    "cost": (COSTLY_QUERY, None, "BAD_USER_INPUT", "cost"),
    "document-size": (HUGE_DOCUMENT, None, "BAD_USER_INPUT", "documentSize"),
    "tokens": (MANY_TOKENS, None, "BAD_USER_INPUT", "tokens"),
    "page-size": (HUGE_PAGE, None, "BAD_USER_INPUT", "pageSize"),
    "page-size-variable": (HUGE_PAGE_IN_VARIABLE, {"n": -5}, "BAD_USER_INPUT", "pageSize"),
    "introspection": (INTROSPECTION, None, "GRAPHQL_VALIDATION_FAILED", None),
}


async def ws_errors(
    url: str, protocol: str, query: str, variables: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The errors the server answers one operation with, whichever message carries them."""
    client = await GraphQLWSClient(url, protocol).connect()
    try:
        op_id = await client.start(query, variables)
        reply = await client.receive()
        assert reply["id"] == op_id, reply
        if reply["type"] == "error":
            payload = reply["payload"]
            return payload if isinstance(payload, list) else payload["errors"]
        assert reply["type"] in ("next", "data"), reply
        return reply["payload"].get("errors") or []
    finally:
        await client.close()


async def errors_via(
    path: str, daphne_server, api: LiveApi, query: str, variables: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    if path == "http":
        return api.post(query, variables).get("errors") or []
    return await ws_errors(daphne_server.ws_url, path, query, variables)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", HOSTILE.keys())
async def test_hostile_documents_get_the_same_error_on_every_path(daphne_server, api: LiveApi, case, path):
    query, variables, code, limit = HOSTILE[case]
    errors = await errors_via(path, daphne_server, api, query, variables)
    assert errors, f"{case} was accepted over {path}"
    assert errors[0]["extensions"]["code"] == code, errors
    assert errors[0]["extensions"].get("limit") == limit, errors
    if limit is not None:
        assert isinstance(errors[0]["extensions"]["max"], int)


@pytest.mark.parametrize("path", PATHS)
async def test_suggestions_are_hidden_while_introspection_is_off(daphne_server, api: LiveApi, path):
    errors = await errors_via(path, daphne_server, api, MISSPELLED)
    assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "blgs" in errors[0]["message"]
    assert "Did you mean" not in errors[0]["message"]
    assert "'blogs'" not in errors[0]["message"]


@pytest.mark.parametrize("path", PATHS)
async def test_documents_within_the_limits_still_run(daphne_server, api: LiveApi, path):
    """The limits refuse only what exceeds them: nested pages with first/last, and __typename."""
    for query in (AFFORDABLE_QUERY, TYPENAME):
        if path == "http":
            assert_no_errors(api.post(query))
            continue
        client = await GraphQLWSClient(daphne_server.ws_url, path).connect()
        try:
            result = await client.execute(query)
            assert "errors" not in result["payload"], result
        finally:
            await client.close()


async def refused_ids(client: GraphQLWSClient, count: int) -> set[str]:
    """Ids of the next `count` replies, each the subscription limit's error."""
    refused = set()
    for _ in range(count):
        reply = await client.receive()
        assert reply["type"] == "error", reply
        error = reply["payload"][0] if isinstance(reply["payload"], list) else reply["payload"]["errors"][0]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "limit": "subscriptionsPerConnection", "max": 20}
        refused.add(reply["id"])
    return refused


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_at_most_20_active_subscriptions_per_connection(daphne_server, redis_server, protocol):
    """Operations on one socket run concurrently, so which ones are refused is not fixed; how many is."""
    author = unique_name()
    client = await GraphQLWSClient(daphne_server.ws_url, protocol).connect()
    try:
        started = [await client.start(BLOG_PUBLISHED, {"author": author}) for _ in range(25)]
        refused = await refused_ids(client, 5)
        accepted = [op_id for op_id in started if op_id not in refused]
        assert len(accepted) == 20

        # Completing one frees exactly one slot: of two new subscriptions one is refused; the
        # other takes the slot, so a third is refused as well.
        await client.send({"type": "complete" if protocol == TRANSPORT_WS else "stop", "id": accepted[0]})
        if protocol == LEGACY_WS:  # graphql-transport-ws sends nothing more for a completed id
            assert await client.receive() == {"type": "complete", "id": accepted[0]}
        contenders = {await client.start(BLOG_PUBLISHED, {"author": author}) for _ in range(2)}
        assert (await refused_ids(client, 1)) < contenders
        third = await client.start(BLOG_PUBLISHED, {"author": author})
        assert await refused_ids(client, 1) == {third}
    finally:
        await client.close()


async def test_an_oversized_message_closes_graphql_transport_ws_with_4400(daphne_server):
    client = await GraphQLWSClient(daphne_server.ws_url, TRANSPORT_WS).connect()
    padding = "x" * (512 * 1024)
    await client.send(
        {"type": "subscribe", "id": "1", "payload": {"query": "{ viewer { id } }", "variables": {"pad": padding}}}
    )
    assert client.ws is not None
    with pytest.raises(websockets.ConnectionClosed):
        await client.receive(timeout=10)
    assert client.ws.close_code == 4400  # Daphne sends no close reason


async def test_an_oversized_message_is_an_error_on_the_legacy_protocol(daphne_server):
    client = await GraphQLWSClient(daphne_server.ws_url, LEGACY_WS).connect()
    try:
        # 300,000 characters, but 600,000 bytes of UTF-8: the limit counts bytes.
        message = {
            "type": "start",
            "id": "1",
            "payload": {"query": "{ viewer { id } }", "variables": {"pad": "é" * 300_000}},
        }
        await client.send(json.dumps(message, ensure_ascii=False))
        reply = await client.receive()
        assert reply["type"] == "error"
        assert "at most 524288" in reply["payload"]["message"]
        assert (await client.execute("{ viewer { id } }"))["payload"] == {"data": {"viewer": None}}
    finally:
        await client.close()


async def test_a_large_blog_still_fits_in_one_message(daphne_server, api: LiveApi):
    """The message limit leaves room for the largest blog createBlog accepts (100,000 characters)."""
    _, token = api.sign_up()
    client = await GraphQLWSClient(daphne_server.ws_url, TRANSPORT_WS).connect({"authorization": f"Bearer {token}"})
    try:
        mutation = 'mutation($c: String!) { createBlog(input: {title: "Long", content: $c}) { blog { title } } }'
        # As browsers send it (JSON.stringify keeps non-ASCII as UTF-8): 200,000 bytes of content.
        message = {"type": "subscribe", "id": "big", "payload": {"query": mutation, "variables": {"c": "ü" * 100_000}}}
        await client.send(json.dumps(message, ensure_ascii=False))
        reply = await client.receive()
        assert reply["payload"] == {"data": {"createBlog": {"blog": {"title": "Long"}}}}
    finally:
        await client.close()
