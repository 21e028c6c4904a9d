from datetime import UTC, datetime

import factory

from api.models import Author, Blog
from notifications.publishing.publication import AuthorData, BlogData, Publication

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


def publication(seq: int, author: str = "ada", *, title: str | None = None) -> Publication:
    """A publication as the hub receives it, without a database: blog `seq`, titled "blog <seq>"."""
    return Publication(
        seq=seq,
        blog=BlogData(
            id=seq,
            title=f"blog {seq}" if title is None else title,
            content="text",
            published_at=datetime(2026, 11, 28, tzinfo=UTC),
            author=AuthorData(id=1, username=author, bio=""),
        ),
    )
