"""The subscriptions: `blogPublished` (new blogs) and `blogChanged` (every creation, edit and deletion).

Both read one publication sequence, so a cursor of either resumes either.
"""

import channels_graphql_ws
import graphene
from graphql_relay import to_global_id

from api.models import Author, Blog
from api.schema import BlogType
from notifications.publishing.log import last_published_seq
from notifications.publishing.publication import BlogData, ChangeKind, Publication, cursor_for


def blog_from(data: BlogData) -> Blog:
    """An unsaved Blog built from the publication's data: GraphQL resolves it without a query."""
    author = Author(id=data.author.id, username=data.author.username, bio=data.author.bio)
    return Blog(id=data.id, title=data.title, content=data.content, published_at=data.published_at, author=author)


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
    def publish(
        publication: Publication, info: graphene.ResolveInfo, author: str | None = None, after: str | None = None
    ) -> "BlogPublished":
        # Sync, as every field of an event is: the hub renders each event in one pass, without
        # yielding the event loop halfway through a fan-out (hub/cohorts.py).
        assert publication.blog is not None  # the hub sends blogPublished creations only
        return BlogPublished(cursor=publication.cursor, blog=blog_from(publication.blog))


class BlogChangeKind(graphene.Enum):
    """What happened to the blog."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class BlogChange(graphene.ObjectType):
    """One change to one blog. `cursor` increases in commit order, in the sequence `blogPublished` uses."""

    cursor = graphene.String(required=True)
    kind = graphene.Field(BlogChangeKind, required=True)
    blog_id = graphene.ID(required=True, description="The blog's global ID, also for DELETED.")
    blog = graphene.Field(BlogType, description="The blog as this change left it; null for DELETED.")
    changed_at = graphene.DateTime(required=True)


def change_from(publication: Publication) -> BlogChange:
    return BlogChange(
        cursor=publication.cursor,
        kind=publication.kind.value,
        blog_id=to_global_id("Blog", publication.blog_id),
        blog=None if publication.blog is None else blog_from(publication.blog),
        changed_at=publication.changed_at,
    )


# The kinds of change each subscription field announces (the hub routes by them).
FIELD_KINDS: dict[str, frozenset[ChangeKind]] = {
    "blogPublished": frozenset({ChangeKind.CREATED}),
    "blogChanged": frozenset(ChangeKind),
}


class Subscription(graphene.ObjectType):
    blog_published = BlogPublished.Field()
    blog_changed = graphene.Field(
        BlogChange,
        required=True,
        author=graphene.String(description="Only changes to this author's blogs, deletions included."),
        after=graphene.String(
            description=(
                "The cursor of the last event you saw (of either subscription): first replays what you missed, "
                "in order, then goes live."
            )
        ),
        description=(
            "Every creation, edit and deletion of a blog, once each, in commit order. A deleted blog's "
            "earlier changes are not replayed: only its DELETED."
        ),
    )

    @staticmethod
    def resolve_blog_changed(
        publication: Publication, info: graphene.ResolveInfo, author: str | None = None, after: str | None = None
    ) -> BlogChange:
        return change_from(publication)


class Query(graphene.ObjectType):
    latest_cursor = graphene.String(
        required=True,
        description=(
            "The cursor of the newest publication. Read it with your first `blogs` query, then subscribe with "
            "`blogPublished(after: latestCursor)` or `blogChanged(after: latestCursor)`: everything published "
            "(or changed) since is delivered, with no gap."
        ),
    )

    @staticmethod
    def resolve_latest_cursor(root: None, info: graphene.ResolveInfo) -> str:
        return cursor_for(last_published_seq())
