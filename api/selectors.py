"""Reads. Resolvers call these instead of building querysets themselves."""

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from api.models import ApiToken, Author, Blog
from api.signals import DEACTIVATED, DELETED, EXPIRED, REVOKED, SIGNED_OUT

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
    """The credential a token signs in with, or why it does not (UNKNOWN, REVOKED, EXPIRED, DEACTIVATED)."""
    digest = token_digest(raw_token)
    token = ApiToken.objects.select_related("author").filter(digest=digest).first()
    if token is None or not hmac.compare_digest(token.digest, digest):
        return UNKNOWN
    if token.revoked:
        return REVOKED
    if token.expires_at <= timezone.now():
        return EXPIRED
    if not token.author.is_active:
        return DEACTIVATED
    return Credential(token.author, token_id=token.pk, expires_at=token.expires_at)


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


def blog_list(*, author_username: str | None = None) -> QuerySet[Blog]:
    """Newest first."""
    blogs = Blog.objects.select_related("author")
    if author_username is not None:
        blogs = blogs.filter(author__username=author_username)
    return blogs.order_by("-published_at", "-id")


def blog_get(*, blog_id: int) -> Blog:
    return Blog.objects.select_related("author").get(pk=blog_id)


def author_list() -> QuerySet[Author]:
    return Author.objects.filter(is_active=True).order_by("username")


def author_get(*, username: str) -> Author:
    return Author.objects.get(username=username, is_active=True)
