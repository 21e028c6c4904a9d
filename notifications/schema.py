"""The `blogPublished` subscription: who hears about a new blog, and what they receive."""

import time
from datetime import datetime
from typing import Any

import channels_graphql_ws
import graphene

from api.models import Author, Blog
from api.schema import BlogType
from notifications.publishing.log import cursor_for, last_published_seq

# Each process's hub joins this one group and filters by author locally, so an event crosses
# Redis once per process and subscribers of other authors are never woken.
HUB_GROUP = "hub"


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
        after = graphene.String(
            description="The cursor of the last event you saw: first replays what you missed, in order, then goes live."
        )

    @staticmethod
    async def publish(
        payload: dict[str, Any], info: graphene.ResolveInfo, author: str | None = None, after: str | None = None
    ) -> "BlogPublished":
        return BlogPublished(cursor=payload["cursor"], blog=blog_from_payload(payload["blog"]))

    @classmethod
    def announce(cls, payload: dict[str, Any]) -> None:
        """Send one publication to every process's hub; the payload shape stays private here."""
        cls.broadcast(group=HUB_GROUP, payload={**payload, "announced_at": time.time()})

    @classmethod
    def hub_group(cls) -> str:
        """The channel-layer group every process's hub joins (as the library names it)."""
        return cls._group_name(HUB_GROUP)


class Subscription(graphene.ObjectType):
    blog_published = BlogPublished.Field()


class Query(graphene.ObjectType):
    latest_cursor = graphene.String(
        required=True,
        description=(
            "The cursor of the newest publication. Read it with your first `blogs` query, then subscribe with "
            "`blogPublished(after: latestCursor)`: everything published since is delivered, with no gap."
        ),
    )

    @staticmethod
    def resolve_latest_cursor(root: None, info: graphene.ResolveInfo) -> str:
        return cursor_for(last_published_seq())
