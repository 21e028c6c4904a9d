"""The `blogPublished` subscription: who hears about a new blog, and what they receive."""

import channels_graphql_ws
import graphene

from api.models import Author, Blog
from api.schema import BlogType
from notifications.publishing.log import last_published_seq
from notifications.publishing.publication import BlogData, Publication, cursor_for


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
    async def publish(
        publication: Publication, info: graphene.ResolveInfo, author: str | None = None, after: str | None = None
    ) -> "BlogPublished":
        return BlogPublished(cursor=publication.cursor, blog=blog_from(publication.blog))


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
