"""The publication log: numbering each change to a blog in its transaction, and reading them back."""

import functools
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field
from django.utils import timezone

from api.errors import BadUserInput
from api.models import Blog
from notifications.models import Publication as PublicationRow
from notifications.models import PublicationCounter
from notifications.publishing.publication import AuthorData, BlogData, ChangeKind, Publication, seq_from_cursor


@functools.cache
def _recorded(vendor: str) -> "tuple[tuple[Field[Any, Any], ...], str]":
    """What publication_record writes besides the number, and their quoted columns, in order
    (once per database vendor: its quoting)."""
    names = ("kind", "blog", "blog_pk", "author_username", "title", "content", "published_at", "created_at")
    fields, columns = [], []
    for name in names:
        field = PublicationRow._meta.get_field(name)
        assert isinstance(field, Field) and field.column
        fields.append(field)
        columns.append(connection.ops.quote_name(field.column))
    return tuple(fields), ", ".join(columns)


def publication_record(blog: Blog, kind: ChangeKind = ChangeKind.CREATED) -> PublicationRow:
    """Number one change to `blog`; the counter's row lock is held until our commit.

    Every other publisher waits on that lock from our UPDATE to our COMMIT, so the round trips
    in between are the write ceiling (docs/scaling.md). On PostgreSQL one statement both takes
    the number and records the publication; elsewhere (SQLite, which has no UPDATE in a WITH)
    one UPDATE ... RETURNING, then the INSERT. No savepoint inside the caller's transaction.
    Both are written out rather than left to Model.save(), which compiles its INSERT anew on
    every call, on the path of every mutation.

    A creation or an edit records the blog's text as it is now; a deletion records only the
    tombstone (the blog's earlier entries went with its row).
    """
    counter = connection.ops.quote_name(PublicationCounter._meta.db_table)
    table = connection.ops.quote_name(PublicationRow._meta.db_table)
    deleted = kind == ChangeKind.DELETED
    row = PublicationRow(
        kind=kind,
        blog=None if deleted else blog,
        blog_pk=blog.pk,
        author_username=blog.author.username,
        title="" if deleted else blog.title,
        content="" if deleted else blog.content,
        published_at=None if deleted else blog.published_at,
        created_at=timezone.now(),
    )
    fields, columns = _recorded(connection.vendor)
    values = [field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields]
    placeholders = ", ".join(["%s"] * len(values))
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH n AS (UPDATE {counter} SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq) "
                f"INSERT INTO {table} (seq, {columns}) SELECT last_seq, {placeholders} FROM n RETURNING id, seq",
                values,
            )
        else:
            cursor.execute(f"UPDATE {counter} SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq")
            taken = cursor.fetchone()
            if taken is not None:
                cursor.execute(
                    f"INSERT INTO {table} (seq, {columns}) VALUES (%s, {placeholders}) RETURNING id, seq",
                    [taken[0], *values],
                )
        numbered = cursor.fetchone()
        if numbered is None:
            raise PublicationCounter.DoesNotExist("The publication counter row is missing: run migrations.")
        row.id, row.seq = numbered
        return row


def publication_of(row: PublicationRow) -> Publication:
    """Plain data, read once at broadcast time, so delivery never touches the database.

    The blog's text is the row's (as that change left it); its author's id and bio are read
    through the blog, which a creation's or an edit's row always has.
    """
    blog = None
    if row.kind != ChangeKind.DELETED:
        assert row.blog is not None and row.published_at is not None
        author = row.blog.author
        blog = BlogData(
            id=row.blog_pk,
            title=row.title,
            content=row.content,
            published_at=row.published_at,
            author=AuthorData(id=author.pk, username=author.username, bio=author.bio),
        )
    return Publication(
        seq=row.seq,
        kind=ChangeKind(row.kind),
        blog_id=row.blog_pk,
        author=row.author_username,
        changed_at=row.created_at,
        blog=blog,
    )


def last_published_seq() -> int:
    """The newest sequence number committed so far (0 before the first publication)."""
    return PublicationCounter.objects.values_list("last_seq", flat=True).get(pk=1)


def resume_point(cursor: str) -> int:
    """The sequence number a resuming subscriber saw last; BadUserInput when it cannot resume from it."""
    refetch = "Refetch with the `blogs` query and subscribe without `after`."
    try:
        seq = seq_from_cursor(cursor)
    except ValueError:
        raise BadUserInput(f"'{cursor}' is not a blogPublished or blogChanged cursor. {refetch}") from None
    if seq > last_published_seq():
        raise BadUserInput(f"Unknown cursor '{cursor}'. {refetch}")
    cutoff = timezone.now() - timedelta(seconds=settings.PUBLICATION_RETENTION_SECONDS)
    newer_than_cutoff = PublicationRow.objects.filter(seq__gt=seq, created_at__lt=cutoff)
    if newer_than_cutoff.exists():
        raise BadUserInput(f"Cursor '{cursor}' is older than the replay window. {refetch}")
    return seq


def publications_between(
    after_seq: int, upto_seq: int | None = None, author_username: str | None = None, *, limit: int | None = None
) -> list[Publication]:
    """Publications with after_seq < seq <= upto_seq, oldest first, at most `limit`.

    A deleted blog's creation and edits are absent (they were deleted with it); its tombstone is there.
    """
    rows = PublicationRow.objects.select_related("blog__author").filter(seq__gt=after_seq).order_by("seq")
    if upto_seq is not None:
        rows = rows.filter(seq__lte=upto_seq)
    if author_username is not None:
        rows = rows.filter(author_username=author_username)
    if limit is not None:
        rows = rows[:limit]
    return [publication_of(row) for row in rows]


def deletions_after(after_seq: int) -> dict[int, int]:
    """{blog id: its tombstone's seq} for every deletion numbered after `after_seq`."""
    tombstones = PublicationRow.objects.filter(seq__gt=after_seq, kind=ChangeKind.DELETED)
    return dict(tombstones.values_list("blog_pk", "seq"))
