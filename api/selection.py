"""What a GraphQL selection reads from the database, worked out before the first statement runs.

A root resolver turns its selection into a load plan (api/loads.py); the selectors
turn the plan into one queryset (api/selectors.py): the columns the selection reads (`only`), the
author joined when a blog's author is read, and every nested `blogs` connection prefetched for all
its parents at once, one statement per connection. The nested resolver then finds its page on its
parent under `page_attr(info.path)`.

A blog's author inside `Author.blogs` is that author itself (Django's prefetch sets it), so what
such a selection reads is merged into the enclosing author: however deep the nesting, every
level is one more statement on the same parents.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import graphene
from graphene_django.settings import graphene_settings
from graphql import FieldNode, GraphQLObjectType, get_named_type
from graphql.execution import get_argument_values
from graphql.execution.collect_fields import collect_fields  # not exported: tests/test_internals.py checks it

from api.errors import BadUserInput
from api.loads import AuthorLoad, BlogLoad, BlogsLoad
from api.pagination import Window

# GraphQL field -> model field read for it. Fields in neither map make the plan load every column
# (a new field is then correct at once, and never costs a query per row).
BLOG_COLUMNS = {"title": "title", "content": "content", "publishedAt": "published_at"}
AUTHOR_COLUMNS = {"username": "username", "bio": "bio"}
NO_COLUMN = {"id", "__typename"}  # the primary key is always read


def page_attr(path: Any) -> str:
    """The attribute a nested connection's page is prefetched to, from its response path without list indexes.

    Distinct per position in the document, so one author reached twice (an author's blogs' author)
    holds each page separately.
    """
    if hasattr(path, "as_list"):
        path = path.as_list()
    keys = ".".join(str(key) for key in path if not isinstance(key, int))
    return "page_" + hashlib.sha256(keys.encode()).hexdigest()[:16]


def blog_load(info: graphene.ResolveInfo) -> BlogLoad:
    """The plan for the blogs a root field returns (a Blog, a blog connection, or a Node that is a Blog)."""
    planner = _Planner(info)
    blog = _BlogPlan()
    for path, nodes in planner.objects(info.return_type, "Blog"):
        planner.blog(nodes, path, blog, parent=None)
    return blog.freeze()


def author_load(info: graphene.ResolveInfo) -> AuthorLoad:
    """The plan for the authors a root field returns (an Author, an author connection, or a Node that is one)."""
    planner = _Planner(info)
    author = _AuthorPlan()
    for path, nodes in planner.objects(info.return_type, "Author"):
        planner.author(nodes, path, author)
    return author.freeze()


@dataclass
class _AuthorPlan:
    columns: set[str] | None = field(default_factory=set)
    blogs: list[BlogsLoad] = field(default_factory=list)

    def freeze(self) -> AuthorLoad:
        return AuthorLoad(None if self.columns is None else frozenset(self.columns), tuple(self.blogs))


@dataclass
class _BlogPlan:
    columns: set[str] | None = field(default_factory=set)
    author: _AuthorPlan | None = None

    def freeze(self) -> BlogLoad:
        return BlogLoad(
            None if self.columns is None else frozenset(self.columns),
            None if self.author is None else self.author.freeze(),
        )


class _Planner:
    def __init__(self, info: graphene.ResolveInfo) -> None:
        self.schema = info.schema
        self.fragments = info.fragments
        self.variables = info.variable_values
        self.root_path = [key for key in info.path.as_list() if not isinstance(key, int)]
        self.field_nodes = info.field_nodes

    def sub_fields(self, type_name: str, nodes: Sequence[FieldNode]) -> dict[str, list[FieldNode]]:
        """Response key -> field nodes selected on `type_name` under `nodes` (fragments, @skip, @include applied)."""
        object_type = self.schema.get_type(type_name)
        assert isinstance(object_type, GraphQLObjectType)
        fields: dict[str, list[FieldNode]] = {}
        for node in nodes:
            if node.selection_set is not None:
                collected = collect_fields(self.schema, self.fragments, self.variables, object_type, node.selection_set)
                for key, key_nodes in collected.items():
                    fields.setdefault(key, []).extend(key_nodes)
        return fields

    def objects(self, return_type: Any, type_name: str) -> list[tuple[list[Any], list[FieldNode]]]:
        """(path, field nodes) of each place the root field's objects of `type_name` are selected."""
        named = get_named_type(return_type)
        if named.name == f"{type_name}Connection":
            return self.connection_nodes(named.name, type_name, list(self.field_nodes), self.root_path)
        return [(self.root_path, list(self.field_nodes))]

    def connection_nodes(
        self, connection: str, type_name: str, nodes: list[FieldNode], path: list[Any]
    ) -> list[tuple[list[Any], list[FieldNode]]]:
        found = []
        for edges_key, edges_nodes in self.sub_fields(connection, nodes).items():
            if edges_nodes[0].name.value != "edges":
                continue
            for node_key, node_nodes in self.sub_fields(f"{type_name}Edge", edges_nodes).items():
                if node_nodes[0].name.value == "node":
                    found.append(([*path, edges_key, node_key], node_nodes))
        return found

    def blog(self, nodes: list[FieldNode], path: list[Any], plan: _BlogPlan, parent: _AuthorPlan | None) -> None:
        """Add what `nodes` read of a blog to `plan`; with `parent`, the blog's author is that author."""
        for key, key_nodes in self.sub_fields("Blog", nodes).items():
            name = key_nodes[0].name.value
            if name == "author":
                if parent is None:
                    plan.author = plan.author or _AuthorPlan()
                self.author(key_nodes, [*path, key], parent or plan.author)  # type: ignore[arg-type]
            elif name in BLOG_COLUMNS:
                if plan.columns is not None:
                    plan.columns.add(BLOG_COLUMNS[name])
            elif name not in NO_COLUMN:
                plan.columns = None

    def author(self, nodes: list[FieldNode], path: list[Any], plan: _AuthorPlan) -> None:
        for key, key_nodes in self.sub_fields("Author", nodes).items():
            name = key_nodes[0].name.value
            if name == "blogs":
                self.blogs(key_nodes, [*path, key], plan)
            elif name in AUTHOR_COLUMNS:
                if plan.columns is not None:
                    plan.columns.add(AUTHOR_COLUMNS[name])
            elif name not in NO_COLUMN:
                plan.columns = None

    def blogs(self, nodes: list[FieldNode], path: list[Any], parent: _AuthorPlan) -> None:
        author_type = self.schema.get_type("Author")
        assert isinstance(author_type, GraphQLObjectType)
        arguments = get_argument_values(author_type.fields["blogs"], nodes[0], self.variables)
        try:
            window = Window.from_arguments(
                arguments, field="blogs", default_first=graphene_settings.RELAY_CONNECTION_MAX_LIMIT
            )
        except BadUserInput:
            return  # not prefetched: the field itself reports the error, with its path
        node = _BlogPlan()
        for node_path, node_nodes in self.connection_nodes("BlogConnection", "Blog", nodes, path):
            self.blog(node_nodes, node_path, node, parent=parent)
        parent.blogs.append(BlogsLoad(page_attr(path), window, node.freeze()))
