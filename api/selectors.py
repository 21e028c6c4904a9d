"""Reads. Resolvers call these instead of building querysets themselves.

Reads that serve a GraphQL selection take its load plan (api/loads.py): the columns it reads,
and its nested `blogs` connections prefetched for every parent in one statement each (a window
function pages each author's blogs). Without a plan they load whole rows, as a plain ORM read does.
"""

import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Field, Model, Prefetch, QuerySet, Window, prefetch_related_objects
from django.db.models.functions import RowNumber
from django.db.models.options import Options
from django.utils import timezone

from api.loads import AuthorLoad, BlogLoad, BlogsLoad
from api.models import ApiToken, Author, Blog
from api.pagination import Window as PageWindow
from api.signals import DEACTIVATED, DELETED, EXPIRED, REVOKED, SIGNED_OUT

M = TypeVar("M", bound=Model)

BLOG_ORDER = ("-published_at", "-id")

UNKNOWN = "unknown"  # a token that was never issued (or whose author is gone)


@dataclass(frozen=True)
class Credential:
    """Who signed a request or connection in, and with what: a bearer token or a browser session."""

    author: Author
    token_id: int | None = None
    expires_at: datetime | None = None
    session_key: str | None = None


def token_digest(raw_token: str) -> str:
    # A token carries 256 bits of randomness, so one fast hash is enough (unlike passwords).
    return hashlib.sha256(raw_token.encode()).hexdigest()


def credential_by_token(raw_token: str) -> Credential | str:
    """The credential a token signs in with, or why it does not (UNKNOWN, REVOKED, EXPIRED, DEACTIVATED).

    Every signed-in request asks this first, so it is one statement the ORM does not compile
    each time: a raw query of the author's row with the token's columns alongside
    (`Manager.raw`, which still converts the author's fields as a queryset would).
    """
    digest = token_digest(raw_token)
    found = next(iter(Author.objects.raw(_credential_sql(connection.vendor), [digest])), None)
    if found is None or not hmac.compare_digest(found.token_digest, digest):
        return UNKNOWN
    if found.token_revoked:
        return REVOKED
    expires_at = found.token_expires_at
    if timezone.is_naive(expires_at):  # SQLite hands extra columns back as stored: naive, in the database's zone
        expires_at = timezone.make_aware(expires_at, connection.timezone)
    if expires_at <= timezone.now():
        return EXPIRED
    if not found.is_active:
        return DEACTIVATED
    return Credential(found, token_id=found.token_id, expires_at=expires_at)


@functools.cache
def _credential_sql(vendor: str) -> str:
    """The statement, written once per database vendor (its quoting)."""
    quote = connection.ops.quote_name
    token, author = ApiToken._meta, Author._meta

    def column(meta: "Options[Any]", name: str) -> str:
        field = meta.get_field(name)
        assert isinstance(field, Field) and field.column
        return quote(field.column)

    def token_column(name: str) -> str:
        return "t." + column(token, name)

    return (
        f"SELECT a.*, {token_column('id')} AS token_id, {token_column('digest')} AS token_digest, "
        f"{token_column('revoked')} AS token_revoked, {token_column('expires_at')} AS token_expires_at "
        f"FROM {quote(token.db_table)} t INNER JOIN {quote(author.db_table)} a "
        f"ON a.{column(author, 'id')} = {token_column('author')} WHERE {token_column('digest')} = %s"
    )


def author_by_token(raw_token: str) -> Author | None:
    """The active author owning a valid (unrevoked, unexpired) token, or None."""
    credential = credential_by_token(raw_token)
    return credential.author if isinstance(credential, Credential) else None


def credential_problem(credential: Credential) -> str | None:
    """Why a credential that signed in no longer holds (REVOKED, EXPIRED, DEACTIVATED, DELETED,
    SIGNED_OUT), or None while it does. One query for a token, two reads for a session."""
    if credential.token_id is not None:
        row = ApiToken.objects.filter(pk=credential.token_id).values_list("revoked", "expires_at", "author__is_active")
        found = row.first()
        if found is None:
            return REVOKED  # the token was deleted (its author's deletion says DELETED to connections first)
        revoked, expires_at, active = found
        if revoked:
            return REVOKED
        if expires_at <= timezone.now():
            return EXPIRED
        return None if active else DEACTIVATED
    active = Author.objects.filter(pk=credential.author.pk).values_list("is_active", flat=True).first()
    if active is None:
        return DELETED
    if not active:
        return DEACTIVATED
    if credential.session_key is not None:
        store = import_module(settings.SESSION_ENGINE).SessionStore()
        if not store.exists(credential.session_key):
            return SIGNED_OUT
    return None


def credential_problems(credentials: list[Credential]) -> dict[Credential, str]:
    """credential_problem for many at once: one query for all the tokens, one for the session
    authors, and one session-store read per browser session. Only the credentials that ended."""
    found: dict[Credential, str] = {}
    now = timezone.now()
    tokens = [credential for credential in credentials if credential.token_id is not None]
    sessions = [credential for credential in credentials if credential.token_id is None]
    rows = {
        pk: (revoked, expires_at, active)
        for pk, revoked, expires_at, active in ApiToken.objects.filter(
            pk__in={credential.token_id for credential in tokens}
        ).values_list("pk", "revoked", "expires_at", "author__is_active")
    }
    for credential in tokens:
        row = rows.get(credential.token_id or 0)
        if row is None or row[0]:
            found[credential] = REVOKED
        elif row[1] <= now:
            found[credential] = EXPIRED
        elif not row[2]:
            found[credential] = DEACTIVATED
    if sessions:
        active = dict(
            Author.objects.filter(pk__in={credential.author.pk for credential in sessions}).values_list(
                "pk", "is_active"
            )
        )
        store = import_module(settings.SESSION_ENGINE).SessionStore()
        for credential in sessions:
            is_active = active.get(credential.author.pk)
            if is_active is None:
                found[credential] = DELETED
            elif not is_active:
                found[credential] = DEACTIVATED
            elif credential.session_key is not None and not store.exists(credential.session_key):
                found[credential] = SIGNED_OUT
    return found


def blog_list(*, author_username: str | None = None, load: BlogLoad | None = None) -> QuerySet[Blog]:
    """Newest first."""
    blogs = Blog.objects.all()
    if author_username is not None:
        blogs = blogs.filter(author__username=author_username)
    return _blogs_loading(blogs, load).order_by(*BLOG_ORDER)


def blog_get(*, blog_id: int, load: BlogLoad | None = None) -> Blog:
    return _blogs_loading(Blog.objects.all(), load).get(pk=blog_id)


def author_list(*, load: AuthorLoad | None = None) -> QuerySet[Author]:
    return _authors_loading(Author.objects.filter(is_active=True), load).order_by("username")


def author_get(*, username: str, load: AuthorLoad | None = None) -> Author:
    return _authors_loading(Author.objects.all(), load).get(username=username, is_active=True)


def author_node(*, author_id: int, load: AuthorLoad | None = None) -> Author:
    """An author by database id, as Relay's `node` finds it."""
    return _authors_loading(Author.objects.all(), load).get(pk=author_id)


def author_load_into(*, author: Author, load: AuthorLoad) -> None:
    """Prefetch a selection's nested connections onto an author already in memory (the viewer)."""
    prefetch_related_objects([author], *(_blog_pages(blogs, "blogs") for blogs in load.blogs))


def paginate(queryset: QuerySet[M], window: PageWindow) -> list[tuple[int, M]]:
    """The rows `window` needs from an ordered queryset, with their offsets: one statement, and a
    COUNT first only when the page is counted from the end (`last` without `before`)."""
    if window.empty:
        return []
    low, stop = window.bounds(queryset.count() if window.needs_count else None)
    if stop <= low:
        return []
    return [(low + index, row) for index, row in enumerate(queryset[low:stop])]


def author_blogs(*, author: Author, window: PageWindow, attr: str) -> list[tuple[int, Blog]]:
    """The rows of one author's `blogs` page: prefetched under `attr` by the root read, else read now."""
    prefetched: list[Blog] | None = getattr(author, attr, None)
    if prefetched is not None:
        return [(blog.page_row - 1, blog) for blog in prefetched]  # type: ignore[attr-defined]
    rows = paginate(Blog.objects.filter(author_id=author.pk).order_by(*BLOG_ORDER), window)
    for _, blog in rows:
        blog.author = author  # the parent is known: reading `author` costs no query per row
    return rows


def _blogs_loading(blogs: QuerySet[Blog], load: BlogLoad | None) -> QuerySet[Blog]:
    if load is None:
        return blogs.select_related("author")
    columns = None if load.columns is None else ["author", *load.columns]
    if load.author is not None:
        blogs = blogs.select_related("author")
        if columns is not None and load.author.columns is not None:
            columns += [f"author__{name}" for name in ("id", *sorted(load.author.columns))]
        blogs = blogs.prefetch_related(*(_blog_pages(pages, "author__blogs") for pages in load.author.blogs))
    return blogs if columns is None else blogs.only(*columns)


def _authors_loading(authors: QuerySet[Author], load: AuthorLoad | None) -> QuerySet[Author]:
    if load is None:
        return authors
    if load.columns is not None:
        authors = authors.only("id", *sorted(load.columns))
    return authors.prefetch_related(*(_blog_pages(pages, "blogs") for pages in load.blogs))


def _blog_pages(pages: BlogsLoad, lookup: str) -> Prefetch:
    """Every parent's page of blogs in one statement: rows numbered per author by a window function,
    filtered to what `pages.window` needs (Django adds `author IN (parents)`)."""
    blogs = Blog.objects.all()
    if pages.node.columns is not None:
        blogs = blogs.only("author", *sorted(pages.node.columns))
    return Prefetch(lookup, queryset=_paged_per_author(blogs, pages.window), to_attr=pages.attr)


def _paged_per_author(blogs: QuerySet[Blog], window: PageWindow) -> QuerySet[Blog]:
    if window.empty:
        return blogs.none()
    order = [F("published_at").desc(), F("id").desc()]
    blogs = blogs.annotate(page_row=Window(RowNumber(), partition_by=[F("author_id")], order_by=order))
    low = window.start
    stop = window.stop
    if window.needs_count:
        blogs = blogs.annotate(page_rows=Window(Count("id"), partition_by=[F("author_id")]))
        blogs = blogs.filter(page_row__gt=F("page_rows") - window.tail)
    elif window.tail is not None and stop is not None:
        low = max(low, stop - window.tail)
    blogs = blogs.filter(page_row__gt=low)
    if stop is not None:
        blogs = blogs.filter(page_row__lte=stop)
    return blogs.order_by(*order)
