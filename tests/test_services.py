import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from api import selectors, services
from api.errors import NotAuthenticated
from api.models import ApiToken, Blog
from notifications.models import Publication
from tests.factories import PASSWORD, AuthorFactory, BlogFactory

pytestmark = pytest.mark.django_db


def test_author_create_hashes_password_and_keeps_bio():
    author = services.author_create(username="ada.l-1_x", password="long enough", bio="Analyst")
    assert author.check_password("long enough")
    assert author.password != "long enough"
    assert author.bio == "Analyst"


@pytest.mark.parametrize("username", ["ab", "has space", "semi;colon", "x" * 151, "ünï"])
def test_author_create_rejects_bad_usernames(username):
    with pytest.raises(ValidationError) as error:
        services.author_create(username=username, password="long enough")
    assert "username" in error.value.message_dict


def test_author_create_rejects_short_password():
    with pytest.raises(ValidationError) as error:
        services.author_create(username="shorty", password="1234567")
    assert "password" in error.value.message_dict


def test_author_create_rejects_duplicate_username():
    AuthorFactory.create(username="taken")
    with pytest.raises(ValidationError) as error:
        services.author_create(username="taken", password="long enough")
    assert error.value.message_dict["username"] == ["This username is already taken."]


def test_token_is_stored_only_as_a_hash_and_authenticates():
    author = AuthorFactory.create()
    raw = services.token_create(author=author).raw
    stored = ApiToken.objects.get(author=author)
    assert raw not in (stored.digest, stored.prefix)
    assert stored.digest == selectors.token_digest(raw)
    assert len(stored.digest) == 64
    assert selectors.author_by_token(raw) == author
    assert selectors.author_by_token(raw + "x") is None


def test_revoked_token_no_longer_authenticates():
    author = AuthorFactory.create()
    raw = services.token_create(author=author).raw
    ApiToken.objects.filter(author=author).update(revoked=True)
    assert selectors.author_by_token(raw) is None


def test_tokens_are_unique():
    author = AuthorFactory.create()
    assert len({services.token_create(author=author).raw for _ in range(20)}) == 20


def test_author_authenticate():
    author = AuthorFactory.create()
    assert services.author_authenticate(username=author.username, password=PASSWORD) == author
    with pytest.raises(NotAuthenticated):
        services.author_authenticate(username=author.username, password="wrong password")


def test_blog_create_needs_an_author():
    with pytest.raises(NotAuthenticated):
        services.blog_create(author=None, title="t", content="c")


@pytest.mark.parametrize(
    ("title", "content", "field"),
    [
        ("", "c", "title"),
        ("   ", "c", "title"),
        ("x" * 201, "c", "title"),
        ("t", "", "content"),
        ("t", "x" * 100_001, "content"),
    ],
)
def test_blog_create_validates_lengths(title, content, field):
    with pytest.raises(ValidationError) as error:
        services.blog_create(author=AuthorFactory.create(), title=title, content=content)
    assert field in error.value.message_dict
    assert not Blog.objects.exists()


def test_blog_create_accepts_the_limits():
    blog = services.blog_create(author=AuthorFactory.create(), title="x" * 200, content="y" * 100_000)
    assert Blog.objects.get(pk=blog.pk).title == "x" * 200


def test_blog_update_and_delete_are_for_the_author_only():
    blog = BlogFactory.create()
    other = AuthorFactory.create()
    with pytest.raises(PermissionDenied):
        services.blog_update(author=other, blog_id=blog.pk, title="Hijacked")
    with pytest.raises(PermissionDenied):
        services.blog_delete(author=other, blog_id=blog.pk)
    services.blog_update(author=blog.author, blog_id=blog.pk, title="Edited")
    assert Blog.objects.get(pk=blog.pk).title == "Edited"
    services.blog_delete(author=blog.author, blog_id=blog.pk)
    assert not Blog.objects.filter(pk=blog.pk).exists()


def test_every_change_gets_the_next_publication_number():
    first, second = BlogFactory.create(), BlogFactory.create()
    services.blog_update(author=first.author, blog_id=first.pk, title="Changed")
    assert list(Publication.objects.values_list("kind", "blog_id")) == [
        ("created", first.pk),
        ("created", second.pk),
        ("updated", first.pk),
    ]
    seqs = list(Publication.objects.values_list("seq", flat=True))
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
