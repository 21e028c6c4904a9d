"""Edits and deletions pushed like creations, on real processes: three Daphne instances, one Redis.

Every write path is announced once, after its commit, in commit order, to subscribers on other
instances than the writer, over both websocket subprotocols and both HTTP streams; a rolled-back
change never is; a resume after a deletion replays its tombstone and none of its text, from any
instance, whether or not that instance had read the blog before the deletion.
"""

import asyncio
import re
from typing import Any

import httpx
import pytest
from graphql_relay import from_global_id

from notifications.publishing.log import seq_from_cursor
from tests.live import BLOG_PUBLISHED, LATEST_CURSOR, LiveApi, assert_no_errors, unique_name
from tests.streamclient import APOLLO_ACCEPT, SSE_ACCEPT, StreamClient
from tests.wsclient import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, GraphQLWSClient

BLOG_CHANGED = """subscription Changes($author: String, $after: String) {
  blogChanged(author: $author, after: $after) {
    cursor kind blogId changedAt blog { id title content author { username } }
  }
}"""
UPDATE_BLOG = """mutation Update($id: ID!, $title: String, $content: String) {
  updateBlog(input: {id: $id, title: $title, content: $content}) { blog { id title content } }
}"""
DELETE_BLOG = "mutation Delete($id: ID!) { deleteBlog(input: {id: $id}) { deletedId } }"

Seen = tuple[str, str, str | None]


def pk(global_id: str) -> int:
    return int(from_global_id(global_id)[1])


def seen(change: dict[str, Any]) -> Seen:
    """(kind, blog id, title or None) of one blogChanged event."""
    return change["kind"], change["blogId"], (change["blog"] or {}).get("title")


async def changes(client: GraphQLWSClient, count: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(count):
        message = await client.next_data()
        assert "errors" not in message["payload"], message
        events.append(message["payload"]["data"]["blogChanged"])
    return events


async def no_more_events(client: GraphQLWSClient, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await client.receive(timeout=within)


async def subscribed(url: str, query: str, variables: dict[str, Any], protocol: str = TRANSPORT_WS) -> GraphQLWSClient:
    client = await GraphQLWSClient(url, protocol).connect()
    await client.subscribe(query, variables)
    return client


def update(api: LiveApi, token: str, blog_id: str, **fields: str) -> None:
    assert_no_errors(api.post(UPDATE_BLOG, {"id": blog_id, **fields}, token))


def delete(api: LiveApi, token: str, blog_id: str) -> None:
    assert_no_errors(api.post(DELETE_BLOG, {"id": blog_id}, token))


def assert_in_order(events: list[dict[str, Any]]) -> None:
    seqs = [seq_from_cursor(event["cursor"]) for event in events]
    assert seqs == sorted(set(seqs)), seqs


async def test_every_write_path_is_announced_once_in_commit_order_across_instances(daphne_servers, django_shell):
    first, second, third = daphne_servers
    writer = LiveApi(third.url)
    username, token = writer.sign_up()
    follow = {"author": username}
    clients = [
        await subscribed(first.ws_url, BLOG_CHANGED, follow, TRANSPORT_WS),
        await subscribed(second.ws_url, BLOG_CHANGED, follow, LEGACY_WS),
        await subscribed(first.ws_url, BLOG_CHANGED, {}),  # everyone's changes: this author's among them
    ]
    published = await subscribed(second.ws_url, BLOG_PUBLISHED, follow)
    try:
        a, b, c, d, e = (writer.create_blog(token, title) for title in ("a", "b", "c", "d", "e"))
        update(writer, token, a["id"], title="a through updateBlog")
        orm = (
            "from api.models import Author, Blog\n"
            f"blog = Blog.objects.get(pk={pk(a['id'])}); blog.title = 'a through save()'; blog.save()\n"
            f"Blog.objects.filter(pk__in=[{pk(c['id'])}, {pk(b['id'])}]).update(content='through update()')\n"
            f"b, c = Blog.objects.get(pk={pk(b['id'])}), Blog.objects.get(pk={pk(c['id'])})\n"
            "b.title, c.title = 'b through bulk_update()', 'c through bulk_update()'\n"
            "Blog.objects.bulk_update([c, b], ['title'])\n"
            f"Blog.objects.get(pk={pk(d['id'])}).delete()\n"
            f"Blog.objects.filter(pk={pk(c['id'])}).delete()\n"
        )
        await asyncio.to_thread(django_shell.run, orm)
        delete(writer, token, b["id"])
        cascade = f"from api.models import Author; Author.objects.get(username='{username}').delete()"
        await asyncio.to_thread(django_shell.run, cascade)

        expected: list[Seen] = [
            *(("CREATED", blog["id"], blog["title"]) for blog in (a, b, c, d, e)),
            ("UPDATED", a["id"], "a through updateBlog"),
            ("UPDATED", a["id"], "a through save()"),
            ("UPDATED", b["id"], "b"),  # update(): primary-key order
            ("UPDATED", c["id"], "c"),
            ("UPDATED", c["id"], "c through bulk_update()"),  # bulk_update(): the order given
            ("UPDATED", b["id"], "b through bulk_update()"),
            ("DELETED", d["id"], None),
            ("DELETED", c["id"], None),
            ("DELETED", b["id"], None),
        ]
        cascaded = {("DELETED", a["id"], None), ("DELETED", e["id"], None)}
        for client in clients[:2]:
            events = await changes(client, len(expected) + 2)
            assert [seen(event) for event in events[: len(expected)]] == expected
            assert {seen(event) for event in events[len(expected) :]} == cascaded
            assert_in_order(events)
            assert events[7]["blog"]["content"] == "through update()"
            await no_more_events(client)
        everyone: list[dict[str, Any]] = []
        while len(everyone) < len(expected) + 2:
            event = (await changes(clients[2], 1))[0]
            if event["blog"] is None or event["blog"]["author"]["username"] == username:
                everyone.append(event)
        assert [seen(event) for event in everyone][: len(expected)] == expected
        only_created = [(await published.next_data())["payload"]["data"]["blogPublished"] for _ in range(5)]
        assert [event["blog"]["title"] for event in only_created] == ["a", "b", "c", "d", "e"]
        await no_more_events(published)
    finally:
        for client in [*clients, published]:
            await client.close()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match is not None, html[:500]
    return match.group(1)


async def test_edits_and_deletions_in_the_admin_are_announced(daphne_servers, django_shell):
    first, second, _ = daphne_servers
    api = LiveApi(second.url)
    username, token = api.sign_up()
    edited, deleted, selected = (api.create_blog(token, title) for title in ("to edit", "to delete", "to select"))
    admin_name = unique_name("admin")
    code = (
        "from api.models import Author; "
        f"Author.objects.create_superuser('{admin_name}', password='admin password 1'); "
        f"print(Author.objects.get(username='{username}').pk)"
    )
    author_pk = (await asyncio.to_thread(django_shell.run, code)).split()[-1]
    client = await subscribed(first.ws_url, BLOG_CHANGED, {"author": username})
    try:
        with httpx.Client(base_url=second.url, follow_redirects=False, timeout=30) as browser:
            csrf = csrf_token(browser.get("/admin/login/").text)
            logged_in = browser.post(
                "/admin/login/?next=/admin/",
                data={"csrfmiddlewaretoken": csrf, "username": admin_name, "password": "admin password 1"},
            )
            assert logged_in.status_code == 302, logged_in.text[:500]
            change_url = f"/admin/api/blog/{pk(edited['id'])}/change/"
            csrf = csrf_token(browser.get(change_url).text)
            saved = browser.post(
                change_url,
                data={
                    "csrfmiddlewaretoken": csrf,
                    "author": author_pk,
                    "title": "Edited in the admin",
                    "content": "c",
                    "published_at_0": "2026-01-02",
                    "published_at_1": "03:04:05",
                },
            )
            assert saved.status_code == 302, saved.text[:2000]
            delete_url = f"/admin/api/blog/{pk(deleted['id'])}/delete/"
            csrf = csrf_token(browser.get(delete_url).text)
            assert browser.post(delete_url, data={"csrfmiddlewaretoken": csrf, "post": "yes"}).status_code == 302
            csrf = csrf_token(browser.get("/admin/api/blog/").text)
            action = browser.post(
                "/admin/api/blog/",
                data={
                    "csrfmiddlewaretoken": csrf,
                    "action": "delete_selected",
                    "_selected_action": str(pk(selected["id"])),
                    "post": "yes",
                },
            )
            assert action.status_code == 302, action.text[:2000]
        events = await changes(client, 3)
        assert [seen(event) for event in events] == [
            ("UPDATED", edited["id"], "Edited in the admin"),
            ("DELETED", deleted["id"], None),
            ("DELETED", selected["id"], None),
        ]
        await no_more_events(client)
    finally:
        await client.close()


async def test_rolled_back_edits_and_deletions_are_never_announced(daphne_servers, django_shell):
    first, _, third = daphne_servers
    api = LiveApi(third.url)
    username, token = api.sign_up()
    blog = api.create_blog(token, "Kept")
    client = await subscribed(first.ws_url, BLOG_CHANGED, {"author": username}, LEGACY_WS)
    try:
        code = (
            "from django.db import transaction\n"
            "from api.models import Blog\n"
            "try:\n"
            "    with transaction.atomic():\n"
            f"        blog = Blog.objects.get(pk={pk(blog['id'])})\n"
            "        blog.title = 'Rolled back'; blog.save()\n"
            "        Blog.objects.filter(pk=blog.pk).update(content='Rolled back')\n"
            "        Blog.objects.bulk_update([blog], ['title'])\n"
            "        blog.delete()\n"
            "        raise RuntimeError('abort')\n"
            "except RuntimeError:\n"
            "    pass\n"
        )
        await asyncio.to_thread(django_shell.run, code)
        update(api, token, blog["id"], title="Committed")
        assert [seen(event) for event in await changes(client, 1)] == [("UPDATED", blog["id"], "Committed")]
        await no_more_events(client)
    finally:
        await client.close()


def latest_cursor(api: LiveApi) -> str:
    return assert_no_errors(api.post(LATEST_CURSOR))["latestCursor"]


async def ws_replay(url: str, protocol: str, query: str, variables: dict[str, Any], count: int) -> list[dict[str, Any]]:
    client = await subscribed(url, query, variables, protocol)
    try:
        field = "blogChanged" if "blogChanged" in query else "blogPublished"
        events = [(await client.next_data())["payload"]["data"][field] for _ in range(count)]
        await no_more_events(client)
        return events
    finally:
        await client.close()


async def stream_replay(url: str, accept: str, query: str, variables: dict[str, Any], count: int, **kw: Any):
    async with StreamClient(url, query, variables, accept=accept, **kw) as stream:
        results = await stream.results(count)
        await stream.nothing_more()
    field = "blogChanged" if "blogChanged" in query else "blogPublished"
    return [result["data"][field] for result in results]


async def test_a_resume_across_a_deletion_replays_its_tombstone_and_none_of_its_text(daphne_servers):
    first, second, third = daphne_servers
    writer = LiveApi(third.url)
    username, token = writer.sign_up()
    writer.create_blog(token, "Before")
    start = latest_cursor(writer)
    doomed = writer.create_blog(token, "Doomed title", "Doomed content")
    update(writer, token, doomed["id"], title="Doomed edit", content="Doomed edit content")
    kept = writer.create_blog(token, "Kept")
    follow = {"author": username, "after": start}

    # Every instance reads the doomed blog into its shared replay window first.
    for server in daphne_servers:
        before = await ws_replay(server.ws_url, TRANSPORT_WS, BLOG_CHANGED, follow, 3)
        assert [seen(e)[2] for e in before] == ["Doomed title", "Doomed edit", "Kept"]

    delete(writer, token, doomed["id"])
    update(writer, token, kept["id"], title="Kept, edited")
    expected = [
        ("CREATED", kept["id"], "Kept"),
        ("DELETED", doomed["id"], None),
        ("UPDATED", kept["id"], "Kept, edited"),
    ]
    replays: dict[str, list[dict[str, Any]]] = {}
    for server in (first, second):
        for protocol in PROTOCOLS:
            replays[f"{server.name} {protocol}"] = await ws_replay(server.ws_url, protocol, BLOG_CHANGED, follow, 3)
            published = await ws_replay(server.ws_url, protocol, BLOG_PUBLISHED, follow, 1)
            assert [e["blog"]["title"] for e in published] == ["Kept"]
            replays[f"{server.name} {protocol} published"] = published
        for name, accept in (("sse", SSE_ACCEPT), ("multipart", APOLLO_ACCEPT)):
            replays[f"{server.name} {name}"] = await stream_replay(server.url, accept, BLOG_CHANGED, follow, 3)
    for name, events in replays.items():
        assert "Doomed" not in repr(events), name
        if "published" not in name:
            assert [seen(event) for event in events] == expected, name
            assert events[1]["blog"] is None and events[1]["changedAt"]


async def test_either_subscriptions_cursor_resumes_either_with_no_gap_or_duplicate_at_the_seam(daphne_servers):
    first, second, third = daphne_servers
    writer = LiveApi(third.url)
    username, token = writer.sign_up()
    live = await subscribed(first.ws_url, BLOG_CHANGED, {"author": username})
    try:
        one = writer.create_blog(token, "one")
        update(writer, token, one["id"], title="one, edited")
        first_two = await changes(live, 2)
        # A blogPublished subscriber resuming from a blogChanged cursor (an edit's) gets the next creation.
        published = await subscribed(
            second.ws_url, BLOG_PUBLISHED, {"author": username, "after": first_two[1]["cursor"]}
        )
        two = writer.create_blog(token, "two")
        delete(writer, token, one["id"])
        created = (await published.next_data())["payload"]["data"]["blogPublished"]
        assert created["blog"]["title"] == "two"
        await no_more_events(published)
        await published.close()

        # A blogChanged subscriber resuming from that blogPublished cursor, while changes keep coming:
        # the replay, then live, each change once.
        resumed = await GraphQLWSClient(second.ws_url, LEGACY_WS).connect()
        await resumed.start(BLOG_CHANGED, {"author": username, "after": created["cursor"]})
        update(writer, token, two["id"], title="two, edited")
        got = await changes(resumed, 2)
        assert [seen(e) for e in got] == [("DELETED", one["id"], None), ("UPDATED", two["id"], "two, edited")]
        await no_more_events(resumed)
        await resumed.close()
        everything = await changes(live, 3)
        assert [seen(e) for e in everything] == [
            ("CREATED", two["id"], "two"),
            ("DELETED", one["id"], None),
            ("UPDATED", two["id"], "two, edited"),
        ]
    finally:
        await live.close()


@pytest.mark.parametrize("accept", [SSE_ACCEPT, APOLLO_ACCEPT], ids=["sse", "multipart"])
async def test_http_streams_get_edits_and_deletions_live_and_sse_resumes_after_last_event_id(daphne_servers, accept):
    first, _, third = daphne_servers
    writer = LiveApi(third.url)
    username, token = writer.sign_up()
    blog = writer.create_blog(token, "Streamed")
    follow = {"author": username, "after": latest_cursor(writer)}
    async with StreamClient(first.url, BLOG_CHANGED, follow, accept=accept) as stream:
        update(writer, token, blog["id"], title="Streamed, edited")
        delete(writer, token, blog["id"])
        results = [r["data"]["blogChanged"] for r in await stream.results(2)]
        assert [seen(e) for e in results] == [
            ("UPDATED", blog["id"], "Streamed, edited"),
            ("DELETED", blog["id"], None),
        ]
    if accept == SSE_ACCEPT:
        again = writer.create_blog(token, "After the reconnect")
        resumed = await stream_replay(
            first.url, SSE_ACCEPT, BLOG_CHANGED, follow, 2, headers={"Last-Event-ID": results[0]["cursor"]}
        )
        assert [seen(e) for e in resumed] == [
            ("DELETED", blog["id"], None),
            ("CREATED", again["id"], "After the reconnect"),
        ]
