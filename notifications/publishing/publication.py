"""What one publication (one change to one blog) carries from the writer to every subscriber: a
frozen value, never a dict.

Built once from the committed rows (log.py), broadcast in its wire form (broadcast.py), read back
by each process's hub and rendered by GraphQL without touching the database. A new kind of change
is a new field or variant here, and every reader sees it through the type checker.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

CURSOR_PREFIX = "pub:"


def cursor_for(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def seq_from_cursor(cursor: str) -> int:
    """Inverse of cursor_for; ValueError for anything it did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise ValueError("malformed cursor") from error
    if not text.startswith(CURSOR_PREFIX) or not text[len(CURSOR_PREFIX) :].isdigit():
        raise ValueError("malformed cursor")
    return int(text[len(CURSOR_PREFIX) :])


class ChangeKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class AuthorData:
    id: int
    username: str
    bio: str


@dataclass(frozen=True, slots=True)
class BlogData:
    id: int
    title: str
    content: str
    published_at: datetime
    author: AuthorData


@dataclass(frozen=True, slots=True)
class Publication:
    """One numbered change to one blog. `seq` orders them (commit order); `cursor` is its public name.

    A deletion is a tombstone: `blog` is None (nothing of its text travels or is kept), and
    `blog_id` and `author` still say which blog it was and whose, for `author:` filters.
    """

    seq: int
    kind: ChangeKind
    blog_id: int
    # The author's username: what the `author` argument of a subscription filters on.
    author: str
    changed_at: datetime
    # The blog as this change left it; None for a deletion.
    blog: BlogData | None
    # The broadcaster's time.time() when it sent the publication; None when read from the log.
    announced_at: float | None = None
    cursor: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cursor", cursor_for(self.seq))
        if (self.blog is None) != (self.kind == ChangeKind.DELETED):
            raise ValueError(f"a {self.kind} publication {'needs' if self.blog is None else 'has no'} blog")

    def to_message(self) -> dict[str, Any]:
        """Plain data a channel layer carries (msgpack: no datetimes, no objects)."""
        blog = None
        if self.blog is not None:
            author = self.blog.author
            blog = {
                "id": self.blog.id,
                "title": self.blog.title,
                "content": self.blog.content,
                "published_at": self.blog.published_at.isoformat(),
                "author": {"id": author.id, "username": author.username, "bio": author.bio},
            }
        return {
            "seq": self.seq,
            "kind": self.kind.value,
            "blog_id": self.blog_id,
            "author": self.author,
            "changed_at": self.changed_at.isoformat(),
            "announced_at": self.announced_at,
            "blog": blog,
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Publication:
        """The inverse of to_message; KeyError, TypeError or ValueError for anything else."""
        return cls(
            seq=int(data["seq"]),
            kind=ChangeKind(data["kind"]),
            blog_id=int(data["blog_id"]),
            author=str(data["author"]),
            changed_at=datetime.fromisoformat(data["changed_at"]),
            announced_at=None if data.get("announced_at") is None else float(data["announced_at"]),
            blog=None if data["blog"] is None else _blog_from(data["blog"]),
        )


def _blog_from(blog: dict[str, Any]) -> BlogData:
    author = blog["author"]
    return BlogData(
        id=int(blog["id"]),
        title=str(blog["title"]),
        content=str(blog["content"]),
        published_at=datetime.fromisoformat(blog["published_at"]),
        author=AuthorData(id=int(author["id"]), username=str(author["username"]), bio=str(author["bio"])),
    )
