import asyncio

import pytest
from graphql_relay import to_global_id

from notifications.hub.hub import get_hub
from tests.factories import AuthorFactory, BlogFactory
from tests.graphql_http import post_graphql
from tests.live import assert_no_errors, error_codes

pytestmark = pytest.mark.django_db

BLOGS = """
query Blogs($first: Int, $after: String, $last: Int, $before: String, $author: String) {
  blogs(first: $first, after: $after, last: $last, before: $before, author: $author) {
    edges { cursor node { id title author { username } } }
    pageInfo { hasNextPage hasPreviousPage endCursor startCursor }
  }
}
"""
BLOG = "query Blog($id: ID!) { blog(id: $id) { id title content publishedAt author { username bio } } }"
NODE = "query Node($id: ID!) { node(id: $id) { id __typename ... on Blog { title } ... on Author { username } } }"
AUTHORS = "query { authors(first: 10) { edges { node { username blogs(first: 5) { edges { node { title } } } } } } }"
AUTHOR = (
    "query Author($username: String!) {"
    " author(username: $username) { username bio blogs(last: 1) { edges { node { title } } } } }"
)
VIEWER = "query { viewer { username } }"


def titles(data):
    return [edge["node"]["title"] for edge in data["blogs"]["edges"]]


def test_blogs_newest_first_with_relay_pagination(client):
    author = AuthorFactory.create()
    for i in range(5):
        BlogFactory.create(author=author, title=f"blog {i}")
    page = assert_no_errors(post_graphql(client, BLOGS, {"first": 2}))
    assert titles(page) == ["blog 4", "blog 3"]
    assert page["blogs"]["pageInfo"]["hasNextPage"] is True
    rest = assert_no_errors(post_graphql(client, BLOGS, {"first": 10, "after": page["blogs"]["pageInfo"]["endCursor"]}))
    assert titles(rest) == ["blog 2", "blog 1", "blog 0"]
    assert titles(assert_no_errors(post_graphql(client, BLOGS, {"last": 2}))) == ["blog 1", "blog 0"]


def test_blogs_by_author(client):
    alice, bob = AuthorFactory.create(username="alice"), AuthorFactory.create(username="bob")
    BlogFactory.create(author=alice, title="by alice")
    BlogFactory.create(author=bob, title="by bob")
    assert titles(assert_no_errors(post_graphql(client, BLOGS, {"author": "alice"}))) == ["by alice"]
    assert titles(assert_no_errors(post_graphql(client, BLOGS, {"author": "nobody"}))) == []


def test_blog_by_id_and_missing_blog(client):
    blog = BlogFactory.create(title="Findable")
    data = assert_no_errors(post_graphql(client, BLOG, {"id": to_global_id("Blog", blog.pk)}))
    assert data["blog"]["title"] == "Findable"
    assert data["blog"]["author"]["username"] == blog.author.username
    assert data["blog"]["publishedAt"].startswith(str(blog.published_at.year))
    assert error_codes(post_graphql(client, BLOG, {"id": to_global_id("Blog", 999999)})) == ["NOT_FOUND"]


def test_node_resolves_both_types(client):
    blog = BlogFactory.create(title="Noded")
    assert (
        assert_no_errors(post_graphql(client, NODE, {"id": to_global_id("Blog", blog.pk)}))["node"]["title"] == "Noded"
    )
    author_node = assert_no_errors(post_graphql(client, NODE, {"id": to_global_id("Author", blog.author.pk)}))["node"]
    assert author_node == {
        "id": to_global_id("Author", blog.author.pk),
        "__typename": "Author",
        "username": blog.author.username,
    }
    assert error_codes(post_graphql(client, NODE, {"id": "garbage"})) == ["BAD_USER_INPUT"]


def test_authors_and_author(client):
    author = AuthorFactory.create(username="carol", bio="Writes")
    BlogFactory.create(author=author, title="old")
    BlogFactory.create(author=author, title="new")
    data = assert_no_errors(post_graphql(client, AUTHORS))
    assert data["authors"]["edges"][0]["node"]["blogs"]["edges"][0]["node"]["title"] == "new"
    one = assert_no_errors(post_graphql(client, AUTHOR, {"username": "carol"}))["author"]
    assert one["bio"] == "Writes"
    assert one["blogs"]["edges"][0]["node"]["title"] == "old"
    assert error_codes(post_graphql(client, AUTHOR, {"username": "nobody"})) == ["NOT_FOUND"]


def test_viewer_is_null_when_anonymous(client):
    assert assert_no_errors(post_graphql(client, VIEWER)) == {"viewer": None}


def test_invalid_documents_have_codes(client):
    assert error_codes(post_graphql(client, "query { blogs { nope } }")) == ["GRAPHQL_VALIDATION_FAILED"]
    assert error_codes(post_graphql(client, "query {")) == ["GRAPHQL_PARSE_FAILED"]


def test_graphiql_is_served_to_browsers(client):
    response = client.get("/graphql/", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert b"graphiql" in response.content.lower()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio(loop_scope="function")  # a loop of its own: a hub that no other test started
async def test_health_endpoints(async_client):
    """/readyz on one event loop, as under Daphne: 503 'starting' until this process's hub delivers, then ok."""
    assert (await async_client.get("/healthz")).json() == {"status": "ok"}
    first = await async_client.get("/readyz")
    assert first.status_code == 503 and first.json()["problems"] == {"subscriptions": "starting"}
    for _ in range(100):
        ready = await async_client.get("/readyz")
        if ready.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert ready.json() == {"status": "ok"}
    await get_hub().close()
