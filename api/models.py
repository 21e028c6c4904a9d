"""Authors (who are the site's users), their blogs, and API tokens."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.core.validators import MaxLengthValidator, RegexValidator
from django.db import models, transaction
from django.utils import timezone

from api.signals import DEACTIVATED, REVOKED, AccessEnded, announce_access_ended, blogs_created, blogs_updated

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,150}$"
# Rows changed per statement by update() and bulk_update(): well under SQLite's bound on parameters.
CHANGE_BATCH = 500


class AuthorQuerySet(models.QuerySet["Author"]):
    def update(self, **kwargs: Any) -> int:
        """Django's update; authors it deactivates lose their open connections (api.access)."""
        if kwargs.get("is_active", True) is not False:
            return super().update(**kwargs)
        with transaction.atomic(using=self.db, savepoint=False):
            ids = tuple(self.values_list("pk", flat=True))
            count = super().update(**kwargs)
            announce_access_ended(AccessEnded(DEACTIVATED, author_ids=ids))
        return count


class AuthorManager(UserManager.from_queryset(AuthorQuerySet)):  # type: ignore[misc]
    pass


class Author(AbstractUser):
    """An author is the login account; one model keeps sign-up, log-in and ownership simple."""

    username = models.CharField(
        max_length=150,
        unique=True,
        validators=[RegexValidator(USERNAME_PATTERN, "3 to 150 characters of A-Z, a-z, 0-9, '_', '.', '-'.")],
        error_messages={"unique": "This username is already taken."},
    )
    bio = models.TextField(blank=True, default="")

    objects = AuthorManager()  # type: ignore[misc]

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username


class BlogQuerySet(models.QuerySet["Blog"]):
    def bulk_create(  # type: ignore[override]
        self,
        objs: Any,
        batch_size: int | None = None,
        ignore_conflicts: bool = False,
        update_conflicts: bool = False,
        **kwargs: Any,
    ) -> list["Blog"]:
        """Django's bulk_create, and every created blog announced like one saved alone.

        bulk_create sends no post_save; `blogs_created` is sent in the same transaction, so the
        publications are numbered with the rows and broadcast after the commit.
        """
        if ignore_conflicts or update_conflicts:
            raise ValueError(
                "Blog.objects.bulk_create cannot tell which rows it created with ignore_conflicts or "
                "update_conflicts, so it could not announce them: create blogs without these options."
            )
        with transaction.atomic(using=self.db, savepoint=False):
            created: list[Blog] = list(super().bulk_create(objs, batch_size=batch_size, **kwargs))
            if any(blog.pk is None for blog in created):
                raise ValueError("This database did not return the ids of the created blogs: they cannot be announced.")
            blogs_created.send(sender=Blog, blogs=created)
        return created

    def update(self, **kwargs: Any) -> int:
        """Django's update, and every changed blog announced, once each, in primary-key order.

        UPDATE sends no post_save. The matching rows are locked first and the UPDATE is limited to
        them, so the rows announced are exactly the rows changed (a blog inserted meanwhile that
        would match is not changed either); they are read back inside the transaction, as changed.
        """
        if self.query.is_sliced:
            raise TypeError("Cannot update a query once a slice has been taken.")
        if not kwargs:
            return 0  # as Django: nothing to set, nothing changed
        with transaction.atomic(using=self.db, savepoint=False):
            locked = list(self.select_for_update(of=("self",)).order_by("pk").values_list("pk", flat=True))
            changed = 0
            for start in range(0, len(locked), CHANGE_BATCH):
                batch = locked[start : start + CHANGE_BATCH]
                changed += self._plain().filter(pk__in=batch).update(**kwargs)
                self._announce_updated(batch)
        return changed

    def bulk_update(self, objs: Iterable["Blog"], fields: Iterable[str], batch_size: int | None = None) -> int:
        """Django's bulk_update, and every changed blog announced, once each, in the order given."""
        blogs = list(objs)
        with transaction.atomic(using=self.db, savepoint=False):
            changed = self._plain().bulk_update(blogs, fields, batch_size=batch_size)
            order = list(dict.fromkeys(blog.pk for blog in blogs))
            for start in range(0, len(order), CHANGE_BATCH):
                self._announce_updated(order[start : start + CHANGE_BATCH])
        return changed

    def _plain(self) -> models.QuerySet["Blog"]:
        """Django's own queryset for this model and database: its writes announce nothing themselves."""
        return models.QuerySet(self.model, using=self.db)

    def _announce_updated(self, pks: list[int]) -> None:
        by_pk = self._plain().select_related("author").in_bulk(pks)
        blogs_updated.send(sender=Blog, blogs=[by_pk[pk] for pk in pks if pk in by_pk])


class Blog(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="blogs")
    title = models.CharField(max_length=settings.BLOG_TITLE_MAX)
    content = models.TextField(validators=[MaxLengthValidator(settings.BLOG_CONTENT_MAX)])
    published_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = BlogQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "-id"]
        indexes = [models.Index(fields=["author", "-published_at"])]

    def __str__(self) -> str:
        return self.title


def token_expiry() -> datetime:
    return timezone.now() + timedelta(seconds=settings.API_TOKEN_TTL_SECONDS)


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def update(self, **kwargs: Any) -> int:
        """Django's update; tokens it revokes lose their open connections (api.access).

        Moving a token to another author or changing its expiry in bulk would leave connections
        signed in on terms that no longer hold: revoke it and create a new one instead.
        """
        refused = sorted({"author", "author_id", "expires_at", "digest"} & kwargs.keys())
        if refused:
            raise ValueError(
                f"ApiToken.objects.update() does not change {', '.join(refused)}: connections signed in with "
                "these tokens would keep the old terms. Revoke the tokens (revoked=True) and create new ones."
            )
        if kwargs.get("revoked") is not True:
            return super().update(**kwargs)
        return self.revoke(**{name: value for name, value in kwargs.items() if name != "revoked"})

    def revoke(self, *, reason: str = REVOKED, **also: Any) -> int:
        """Mark these tokens revoked (and set `also`); their connections close after the commit."""
        with transaction.atomic(using=self.db, savepoint=False):
            ids = tuple(self.values_list("pk", flat=True))
            count = super().update(revoked=True, **also)
            announce_access_ended(AccessEnded(reason, token_ids=ids))
        return count


class ApiToken(models.Model):
    """A bearer token; only its SHA-256 digest is stored, so a database leak reveals no token."""

    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False, help_text="A revoked token no longer authenticates.")
    expires_at = models.DateTimeField(default=token_expiry, help_text="The token no longer authenticates from then.")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.author})"
