"""GraphQL types, the Query mixin and the mutations of the blog API.

Resolvers and mutations only translate: input -> service/selector call -> payload.
"""

from typing import Any

import graphene
from django.contrib.auth.models import AnonymousUser
from graphene import relay
from graphene_django import DjangoConnectionField, DjangoObjectType
from graphql_relay import from_global_id

from api import ratelimit, selection, selectors, services
from api.auth import refused_token_message
from api.errors import BadUserInput, NotAuthenticated
from api.models import Author, Blog
from api.pagination import Window, cursor_for, page_of
from api.selectors import Credential
from core.client_ip import context_ip


class ConnectionField(DjangoConnectionField):
    """A Relay connection paged by api/pagination.py: resolvers get the checked `window` and return
    the rows it needs with their offsets (selectors.paginate, or a page prefetched for all parents).

    graphene-django's own resolution counts every connection and cannot take a page read for many
    parents at once; its field still supplies the type checks and the page-size cap. Its extra
    `offset` argument is dropped.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.args.pop("offset", None)

    @classmethod
    def connection_resolver(
        cls,
        resolver: Any,
        connection: Any,
        default_manager: Any,
        queryset_resolver: Any,
        max_limit: int,
        enforce_first_or_last: bool,
        root: Any,
        info: graphene.ResolveInfo,
        **args: Any,
    ) -> Any:
        window = Window.from_arguments(args, field=info.field_name, default_first=max_limit)
        for name in ("first", "last"):
            size = getattr(window, name)
            if size is not None and size > max_limit:
                raise BadUserInput(f"'{name}' on '{info.field_name}' must be between 0 and {max_limit}, got {size}.")
        rest = {name: value for name, value in args.items() if name not in RELAY_ARGUMENTS}
        page = page_of(window, resolver(root, info, window=window, **rest))
        edges = [connection.Edge(node=row, cursor=cursor_for(offset)) for offset, row in page.rows]
        return connection(
            edges=edges,
            page_info=relay.PageInfo(
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
                has_previous_page=page.has_previous,
                has_next_page=page.has_next,
            ),
        )


RELAY_ARGUMENTS = ("first", "last", "after", "before")


class Node(relay.Node):
    """Relay's Node, with a malformed global ID reported as the caller's mistake."""

    class Meta:
        name = "Node"
        description = "An object with a global ID."

    @classmethod
    def get_node_from_global_id(cls, info: graphene.ResolveInfo, global_id: str, only_type: Any = None) -> Any:
        try:
            type_name, _ = cls.resolve_global_id(info, global_id)
        except Exception as error:
            raise BadUserInput(f"'{global_id}' is not a valid ID.") from error
        if type_name not in ("Author", "Blog"):
            raise BadUserInput(f"'{global_id}' is not a valid ID.")
        return super().get_node_from_global_id(info, global_id, only_type)


class AuthorType(DjangoObjectType):
    blogs = ConnectionField(lambda: BlogType, required=True)

    class Meta:
        model = Author
        name = "Author"
        fields = ("id", "username", "bio", "blogs")
        interfaces = (Node,)

    @staticmethod
    def resolve_blogs(author: Author, info: graphene.ResolveInfo, window: Window) -> list[tuple[int, Blog]]:
        return selectors.author_blogs(author=author, window=window, attr=selection.page_attr(info.path))

    @classmethod
    def get_node(cls, info: graphene.ResolveInfo, id: Any) -> Author | None:
        try:
            return selectors.author_node(author_id=int(id), load=selection.author_load(info))
        except (Author.DoesNotExist, ValueError):
            return None


class BlogType(DjangoObjectType):
    published_at = graphene.DateTime(required=True)

    class Meta:
        model = Blog
        name = "Blog"
        fields = ("id", "title", "content", "author", "published_at")
        interfaces = (Node,)

    @classmethod
    def get_node(cls, info: graphene.ResolveInfo, id: Any) -> Blog | None:
        try:
            return selectors.blog_get(blog_id=int(id), load=selection.blog_load(info))
        except (Blog.DoesNotExist, ValueError):
            return None


def viewer_of(info: graphene.ResolveInfo) -> Author | None:
    """The authenticated author of this request or websocket, or None."""
    context = info.context
    user = getattr(context, "user", None)
    if user is None and hasattr(context, "channels_scope"):
        user = context.channels_scope.get("user")
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return None
    return user


def require_viewer(info: graphene.ResolveInfo) -> Author:
    author = viewer_of(info)
    if author is None:
        refused = getattr(info.context, "token_invalid", False)
        if refused:
            raise NotAuthenticated(refused_token_message(refused))
        raise NotAuthenticated("Sign in first: send 'Authorization: Bearer <token>' (createToken gives one).")
    return author


def credential_of(info: graphene.ResolveInfo) -> Credential | None:
    """What this request or websocket signed in with: its bearer token, or its browser session."""
    context = info.context
    scope = getattr(context, "channels_scope", None)
    credential = scope.get("credential") if scope is not None else getattr(context, "credential", None)
    if credential is not None:
        return credential
    author = viewer_of(info)
    session = scope.get("session") if scope is not None else getattr(context, "session", None)
    key = getattr(session, "session_key", None)
    return Credential(author, session_key=key) if author is not None and key else None


def blog_pk(global_id: str) -> int:
    """The database id inside a Blog global ID; anything else is the caller's mistake."""
    try:
        type_name, raw_pk = from_global_id(global_id)
        if type_name != "Blog":
            raise ValueError
        return int(raw_pk)
    except Exception as error:
        raise BadUserInput(f"'{global_id}' is not a Blog ID.") from error


class Query(graphene.ObjectType):
    node = Node.Field()
    blogs = ConnectionField(BlogType, required=True, author=graphene.String(description="Only this author's blogs."))
    blog = graphene.Field(BlogType, id=graphene.ID(required=True))
    authors = ConnectionField(AuthorType, required=True)
    author = graphene.Field(AuthorType, username=graphene.String(required=True))
    viewer = graphene.Field(AuthorType, description="The authenticated author, or null.")

    @staticmethod
    def resolve_blogs(
        root: None, info: graphene.ResolveInfo, window: Window, author: str | None = None
    ) -> list[tuple[int, Blog]]:
        blogs = selectors.blog_list(author_username=author, load=selection.blog_load(info))
        return selectors.paginate(blogs, window)

    @staticmethod
    def resolve_blog(root: None, info: graphene.ResolveInfo, id: str) -> Blog:
        return selectors.blog_get(blog_id=blog_pk(id), load=selection.blog_load(info))

    @staticmethod
    def resolve_authors(root: None, info: graphene.ResolveInfo, window: Window) -> list[tuple[int, Author]]:
        return selectors.paginate(selectors.author_list(load=selection.author_load(info)), window)

    @staticmethod
    def resolve_author(root: None, info: graphene.ResolveInfo, username: str) -> Author:
        return selectors.author_get(username=username, load=selection.author_load(info))

    @staticmethod
    def resolve_viewer(root: None, info: graphene.ResolveInfo) -> Author | None:
        author = viewer_of(info)
        if author is not None:
            selectors.author_load_into(author=author, load=selection.author_load(info))
        return author


class ThrottledMutation(relay.ClientIDMutation):
    """Every mutation counts against rate limits shared by all instances (api/ratelimit.py):
    per signed-in author (all their tokens together, taken from the shared count a few at a time),
    and for sign-up and log-in per client IP."""

    class Meta:
        abstract = True

    @classmethod
    def mutate(cls, root: None, info: graphene.ResolveInfo, input: dict[str, Any]) -> Any:
        if info.field_name in ("createAuthor", "createToken"):
            ratelimit.hit(info.field_name, context_ip(info.context))
        author = viewer_of(info)
        if author is not None:
            ratelimit.hit("mutation", f"author:{author.pk}", reserve=True)
        return super().mutate(root, info, input)


class CreateAuthor(ThrottledMutation):
    class Input:
        username = graphene.String(required=True)
        password = graphene.String(required=True)
        bio = graphene.String(default_value="")

    author = graphene.Field(AuthorType, required=True)
    token = graphene.String(required=True, description="Shown once; send it as 'Authorization: Bearer <token>'.")
    expires_at = graphene.DateTime(required=True, description="When the token stops signing in.")

    @classmethod
    def mutate_and_get_payload(
        cls, root: None, info: graphene.ResolveInfo, username: str, password: str, bio: str = "", **_: Any
    ) -> "CreateAuthor":
        author = services.author_create(username=username, password=password, bio=bio)
        issued = services.token_create(author=author)
        return CreateAuthor(author=author, token=issued.raw, expires_at=issued.expires_at)


class CreateToken(ThrottledMutation):
    class Input:
        username = graphene.String(required=True)
        password = graphene.String(required=True)

    token = graphene.String(required=True, description="Shown once; send it as 'Authorization: Bearer <token>'.")
    expires_at = graphene.DateTime(required=True, description="When the token stops signing in.")

    @classmethod
    def mutate_and_get_payload(
        cls, root: None, info: graphene.ResolveInfo, username: str, password: str, **_: Any
    ) -> "CreateToken":
        author = services.author_authenticate(username=username, password=password)
        issued = services.token_create(author=author)
        return CreateToken(token=issued.raw, expires_at=issued.expires_at)


class SignOut(ThrottledMutation):
    """Revoke the bearer token this request or websocket signed in with; its sockets close (4403)."""

    signed_out = graphene.Boolean(required=True)

    @classmethod
    def mutate_and_get_payload(cls, root: None, info: graphene.ResolveInfo, **_: Any) -> "SignOut":
        require_viewer(info)
        services.sign_out(credential=credential_of(info))
        return SignOut(signed_out=True)


class SignOutEverywhere(ThrottledMutation):
    """Revoke every token of the signed-in author and close all their sockets, on every instance."""

    revoked_tokens = graphene.Int(required=True, description="How many tokens were still valid and are revoked now.")

    @classmethod
    def mutate_and_get_payload(cls, root: None, info: graphene.ResolveInfo, **_: Any) -> "SignOutEverywhere":
        return SignOutEverywhere(revoked_tokens=services.sign_out_everywhere(author=require_viewer(info)))


class CreateBlog(ThrottledMutation):
    class Input:
        title = graphene.String(required=True)
        content = graphene.String(required=True)

    blog = graphene.Field(BlogType, required=True)

    @classmethod
    def mutate_and_get_payload(
        cls, root: None, info: graphene.ResolveInfo, title: str, content: str, **_: Any
    ) -> "CreateBlog":
        return CreateBlog(blog=services.blog_create(author=require_viewer(info), title=title, content=content))


class UpdateBlog(ThrottledMutation):
    class Input:
        id = graphene.ID(required=True)
        title = graphene.String()
        content = graphene.String()

    blog = graphene.Field(BlogType, required=True)

    @classmethod
    def mutate_and_get_payload(
        cls,
        root: None,
        info: graphene.ResolveInfo,
        id: str,
        title: str | None = None,
        content: str | None = None,
        **_: Any,
    ) -> "UpdateBlog":
        blog = services.blog_update(author=require_viewer(info), blog_id=blog_pk(id), title=title, content=content)
        return UpdateBlog(blog=blog)


class DeleteBlog(ThrottledMutation):
    class Input:
        id = graphene.ID(required=True)

    deleted_id = graphene.ID(required=True)

    @classmethod
    def mutate_and_get_payload(cls, root: None, info: graphene.ResolveInfo, id: str, **_: Any) -> "DeleteBlog":
        services.blog_delete(author=require_viewer(info), blog_id=blog_pk(id))
        return DeleteBlog(deleted_id=id)


class Mutation(graphene.ObjectType):
    create_author = CreateAuthor.Field()
    create_token = CreateToken.Field()
    sign_out = SignOut.Field()
    sign_out_everywhere = SignOutEverywhere.Field()
    create_blog = CreateBlog.Field()
    update_blog = UpdateBlog.Field()
    delete_blog = DeleteBlog.Field()
