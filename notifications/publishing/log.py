"""The publication log: numbering a publication in its transaction, and reading publications back."""

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from api.errors import BadUserInput
from api.models import Blog
from notifications.models import Publication as PublicationRow
from notifications.models import PublicationCounter
from notifications.publishing.publication import AuthorData, BlogData, Publication, seq_from_cursor


def publication_record(blog: Blog) -> PublicationRow:
    """Number the blog's publication; the counter's row lock is held until our commit.

    Every other publisher waits on that lock from our UPDATE to our COMMIT, so the round trips
    in between are the write ceiling (docs/scaling.md). On PostgreSQL one statement both takes
    the number and records the publication; elsewhere (SQLite, which has no UPDATE in a WITH)
    one UPDATE ... RETURNING, then the INSERT. No savepoint inside the caller's transaction.
    """
    counter = connection.ops.quote_name(PublicationCounter._meta.db_table)
    author_username = blog.author.username
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            created_at = timezone.now()
            table = connection.ops.quote_name(PublicationRow._meta.db_table)
            cursor.execute(
                f"WITH n AS (UPDATE {counter} SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq) "
                f"INSERT INTO {table} (seq, blog_id, author_username, created_at) "
                "SELECT last_seq, %s, %s, %s FROM n RETURNING id, seq",
                [blog.pk, author_username, created_at],
            )
            row = cursor.fetchone()
            if row is None:
                raise PublicationCounter.DoesNotExist("The publication counter row is missing: run migrations.")
            return PublicationRow(
                id=row[0], seq=row[1], blog=blog, author_username=author_username, created_at=created_at
            )
        cursor.execute(f"UPDATE {counter} SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq")
        row = cursor.fetchone()
        if row is None:
            raise PublicationCounter.DoesNotExist("The publication counter row is missing: run migrations.")
        return PublicationRow.objects.create(seq=row[0], blog=blog, author_username=author_username)


def publication_of(row: PublicationRow) -> Publication:
    """Plain data, read once at broadcast time, so delivery never touches the database."""
    blog = row.blog
    author = blog.author
    return Publication(
        seq=row.seq,
        blog=BlogData(
            id=blog.pk,
            title=blog.title,
            content=blog.content,
            published_at=blog.published_at,
            author=AuthorData(id=author.pk, username=author.username, bio=author.bio),
        ),
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
        raise BadUserInput(f"'{cursor}' is not a blogPublished cursor. {refetch}") from None
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
    """Publications with after_seq < seq <= upto_seq, oldest first, at most `limit`; deleted blogs are absent."""
    rows = PublicationRow.objects.select_related("blog__author").filter(seq__gt=after_seq).order_by("seq")
    if upto_seq is not None:
        rows = rows.filter(seq__lte=upto_seq)
    if author_username is not None:
        rows = rows.filter(author_username=author_username)
    if limit is not None:
        rows = rows[:limit]
    return [publication_of(row) for row in rows]
