import pytest
from graphql_relay import to_global_id

from api import services
from api.models import ApiToken, Author, Blog
from tests.factories import PASSWORD, AuthorFactory, BlogFactory
from tests.graphql_http import post_graphql
from tests.live import CREATE_BLOG, CREATE_TOKEN, SIGN_UP, assert_no_errors, error_codes

pytestmark = pytest.mark.django_db

UPDATE_BLOG = """
mutation Edit($id: ID!, $title: String, $content: String) {
  updateBlog(input: {id: $id, title: $title, content: $content}) { blog { id title content } }
}
"""
DELETE_BLOG = "mutation Delete($id: ID!) { deleteBlog(input: {id: $id}) { deletedId } }"
VIEWER = "query { viewer { username bio } }"


@pytest.fixture
def author_token():
    author = AuthorFactory.create()
    return author, services.token_create(author=author).raw


def test_sign_up_returns_author_and_a_working_token(client):
    data = assert_no_errors(
        post_graphql(client, SIGN_UP, {"username": "newbie", "password": "long enough", "bio": "Hello"})
    )
    token = data["createAuthor"]["token"]
    assert data["createAuthor"]["author"]["username"] == "newbie"
    assert assert_no_errors(post_graphql(client, VIEWER, token=token))["viewer"] == {
        "username": "newbie",
        "bio": "Hello",
    }
    assert not ApiToken.objects.filter(digest=token).exists()


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"username": "ab", "password": "long enough"}, "username"),
        ({"username": "bad name!", "password": "long enough"}, "username"),
        ({"username": "okname", "password": "short"}, "password"),
    ],
)
def test_sign_up_validation_errors_are_bad_user_input(client, variables, field):
    result = post_graphql(client, SIGN_UP, variables)
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert field in result["errors"][0]["extensions"]["fields"]
    assert field in result["errors"][0]["message"]
    assert not Author.objects.exists()


def test_duplicate_username_is_bad_user_input(client):
    AuthorFactory.create(username="taken")
    result = post_graphql(client, SIGN_UP, {"username": "taken", "password": "long enough"})
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert "already taken" in result["errors"][0]["message"]


def test_log_in_gives_a_new_token_and_wrong_password_is_unauthenticated(client):
    author = AuthorFactory.create()
    logged_in = assert_no_errors(
        post_graphql(client, CREATE_TOKEN, {"username": author.username, "password": PASSWORD})
    )
    token = logged_in["createToken"]["token"]
    assert assert_no_errors(post_graphql(client, VIEWER, token=token))["viewer"]["username"] == author.username
    result = post_graphql(client, CREATE_TOKEN, {"username": author.username, "password": "not the password"})
    assert error_codes(result) == ["UNAUTHENTICATED"]


def test_create_blog_belongs_to_the_token_owner(client, author_token):
    author, token = author_token
    data = assert_no_errors(post_graphql(client, CREATE_BLOG, {"title": "First", "content": "Body"}, token))
    blog = data["createBlog"]["blog"]
    assert blog["author"]["username"] == author.username
    assert blog["title"] == "First"
    assert Blog.objects.get().author == author


def test_create_blog_without_token_is_unauthenticated(client):
    result = post_graphql(client, CREATE_BLOG, {"title": "t", "content": "c"})
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert "Bearer" in result["errors"][0]["message"]
    assert not Blog.objects.exists()


def test_create_blog_with_a_revoked_token_says_so(client, author_token):
    _, token = author_token
    ApiToken.objects.update(revoked=True)
    result = post_graphql(client, CREATE_BLOG, {"title": "t", "content": "c"}, token)
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert "revoked" in result["errors"][0]["message"]


@pytest.mark.parametrize(("title", "content"), [("", "c"), ("x" * 201, "c"), ("t", ""), ("t", "x" * 100_001)])
def test_create_blog_validation(client, author_token, title, content):
    result = post_graphql(client, CREATE_BLOG, {"title": title, "content": content}, author_token[1])
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert not Blog.objects.exists()


def test_update_blog_by_its_author(client, author_token):
    author, token = author_token
    blog = BlogFactory.create(author=author)
    data = assert_no_errors(
        post_graphql(client, UPDATE_BLOG, {"id": to_global_id("Blog", blog.pk), "content": "New body"}, token)
    )
    assert data["updateBlog"]["blog"]["content"] == "New body"
    assert data["updateBlog"]["blog"]["title"] == blog.title


def test_another_author_cannot_update_or_delete(client, author_token):
    _, token = author_token
    blog = BlogFactory.create()
    global_id = to_global_id("Blog", blog.pk)
    assert error_codes(post_graphql(client, UPDATE_BLOG, {"id": global_id, "title": "Mine now"}, token)) == [
        "FORBIDDEN"
    ]
    assert error_codes(post_graphql(client, DELETE_BLOG, {"id": global_id}, token)) == ["FORBIDDEN"]
    assert Blog.objects.get(pk=blog.pk).title == blog.title


def test_delete_blog(client, author_token):
    author, token = author_token
    blog = BlogFactory.create(author=author)
    global_id = to_global_id("Blog", blog.pk)
    assert (
        assert_no_errors(post_graphql(client, DELETE_BLOG, {"id": global_id}, token))["deleteBlog"]["deletedId"]
        == global_id
    )
    assert not Blog.objects.exists()
    assert error_codes(post_graphql(client, DELETE_BLOG, {"id": global_id}, token)) == ["NOT_FOUND"]


@pytest.mark.parametrize("bad_id", ["not-base64!", to_global_id("Author", 1), to_global_id("Blog", "abc")])
def test_malformed_blog_ids_are_bad_user_input(client, author_token, bad_id):
    assert error_codes(post_graphql(client, DELETE_BLOG, {"id": bad_id}, author_token[1])) == ["BAD_USER_INPUT"]


def test_unexpected_errors_are_masked(client, author_token, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret database detail")

    monkeypatch.setattr(services, "blog_create", explode)
    result = post_graphql(client, CREATE_BLOG, {"title": "t", "content": "c"}, author_token[1])
    assert error_codes(result) == ["INTERNAL_SERVER_ERROR"]
    assert "secret" not in str(result)
