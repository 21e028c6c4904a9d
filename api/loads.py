"""Load plans: what one GraphQL selection reads, as the selectors take it (api/selection.py builds them)."""

from dataclasses import dataclass

from api.pagination import Window


@dataclass(frozen=True)
class BlogsLoad:
    """One nested `Author.blogs` connection: where its pages land, which rows, and what they read."""

    attr: str
    window: Window
    node: "BlogLoad"


@dataclass(frozen=True)
class AuthorLoad:
    columns: frozenset[str] | None  # None: every column
    blogs: tuple[BlogsLoad, ...] = ()


@dataclass(frozen=True)
class BlogLoad:
    columns: frozenset[str] | None  # None: every column
    author: AuthorLoad | None = None  # None: the author is not read
