"""Reads run a bounded number of statements, read only the columns they need, and page like Relay says.

Counted with Django's CaptureQueriesContext through the real view (tests/graphql_http.py) on the
configured database: SQLite here, PostgreSQL when tests/test_reads_postgres.py runs this module
against a throwaway cluster.
"""

import base64
import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from graphql_relay import to_global_id

from api.models import Author, Blog
from notifications.hub.cohorts import Cohort
from notifications.publishing.publication import AuthorData, BlogData, ChangeKind, Publication
from notifications.publishing.publication import cursor_for as publication_cursor
from tests.graphql_http import post_graphql
from tests.live import assert_no_errors

AUTHORS, BLOGS_EACH = 12, 6

EDGES_TITLE = "edges { cursor node { title } }"
PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"

# Each shape is run at two page sizes N; the statements it runs must not depend on N.
SHAPES: dict[str, tuple[str, int]] = {
    "blogs with their author": ("{ blogs(first: %(n)s) { edges { node { title author { username } } } } }", 1),
    "blogs, author, the author's blogs": (
        "{ blogs(first: %(n)s) { edges { node { title author { username blogs(first: 5) { "
        + EDGES_TITLE
        + " } } } } } }",
        2,
    ),
    "authors with their blogs": (
        "{ authors(first: %(n)s) { edges { node { username blogs(first: 5) { " + EDGES_TITLE + " } } } } }",
        2,
    ),
    "authors, blogs from the end, their author's blogs": (
        "{ authors(first: %(n)s) { "
        + PAGE_INFO
        + " edges { node { username blogs(last: 3) { "
        + PAGE_INFO
        + " edges { node { title author { bio blogs(first: 2) { "
        + EDGES_TITLE
        + " } } } } } } } } }",
        3,
    ),
    "two aliased nested pages": (
        "{ authors(first: %(n)s) { edges { node { newest: blogs(first: 2) { "
        + EDGES_TITLE
        + " } oldest: blogs(last: 2) { "
        + EDGES_TITLE
        + " } } } } }",
        3,
    ),
    "blogs by an author, back to every author's blogs": (
        '{ blogs(author: "author00", first: %(n)s) { edges { node { author { blogs(first: 3) { edges { node {'
        " title author { username blogs(first: 1) { " + EDGES_TITLE + " } } } } } } } } } }",
        3,
    ),
    "one author, a page of blogs, their author's blogs": (
        '{ author(username: "author01") { blogs(first: %(n)s) { edges { node { content author {'
        " blogs(first: 2) { " + EDGES_TITLE + " } } } } } } }",
        3,
    ),
    "a node that is an author": (
        '{ node(id: "%(author_id)s") { ... on Author { blogs(first: %(n)s) { edges { node { author {'
        " blogs(last: 2) { " + EDGES_TITLE + " } } } } } } } }",
        3,
    ),
    "a blog, its author's blogs, their author's blogs": (
        '{ blog(id: "%(blog_id)s") { title author { blogs(first: %(n)s) { edges { node { author {'
        " blogs(first: 2) { " + EDGES_TITLE + " } } } } } } } }",
        3,
    ),
}


@pytest.fixture
def library(db: Any) -> dict[str, Any]:
    """AUTHORS authors with BLOGS_EACH blogs each, published in a known order: author00's first blog oldest."""
    authors = [Author.objects.create(username=f"author{a:02}", bio=f"bio {a}") for a in range(AUTHORS)]
    blogs = Blog.objects.bulk_create(
        Blog(author=author, title=f"{author.username} #{b}", content=f"text {b}", published_at=_at(a * BLOGS_EACH + b))
        for b in range(BLOGS_EACH)
        for a, author in enumerate(authors)
    )
    return {"authors": authors, "blogs": blogs}


def _at(minute: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)


def run(client: Any, query: str, variables: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    with CaptureQueriesContext(connection) as queries:
        result = post_graphql(client, query, variables)
    return result, [query["sql"] for query in queries.captured_queries]


def test_runs_on_the_configured_database(db):
    assert connection.vendor == os.environ.get("READS_DATABASE_VENDOR", connection.vendor)


@pytest.mark.parametrize("shape", SHAPES)
def test_statements_do_not_grow_with_the_page(client, library, settings, shape):
    settings.GRAPHQL_MAX_DEPTH = 16  # as deep as the shapes nest; the cost limit still applies
    template, bound = SHAPES[shape]
    ids = {
        "author_id": to_global_id("Author", library["authors"][2].pk),
        "blog_id": to_global_id("Blog", library["blogs"][-1].pk),
    }
    counts = {}
    for n in (3, 12):
        result, statements = run(client, template % {"n": n, **ids})
        assert_no_errors(result)
        assert _edges(result["data"]) >= n, "the page must be full for the count to mean anything"
        counts[n] = len(statements)
        assert len(statements) <= bound, "\n".join(statements)
    assert counts[3] == counts[12], counts


def _edges(data: Any) -> int:
    """How many edges the response holds, at any depth."""
    if isinstance(data, dict):
        return len(data.get("edges") or ()) + sum(_edges(value) for value in data.values())
    if isinstance(data, list):
        return sum(_edges(item) for item in data)
    return 0


def test_a_list_of_titles_reads_no_content_nor_author_secrets(client, library):
    result, statements = run(
        client, "{ authors(first: 5) { edges { node { username blogs(first: 3) { edges { node { title } } } } } } }"
    )
    assert_no_errors(result)
    sql = "\n".join(statements).lower()
    assert "content" not in sql and "password" not in sql and "email" not in sql, sql
    result, statements = run(client, "{ blogs(first: 5) { edges { node { title author { username } } } } }")
    assert_no_errors(result)
    sql = "\n".join(statements).lower()
    assert "content" not in sql and "password" not in sql and "bio" not in sql, sql


def test_fields_outside_the_plan_still_resolve_without_a_query_per_row(client, library):
    """Reading content, bio and the publication time through every level costs no extra statement."""
    query = (
        "{ blogs(first: 10) { edges { node { id content publishedAt author { id bio username blogs(first: 2) {"
        " edges { node { content publishedAt author { bio } } } } } } } } }"
    )
    result, statements = run(client, query)
    data = assert_no_errors(result)
    assert len(statements) == 2, statements
    node = data["blogs"]["edges"][0]["node"]
    assert node["content"] and node["author"]["bio"].startswith("bio ")
    assert node["author"]["blogs"]["edges"][0]["node"]["author"]["bio"] == node["author"]["bio"]


def test_the_viewer_s_blogs_are_bounded_too(client, library):
    from api import services

    token = services.token_create(author=library["authors"][3]).raw
    query = (
        "{ viewer { blogs(first: %s) { edges { node { title author { blogs(first: 2) { edges { node { title } } } } } }"
        " } } }"
    )
    counts = []
    for n in (2, 6):
        with CaptureQueriesContext(connection) as queries:
            result = post_graphql(client, query % n, token=token)
        assert len(assert_no_errors(result)["viewer"]["blogs"]["edges"]) == n
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1], counts


def test_a_mutation_s_response_does_not_grow_with_its_nested_page(client, library):
    """createBlog answers from the blog it wrote: its author's page costs one statement at any size."""
    from api import services

    token = services.token_create(author=library["authors"][5]).raw
    mutation = (
        'mutation { createBlog(input: {title: "new", content: "text"}) { blog { title author { username'
        " blogs(first: %s) { edges { node { title author { username } } } } } } } }"
    )
    counts = []
    for n in (2, 6):
        with CaptureQueriesContext(connection) as queries:
            result = post_graphql(client, mutation % n, token=token)
        edges = assert_no_errors(result)["createBlog"]["blog"]["author"]["blogs"]["edges"]
        assert len(edges) == n and edges[0]["node"]["title"] == "new"
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1], counts


# -- Relay pagination, nested and at the root, against the specification's algorithm --------------


def reference(rows: list[str], first=None, last=None, after=None, before=None) -> dict[str, Any]:
    """Relay's ApplyCursorsToEdges, then first, then last (cursors are offsets in `rows`)."""
    start = 0 if after is None else after + 1
    stop = len(rows) if before is None else min(before, len(rows))
    edges = list(range(start, max(start, stop)))
    has_next = has_previous = False
    if first is not None:
        has_next = len(edges) > first
        edges = edges[:first]
    if last is not None:
        has_previous = len(edges) > last
        edges = edges[len(edges) - last :] if last else []
    return {"titles": [rows[i] for i in edges], "hasNextPage": has_next, "hasPreviousPage": has_previous}


def cursor(offset: int) -> str:
    return base64.b64encode(f"arrayconnection:{offset}".encode()).decode()


WINDOWS = [
    {"first": 2},
    {"first": 0},
    {"last": 2},
    {"last": 0},
    {"first": 10},
    {"last": 10},
    {"first": 2, "after": 1},
    {"first": 2, "after": 4},
    {"first": 2, "after": 5},
    {"first": 2, "after": 40},
    {"last": 2, "before": 4},
    {"last": 2, "before": 1},
    {"last": 2, "before": 0},
    {"last": 3, "after": 2},
    {"first": 3, "before": 2},
    {"first": 5, "after": 0, "before": 4},
    {"last": 5, "after": 0, "before": 4},
    {"first": 3, "last": 2},
    {"first": 3, "last": 2, "after": 1},
    {"first": 2, "after": 3, "before": 3},
    {"first": 2, "after": 3, "before": 2},
    {"last": 2, "after": 4, "before": 1},
    {"after": 2, "before": 5},
]

PAGE_QUERY = (
    """query Page($first: Int, $last: Int, $after: String, $before: String, $author: String) {
  blogs(author: $author, first: $first, last: $last, after: $after, before: $before) {
    edges { cursor node { title } } PAGE_INFO
  }
  authors(first: 20) { edges { node { username
    blogs(first: $first, last: $last, after: $after, before: $before) { edges { cursor node { title } } PAGE_INFO }
  } } }
}"""
).replace("PAGE_INFO", PAGE_INFO)


@pytest.mark.parametrize("window", WINDOWS, ids=[",".join(f"{k}={v}" for k, v in w.items()) for w in WINDOWS])
def test_nested_and_root_pages_follow_the_relay_algorithm(client, library, settings, window):
    settings.GRAPHQL_MAX_COST = 100_000  # pages without first/last are counted at the 100-row cap
    variables = {key: cursor(value) if key in ("after", "before") else value for key, value in window.items()}
    data = assert_no_errors(post_graphql(client, PAGE_QUERY, {**variables, "author": "author04"}))
    per_author = {edge["node"]["username"]: edge["node"]["blogs"] for edge in data["authors"]["edges"]}
    assert len(per_author) == AUTHORS
    for author, connection_data in [("author04", data["blogs"]), *per_author.items()]:
        rows = [f"{author} #{b}" for b in reversed(range(BLOGS_EACH))]  # newest first
        expected = reference(rows, **window)
        edges = connection_data["edges"]
        assert [edge["node"]["title"] for edge in edges] == expected["titles"], (author, window)
        info = connection_data["pageInfo"]
        assert info["hasNextPage"] is expected["hasNextPage"], (author, window, info)
        assert info["hasPreviousPage"] is expected["hasPreviousPage"], (author, window, info)
        offsets = [rows.index(edge["node"]["title"]) for edge in edges]
        assert [edge["cursor"] for edge in edges] == [cursor(offset) for offset in offsets]
        assert info["startCursor"] == (edges[0]["cursor"] if edges else None)
        assert info["endCursor"] == (edges[-1]["cursor"] if edges else None)


def test_walking_a_nested_connection_with_its_cursors_visits_every_blog_once(client, library):
    query = """query Walk($after: String) { author(username: "author07") {
      blogs(first: 4, after: $after) { edges { node { title } } pageInfo { hasNextPage endCursor } } } }"""
    seen, after = [], None
    while True:
        page = assert_no_errors(post_graphql(client, query, {"after": after}))["author"]["blogs"]
        seen += [edge["node"]["title"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"author07 #{b}" for b in reversed(range(BLOGS_EACH))]


NOT_CURSORS = {
    "not base64": "not a cursor!",
    "base64 of something else": base64.b64encode(b"hello").decode(),
    "negative offset": cursor(-1),
    "offset with a sign": base64.b64encode(b"arrayconnection:+3").decode(),
    "huge offset": cursor(10**30),
    "another type's prefix": base64.b64encode(b"xrrayconnection:3").decode(),
    "a publication cursor": publication_cursor(3),
    "a global id": to_global_id("Blog", 3),
}


@pytest.mark.parametrize("argument", ["after", "before"])
@pytest.mark.parametrize("value", NOT_CURSORS.values(), ids=list(NOT_CURSORS))
def test_a_cursor_the_api_never_gave_is_bad_user_input(client, library, argument, value):
    page = f"(first: 2, {argument}: $c) {{ edges {{ node {{ title }} }} }}"
    for query in (
        f"query Q($c: String) {{ blogs{page} }}",
        f"query Q($c: String) {{ authors(first: 2) {{ edges {{ node {{ blogs{page} }} }} }} }}",
    ):
        with CaptureQueriesContext(connection) as queries:
            result = post_graphql(client, query, {"c": value})
        assert result.get("data") is None, result
        [error] = result["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["extensions"]["argument"] == argument
        assert f"'{argument}' on 'blogs' is not a cursor of this connection" in error["message"]
        assert not queries.captured_queries, "refused before anything runs"


def test_the_resolver_refuses_a_forged_cursor_even_without_the_request_checks(library):
    """Executed directly (no HTTP checks), the nested field itself reports the error, at its path."""
    from core.schema import root_schema

    result = root_schema().execute(
        '{ authors(first: 2) { edges { node { username blogs(first: 1, after: "bm9wZQ==") { edges { cursor } } } } } }'
    )
    assert result.errors and all("'after' on 'blogs' is not a cursor" in error.message for error in result.errors)
    assert [error.path for error in result.errors] == [
        ["authors", "edges", 0, "node", "blogs"],
        ["authors", "edges", 1, "node", "blogs"],
    ]


async def test_the_hub_renders_a_published_blog_without_the_database():
    """No django_db mark: any query raises. The publication carries all a subscription selects."""
    from api import validation

    query = "subscription { blogPublished { cursor blog { id title content publishedAt author { id username bio } } } }"
    prepared = validation.check(query).prepared
    assert prepared is not None and prepared.document is not None
    cohort = Cohort("key", prepared.document, None, {}, None, frozenset({ChangeKind.CREATED}))
    publication = Publication(
        seq=1,
        kind=ChangeKind.CREATED,
        blog_id=1,
        author="ada",
        changed_at=datetime(2026, 11, 28, tzinfo=UTC),
        blog=BlogData(
            id=1,
            title="t",
            content="c",
            published_at=datetime(2026, 11, 28, tzinfo=UTC),
            author=AuthorData(id=1, username="ada", bio="b"),
        ),
    )
    body = json.loads((await cohort.render(publication)).payload_json)
    assert "errors" not in body, body
    assert body["data"]["blogPublished"]["blog"]["author"] == {
        "id": to_global_id("Author", 1),
        "username": "ada",
        "bio": "b",
    }


@pytest.mark.django_db(transaction=True)
def test_the_hub_pages_a_published_blog_s_author_s_blogs(library):
    """A subscription that asks for the author's blogs still gets them (read for its one author, in
    the thread the hub runs connection fields in), paged like any connection."""
    import asyncio

    from api import validation

    author = library["authors"][6]
    for n in (2, 5):
        query = (
            "subscription { blogPublished { blog { title author { blogs(first: N) { edges { node { title author"
            " { username } } } pageInfo { hasNextPage } } } } } }"
        ).replace("first: N", f"first: {n}")
        prepared = validation.check(query).prepared
        assert prepared is not None and prepared.document is not None
        cohort = Cohort("key", prepared.document, None, {}, None, frozenset({ChangeKind.CREATED}))
        publication = Publication(
            seq=1,
            kind=ChangeKind.CREATED,
            blog_id=1,
            author=author.username,
            changed_at=datetime(2026, 11, 28, tzinfo=UTC),
            blog=BlogData(
                id=1,
                title="t",
                content="c",
                published_at=datetime(2026, 11, 28, tzinfo=UTC),
                author=AuthorData(id=author.pk, username=author.username, bio=""),
            ),
        )
        body = json.loads(asyncio.run(cohort.render(publication)).payload_json)
        assert "errors" not in body, body
        page = body["data"]["blogPublished"]["blog"]["author"]["blogs"]
        newest_first = [f"{author.username} #{b}" for b in reversed(range(BLOGS_EACH))]
        assert [edge["node"]["title"] for edge in page["edges"]] == newest_first[:n]
        assert {edge["node"]["author"]["username"] for edge in page["edges"]} == {author.username}
        assert page["pageInfo"]["hasNextPage"] is True
