"""The same GraphQL operations the benchmark sends the project, written the way strawberry's and
strawberry-django's documentation shows: a strawberry-django type, an async mutation that writes
through the ORM and broadcasts with the channel layer's `group_send`, and a subscription that
listens with `listen_to_channel` (strawberry's Channels integration)."""

from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
import strawberry_django
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from peer_site import models

GROUP = "blogs"
MESSAGE = "blog.published"


@strawberry_django.type(models.Author)
class AuthorType:
    id: strawberry.auto
    username: strawberry.auto
    bio: strawberry.auto


@strawberry.type
class BlogType:
    id: strawberry.ID
    title: str
    content: str
    published_at: datetime
    author: AuthorType


@strawberry.type
class BlogPublished:
    cursor: str
    blog: BlogType


@strawberry.input
class CreateBlogInput:
    title: str
    content: str


@strawberry.input
class CreateAuthorInput:
    username: str
    password: str
    bio: str = ""


@strawberry.type
class CreateBlogPayload:
    blog: BlogType


@strawberry.type
class CreateAuthorPayload:
    author: AuthorType
    token: str


def _blog_type(blog: models.Blog) -> BlogType:
    return BlogType(
        id=strawberry.ID(str(blog.pk)),
        title=blog.title,
        content=blog.content,
        published_at=blog.published_at,
        author=blog.author,  # type: ignore[arg-type]
    )


@transaction.atomic
def _create_blog(title: str, content: str) -> models.Blog:
    author = models.Author.objects.order_by("pk").first()
    assert author is not None, "createAuthor first"
    return models.Blog.objects.create(author=author, title=title, content=content)


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "peer"


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_author(self, input: CreateAuthorInput) -> CreateAuthorPayload:
        author = await sync_to_async(models.Author.objects.create)(username=input.username, bio=input.bio)
        return CreateAuthorPayload(author=author, token="peer")  # type: ignore[arg-type]

    @strawberry.mutation
    async def create_blog(self, input: CreateBlogInput) -> CreateBlogPayload:
        blog = await sync_to_async(_create_blog)(input.title, input.content)
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(
            GROUP,
            {
                "type": MESSAGE,
                "id": blog.pk,
                "title": blog.title,
                "content": blog.content,
                "published_at": blog.published_at.isoformat(),
                "author": {"id": blog.author.pk, "username": blog.author.username, "bio": blog.author.bio},
            },
        )
        return CreateBlogPayload(blog=_blog_type(blog))


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def blog_published(
        self, info: strawberry.Info, author: str | None = None
    ) -> AsyncGenerator[BlogPublished, None]:
        ws = info.context["ws"]
        async with ws.listen_to_channel(MESSAGE, groups=[GROUP]) as messages:
            async for message in messages:
                if author is not None and message["author"]["username"] != author:
                    continue
                blog = BlogType(
                    id=strawberry.ID(str(message["id"])),
                    title=message["title"],
                    content=message["content"],
                    published_at=datetime.fromisoformat(message["published_at"]),
                    author=models.Author(**message["author"]),  # type: ignore[arg-type]
                )
                yield BlogPublished(cursor=str(message["id"]), blog=blog)


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
