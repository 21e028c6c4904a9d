from datetime import UTC, datetime

import factory

from api.models import Author, Blog
from notifications.publishing.publication import AuthorData, BlogData, ChangeKind, Publication

PASSWORD = "correct horse battery"


class AuthorFactory(factory.django.DjangoModelFactory[Author]):
    class Meta:
        model = Author
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"author{n}")
    bio = factory.Faker("sentence")
    password = factory.django.Password(PASSWORD)


class BlogFactory(factory.django.DjangoModelFactory[Blog]):
    class Meta:
        model = Blog

    author = factory.SubFactory(AuthorFactory)
    title = factory.Faker("sentence", nb_words=4)
    content = factory.Faker("paragraph")


def publication(
    seq: int,
    author: str = "ada",
    *,
    title: str | None = None,
    kind: ChangeKind = ChangeKind.CREATED,
    blog_id: int | None = None,
) -> Publication:
    """A publication as the hub receives it, without a database: a change to blog `blog_id` (default
    `seq`), titled "blog <seq>"; a deletion carries no blog."""
    blog_id = seq if blog_id is None else blog_id
    when = datetime(2026, 11, 28, tzinfo=UTC)
    blog = BlogData(
        id=blog_id,
        title=f"blog {seq}" if title is None else title,
        content=f"text of {title or f'blog {seq}'}",
        published_at=when,
        author=AuthorData(id=1, username=author, bio=""),
    )
    return Publication(
        seq=seq,
        kind=kind,
        blog_id=blog_id,
        author=author,
        changed_at=when,
        blog=None if kind == ChangeKind.DELETED else blog,
    )
