"""blogPublished end to end: real Daphne processes, a real Redis, real websocket clients."""

import asyncio
import re

import httpx
import pytest

from notifications.publishing.log import seq_from_cursor
from tests.live import BLOG_PUBLISHED, LiveApi, assert_no_errors, unique_name
from tests.wsclient import PROTOCOLS, GraphQLWSClient

AUTHOR_BLOGS_IN_EVENT = """
subscription { blogPublished { blog { title author { username blogs(first: 5) { edges { node { title } } } } } } }
"""
BLOGS_OVER_WS = "query { blogs(first: 3) { edges { node { title author { username } } } } }"
CREATE_BLOG_OVER_WS = (
    'mutation { createBlog(input: {title: "Over the socket", content: "c"}) { blog { title author { username } } } }'
)


async def no_more_events(client: GraphQLWSClient, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await client.receive(timeout=within)


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match is not None, html[:500]
    return match.group(1)


async def subscribed(url: str, protocol: str, author: str | None, init: dict | None = None) -> GraphQLWSClient:
    client = await GraphQLWSClient(url, protocol).connect(init)
    await client.subscribe(BLOG_PUBLISHED, {"author": author})
    return client


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscriber_receives_exactly_one_event_with_the_blog(daphne_server, api: LiveApi, redis_server, protocol):
    username, token = api.sign_up()
    client = await subscribed(daphne_server.ws_url, protocol, username)
    try:
        created = api.create_blog(token, "Pushed, not polled", "Body text")
        message = await client.next_data()
        event = message["payload"]["data"]["blogPublished"]
        assert "errors" not in message["payload"]
        assert event["blog"]["id"] == created["id"]
        assert event["blog"]["title"] == "Pushed, not polled"
        assert event["blog"]["content"] == "Body text"
        assert event["blog"]["publishedAt"] == created["publishedAt"]
        assert event["blog"]["author"]["username"] == username
        assert event["blog"]["author"]["bio"] == f"I am {username}"
        assert re.fullmatch(r"[A-Za-z0-9_-]+", event["cursor"])
        await no_more_events(client)
    finally:
        await client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_author_filter_excludes_other_authors(daphne_server, api: LiveApi, redis_server, protocol):
    followed, followed_token = api.sign_up()
    _, other_token = api.sign_up()
    client = await subscribed(daphne_server.ws_url, protocol, followed)
    try:
        api.create_blog(other_token, "Not for you")
        api.create_blog(followed_token, "For you")
        event = (await client.next_data())["payload"]["data"]["blogPublished"]
        assert event["blog"]["title"] == "For you"
        await no_more_events(client)
    finally:
        await client.close()


async def test_unfiltered_subscriber_gets_every_author_in_publish_order(daphne_server, api: LiveApi, redis_server):
    _, first_token = api.sign_up()
    _, second_token = api.sign_up()
    client = await GraphQLWSClient(daphne_server.ws_url).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED)
        api.create_blog(first_token, "one")
        api.create_blog(second_token, "two")
        api.create_blog(first_token, "three")
        events = [(await client.next_data())["payload"]["data"]["blogPublished"] for _ in range(3)]
        assert [e["blog"]["title"] for e in events] == ["one", "two", "three"]
        seqs = [seq_from_cursor(e["cursor"]) for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3, seqs  # cursors increase in publish order
    finally:
        await client.close()


async def test_subscribers_on_two_processes_receive_a_mutation_sent_to_a_third(daphne_servers, redis_server):
    first, second, third = daphne_servers
    writer = LiveApi(third.url)
    username, token = writer.sign_up()
    clients = [
        await subscribed(first.ws_url, "graphql-transport-ws", username),
        await subscribed(second.ws_url, "graphql-ws", username),
    ]
    try:
        assert {c.instance for c in clients} == {first.name, second.name}
        writer.create_blog(token, "Across processes")
        for client in clients:
            assert (await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] == "Across processes"
    finally:
        for client in clients:
            await client.close()


async def test_blog_created_with_the_orm_in_a_shell_is_pushed(daphne_server, api: LiveApi, redis_server, django_shell):
    username, _ = api.sign_up()
    client = await subscribed(daphne_server.ws_url, "graphql-transport-ws", username)
    try:
        code = (
            "from api.models import Author, Blog; "
            f"Blog.objects.create(author=Author.objects.get(username='{username}'), title='From a shell', content='c')"
        )
        await asyncio.to_thread(django_shell.run, code)
        assert (await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] == "From a shell"
        await no_more_events(client)
    finally:
        await client.close()


async def test_rolled_back_blog_is_never_announced(daphne_server, api: LiveApi, redis_server, django_shell):
    username, token = api.sign_up()
    client = await subscribed(daphne_server.ws_url, "graphql-ws", username)
    try:
        code = (
            "from django.db import transaction\n"
            "from api.models import Author, Blog\n"
            "try:\n"
            "    with transaction.atomic():\n"
            f"        Blog.objects.create(author=Author.objects.get(username='{username}'),"
            " title='Rolled back', content='c')\n"
            "        raise RuntimeError('abort')\n"
            "except RuntimeError:\n"
            "    pass\n"
        )
        await asyncio.to_thread(django_shell.run, code)
        api.create_blog(token, "Committed")
        assert (await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] == "Committed"
        await no_more_events(client)
    finally:
        await client.close()


async def test_blog_created_in_the_admin_is_pushed(daphne_server, api: LiveApi, redis_server, django_shell, live_env):
    username, _ = api.sign_up()
    admin_name = unique_name("admin")
    code = (
        "from api.models import Author; "
        f"Author.objects.create_superuser('{admin_name}', password='admin password 1'); "
        f"print(Author.objects.get(username='{username}').pk)"
    )
    author_pk = (await asyncio.to_thread(django_shell.run, code)).split()[-1]
    client = await subscribed(daphne_server.ws_url, "graphql-transport-ws", username)
    try:
        with httpx.Client(base_url=daphne_server.url, follow_redirects=False, timeout=30) as browser:
            login_page = browser.get("/admin/login/")
            csrf = csrf_token(login_page.text)
            logged_in = browser.post(
                "/admin/login/?next=/admin/",
                data={"csrfmiddlewaretoken": csrf, "username": admin_name, "password": "admin password 1"},
            )
            assert logged_in.status_code == 302, logged_in.text[:500]
            add_page = browser.get("/admin/api/blog/add/")
            csrf = csrf_token(add_page.text)
            saved = browser.post(
                "/admin/api/blog/add/",
                data={
                    "csrfmiddlewaretoken": csrf,
                    "author": author_pk,
                    "title": "From the admin",
                    "content": "c",
                    "published_at_0": "2026-01-02",
                    "published_at_1": "03:04:05",
                },
            )
            assert saved.status_code == 302, saved.text[:2000]
        assert (await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] == "From the admin"
    finally:
        await client.close()


async def test_idle_subscriber_outlives_the_redis_socket_timeout(daphne_server, api: LiveApi, redis_server):
    """redis-py 8 times idle reads out after 5 s (channels-redis #422); the layer must survive that."""
    username, token = api.sign_up()
    client = await subscribed(daphne_server.ws_url, "graphql-transport-ws", username)
    try:
        await asyncio.sleep(7)
        api.create_blog(token, "After a quiet spell")
        assert (await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] == "After a quiet spell"
    finally:
        await client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_queries_and_mutations_work_over_the_socket(daphne_server, api: LiveApi, protocol):
    username, token = api.sign_up()
    client = await GraphQLWSClient(daphne_server.ws_url, protocol).connect({"authorization": f"Bearer {token}"})
    try:
        created = await client.execute(CREATE_BLOG_OVER_WS)
        assert created["payload"] == {
            "data": {"createBlog": {"blog": {"title": "Over the socket", "author": {"username": username}}}}
        }
        listed = await client.execute(BLOGS_OVER_WS)
        assert "errors" not in listed["payload"], listed
        assert listed["payload"]["data"]["blogs"]["edges"][0]["node"]["title"] == "Over the socket"
        viewer = await client.execute("query { viewer { username } }")
        assert viewer["payload"]["data"] == {"viewer": {"username": username}}
    finally:
        await client.close()


async def test_event_can_select_the_authors_other_blogs(daphne_server, api: LiveApi, redis_server):
    username, token = api.sign_up()
    api.create_blog(token, "Earlier")
    client = await GraphQLWSClient(daphne_server.ws_url).connect()
    try:
        await client.subscribe(AUTHOR_BLOGS_IN_EVENT)
        api.create_blog(token, "Later")
        while True:  # other tests' events may be in flight on the shared group
            event = (await client.next_data())["payload"]
            assert "errors" not in event, event
            if event["data"]["blogPublished"]["blog"]["author"]["username"] == username:
                break
        blogs = event["data"]["blogPublished"]["blog"]["author"]["blogs"]["edges"]
        assert [edge["node"]["title"] for edge in blogs] == ["Later", "Earlier"]
    finally:
        await client.close()


async def test_bad_token_in_connection_init_is_refused(daphne_server):
    import websockets

    client = GraphQLWSClient(daphne_server.ws_url)
    with pytest.raises((AssertionError, websockets.ConnectionClosed)):
        await client.connect({"authorization": "Bearer not-a-token"})
    assert client.ws is not None
    await asyncio.wait_for(client.ws.wait_closed(), 5)
    assert client.ws.close_code == 4403


def test_create_blog_answers_with_the_committed_blog(api: LiveApi):
    """The mutation's answer is the blog as stored: the same fields a later read returns."""
    username, token = api.sign_up()
    created = api.create_blog(token, "Answered", "As committed.")
    assert created["title"] == "Answered" and created["author"]["username"] == username
    stored = assert_no_errors(
        api.post(
            "query Read($id: ID!) { blog(id: $id) { id title content publishedAt author { username } } }",
            {"id": created["id"]},
        )
    )["blog"]
    assert stored == created
