"""Writes. Each service is one transaction; publication to subscribers follows the commit."""

import secrets

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from api import ratelimit
from api.errors import NotAuthenticated
from api.models import ApiToken, Author, Blog
from api.selectors import token_digest

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


@transaction.atomic
def token_create(*, author: Author) -> str:
    """Return a new token; it is shown once and only its digest is kept."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(author=author, digest=token_digest(raw), prefix=raw[: len(TOKEN_PREFIX) + 4])
    return raw


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
    """Create a blog; subscribers are told once the transaction commits (see notifications.signals)."""
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
