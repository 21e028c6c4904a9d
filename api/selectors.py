"""Reads. Resolvers call these instead of building querysets themselves."""

import hashlib
import hmac

from django.db.models import QuerySet

from api.models import ApiToken, Author, Blog


def token_digest(raw_token: str) -> str:
    # A token carries 256 bits of randomness, so one fast hash is enough (unlike passwords).
    return hashlib.sha256(raw_token.encode()).hexdigest()


def author_by_token(raw_token: str) -> Author | None:
    """The active author owning an unrevoked token, or None."""
    digest = token_digest(raw_token)
    token = ApiToken.objects.select_related("author").filter(digest=digest, revoked=False).first()
    if token is None or not hmac.compare_digest(token.digest, digest) or not token.author.is_active:
        return None
    return token.author


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
