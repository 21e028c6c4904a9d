"""The `blogPublished` subscription: who hears about a new blog, and what they receive."""

import hashlib
from datetime import datetime
from typing import Any

import channels_graphql_ws
import graphene

from api.models import Author, Blog
from api.schema import BlogType
from notifications import telemetry

EVERYONE = "all"


def author_group(username: str) -> str:
    # Hashed so any username makes a valid, bounded channel-layer group name.
    return "author." + hashlib.sha256(username.encode()).hexdigest()[:32]


def blog_from_payload(data: dict[str, Any]) -> Blog:
    """An unsaved Blog built from broadcast data: GraphQL resolves it without a query."""
    author = Author(id=data["author"]["id"], username=data["author"]["username"], bio=data["author"]["bio"])
    return Blog(
        id=data["id"],
        title=data["title"],
        content=data["content"],
        published_at=datetime.fromisoformat(data["published_at"]),
        author=author,
    )


class BlogPublished(channels_graphql_ws.Subscription):
    """A blog was published. `cursor` increases in publish order."""

    cursor = graphene.String(required=True)
    blog = graphene.Field(BlogType, required=True)

    class Arguments:
        author = graphene.String(description="Only blogs by this username.")

    @staticmethod
    def subscribe(root: None, info: graphene.ResolveInfo, author: str | None = None) -> list[str]:
        # Filtering by group means subscribers of other authors are never woken.
        return [author_group(author) if author is not None else EVERYONE]

    @staticmethod
    async def publish(payload: dict[str, Any], info: graphene.ResolveInfo, author: str | None = None) -> "BlogPublished":
        telemetry.event_delivered(payload)
        return BlogPublished(cursor=payload["cursor"], blog=blog_from_payload(payload["blog"]))

    @classmethod
    def announce(cls, payload: dict[str, Any]) -> None:
        """Send one publication to everyone and to its author's followers; the payload shape stays private here."""
        cls.broadcast(group=EVERYONE, payload=payload)
        cls.broadcast(group=author_group(payload["blog"]["author"]["username"]), payload=payload)


class Subscription(graphene.ObjectType):
    blog_published = BlogPublished.Field()
