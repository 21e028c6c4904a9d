"""Writes. Each service is one transaction; publication to subscribers follows the commit."""

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from api import ratelimit
from api.errors import NotAuthenticated
from api.models import ApiToken, Author, Blog
from api.selectors import Credential, token_digest
from api.signals import REVOKED, SIGNED_OUT, AccessEnded, announce_access_ended

TOKEN_PREFIX = "blog_"


def _require_author(author: Author | None) -> Author:
    if author is None or not author.is_authenticated:
        raise NotAuthenticated("Sign in first: send 'Authorization: Bearer <token>' (createToken gives one).")
    return author


@transaction.atomic
def author_create(*, username: str, password: str, bio: str = "") -> Author:
    author = Author(username=username, bio=bio)
    try:
        validate_password(password, author)
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from error
    author.set_password(password)
    author.full_clean(exclude=["password"])
    try:
        with transaction.atomic():
            author.save()
    except IntegrityError as error:  # a concurrent sign-up won the race for this username
        raise ValidationError({"username": ["This username is already taken."]}) from error
    return author


@dataclass(frozen=True)
class IssuedToken:
    raw: str  # shown once: only its digest is kept
    expires_at: datetime


@transaction.atomic
def token_create(*, author: Author) -> IssuedToken:
    """A new token for `author`, valid for API_TOKEN_TTL_SECONDS."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(author=author, digest=token_digest(raw), prefix=raw[: len(TOKEN_PREFIX) + 4])
    return IssuedToken(raw=raw, expires_at=token.expires_at)


@transaction.atomic
def tokens_revoke(*, token_ids: Iterable[int], reason: str = REVOKED) -> int:
    """Revoke tokens; every connection signed in with one is closed after the commit, on every instance."""
    tokens = ApiToken.objects.filter(pk__in=list(token_ids), revoked=False)
    return tokens.revoke(reason=reason)


@transaction.atomic
def authors_access_end(*, author_ids: Iterable[int], reason: str = REVOKED) -> int:
    """Revoke every token of these authors and close all their connections (browser sessions' too)."""
    ids = tuple(author_ids)
    count = ApiToken.objects.filter(author_id__in=ids, revoked=False).revoke(reason=reason)
    announce_access_ended(AccessEnded(reason, author_ids=ids))
    return count


def sign_out(*, credential: Credential | None) -> None:
    """Revoke the token this request or connection signed in with."""
    if credential is None or credential.token_id is None:
        raise NotAuthenticated(
            "signOut ends the bearer token it is sent with: send 'Authorization: Bearer <token>' "
            "(a browser session signs out by logging out)."
        )
    tokens_revoke(token_ids=[credential.token_id], reason=SIGNED_OUT)


def sign_out_everywhere(*, author: Author | None) -> int:
    """Revoke all of the author's tokens and close every connection they have, on every instance."""
    return authors_access_end(author_ids=[_require_author(author).pk], reason=SIGNED_OUT)


def author_authenticate(*, username: str, password: str) -> Author:
    """Check a password; repeated failures for one username are refused for a while (brute force)."""
    from django.contrib.auth import authenticate

    ratelimit.check("loginFailure", username)
    author = authenticate(username=username, password=password)
    if author is None:
        ratelimit.hit("loginFailure", username)
        raise NotAuthenticated("Invalid username or password.")
    return author


def _validate_blog(blog: Blog) -> None:
    errors: dict[str, list[str]] = {}
    if not blog.title.strip():
        errors["title"] = ["Title must not be empty."]
    if not blog.content.strip():
        errors["content"] = ["Content must not be empty."]
    try:
        blog.full_clean(exclude=["author"])
    except ValidationError as error:
        for field, messages in error.message_dict.items():
            errors.setdefault(field, messages)
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def blog_create(*, author: Author | None, title: str, content: str) -> Blog:
    """Create a blog; subscribers are told once the transaction commits (see notifications.publishing.signals)."""
    blog = Blog(author=_require_author(author), title=title, content=content)
    _validate_blog(blog)
    blog.save()
    return blog


def _own_blog(*, author: Author | None, blog_id: int) -> Blog:
    author = _require_author(author)
    blog = Blog.objects.select_for_update().get(pk=blog_id)
    if blog.author_id != author.pk:
        raise PermissionDenied("Only the blog's author can change or delete it.")
    return blog


@transaction.atomic
def blog_update(*, author: Author | None, blog_id: int, title: str | None = None, content: str | None = None) -> Blog:
    blog = _own_blog(author=author, blog_id=blog_id)
    if title is not None:
        blog.title = title
    if content is not None:
        blog.content = content
    _validate_blog(blog)
    blog.save(update_fields=["title", "content"])
    return blog


@transaction.atomic
def blog_delete(*, author: Author | None, blog_id: int) -> None:
    _own_blog(author=author, blog_id=blog_id).delete()
