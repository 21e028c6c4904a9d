"""blogPublished(after: cursor): what a subscriber missed, then live, with no gap and no duplicate."""

import asyncio
import threading

import pytest

from tests.live import BLOG_PUBLISHED, LATEST_CURSOR, LiveApi, assert_no_errors, error_codes
from tests.wsclient import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, GraphQLWSClient

DELETE_BLOG = "mutation Delete($id: ID!) { deleteBlog(input: {id: $id}) { deletedId } }"


def latest_cursor(api: LiveApi) -> str:
    return assert_no_errors(api.post(LATEST_CURSOR))["latestCursor"]


async def events(client: GraphQLWSClient, count: int, timeout: float = 10) -> list[dict]:
    received = []
    for _ in range(count):
        message = await client.next_data(timeout)
        assert "errors" not in message["payload"], message
        received.append(message["payload"]["data"]["blogPublished"])
    return received


def titles(received: list[dict]) -> list[str]:
    return [event["blog"]["title"] for event in received]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_resume_replays_what_was_missed_then_goes_live(daphne_servers, protocol):
    first, second, _ = daphne_servers
    api = LiveApi(first.url)
    username, token = api.sign_up()
    client = await GraphQLWSClient(first.ws_url, protocol).connect()
    await client.subscribe(BLOG_PUBLISHED, {"author": username})
    api.create_blog(token, "seen 1")
    api.create_blog(token, "seen 2")
    seen = await events(client, 2)
    await client.close()

    for i in range(3):
        api.create_blog(token, f"missed {i}")

    # Back on another instance, as after a reconnect through the load balancer.
    client = await GraphQLWSClient(second.ws_url, protocol).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED, {"author": username, "after": seen[-1]["cursor"]})
        replayed = await events(client, 3)
        assert titles(replayed) == ["missed 0", "missed 1", "missed 2"]
        api.create_blog(token, "live")
        assert titles(await events(client, 1)) == ["live"]
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.5)
    finally:
        await client.close()


async def test_no_gap_and_no_duplicate_while_blogs_are_published_during_the_switch(daphne_servers):
    first, second, third = daphne_servers
    writer = LiveApi(third.url)
    username, token = writer.sign_up()
    start = latest_cursor(writer)
    total = 40
    published: list[str] = []

    def publish_all() -> None:
        api = LiveApi(first.url)
        for i in range(total):
            published.append(api.create_blog(token, f"burst {i}")["title"])

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    try:
        await asyncio.sleep(0.05)  # subscribe while the burst is in flight
        client = await GraphQLWSClient(second.ws_url, LEGACY_WS).connect()
        try:
            await client.start(BLOG_PUBLISHED, {"author": username, "after": start})
            received = await events(client, total, timeout=20)
            assert titles(received) == [f"burst {i}" for i in range(total)]
            assert len({event["cursor"] for event in received}) == total
            with pytest.raises(TimeoutError):
                await client.receive(timeout=0.5)
        finally:
            await client.close()
    finally:
        publisher.join()
    assert len(published) == total


async def test_latest_cursor_then_subscribe_misses_nothing(daphne_server):
    api = LiveApi(daphne_server.url)
    username, token = api.sign_up()
    cursor = latest_cursor(api)
    api.create_blog(token, "between the query and the subscription")
    client = await GraphQLWSClient(daphne_server.ws_url).connect()
    try:
        await client.start(BLOG_PUBLISHED, {"after": cursor, "author": username})
        assert titles(await events(client, 1)) == ["between the query and the subscription"]
    finally:
        await client.close()


async def test_replay_skips_deleted_blogs_and_respects_the_author_filter(daphne_server):
    api = LiveApi(daphne_server.url)
    username, token = api.sign_up()
    _, other_token = api.sign_up()
    cursor = latest_cursor(api)
    api.create_blog(token, "kept 1")
    doomed = api.create_blog(token, "deleted")
    api.create_blog(other_token, "someone else's")
    api.create_blog(token, "kept 2")
    assert_no_errors(api.post(DELETE_BLOG, {"id": doomed["id"]}, token))
    client = await GraphQLWSClient(daphne_server.ws_url).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED, {"author": username, "after": cursor})
        assert titles(await events(client, 2)) == ["kept 1", "kept 2"]
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.5)
    finally:
        await client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        ("not a cursor!", "not a blogPublished or blogChanged cursor"),
        ("cHViOjk5OTk5OTk", "Unknown cursor"),
        ("cHViOi0x", "not a blogPublished or blogChanged cursor"),
    ],
)
async def test_bad_cursors_are_bad_user_input(daphne_server, protocol, cursor, reason):
    client = await GraphQLWSClient(daphne_server.ws_url, protocol).connect()
    try:
        op_id = await client.start(BLOG_PUBLISHED, {"after": cursor})
        reply = await client.receive()
        assert reply["id"] == op_id
        errors = reply["payload"] if protocol == TRANSPORT_WS else reply["payload"]["errors"]
        assert error_codes({"errors": errors}) == ["BAD_USER_INPUT"]
        assert reason in errors[0]["message"]
        assert "blogs" in errors[0]["message"]  # tells the client how to recover
    finally:
        await client.close()


async def test_cursor_older_than_the_replay_window_is_bad_user_input(daphne_server, django_shell):
    api = LiveApi(daphne_server.url)
    _, token = api.sign_up()
    cursor = latest_cursor(api)
    blog = api.create_blog(token, "long ago")
    code = (
        "from datetime import timedelta; from django.utils import timezone; from graphql_relay import from_global_id; "
        "from notifications.models import Publication; "
        f"Publication.objects.filter(blog_id=from_global_id('{blog['id']}')[1])"
        ".update(created_at=timezone.now() - timedelta(days=30))"
    )
    await asyncio.to_thread(django_shell.run, code)
    client = await GraphQLWSClient(daphne_server.ws_url).connect()
    try:
        await client.start(BLOG_PUBLISHED, {"after": cursor})
        reply = await client.receive()
        assert reply["type"] == "error"
        assert error_codes({"errors": reply["payload"]}) == ["BAD_USER_INPUT"]
        assert "replay window" in reply["payload"][0]["message"]
    finally:
        await client.close()
