"""Authors (who are the site's users), their blogs, and API tokens."""

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxLengthValidator, RegexValidator
from django.db import models, transaction
from django.utils import timezone

from api.signals import blogs_created

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,150}$"


class Author(AbstractUser):
    """An author is the login account; one model keeps sign-up, log-in and ownership simple."""

    username = models.CharField(
        max_length=150,
        unique=True,
        validators=[RegexValidator(USERNAME_PATTERN, "3 to 150 characters of A-Z, a-z, 0-9, '_', '.', '-'.")],
        error_messages={"unique": "This username is already taken."},
    )
    bio = models.TextField(blank=True, default="")

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


class ApiToken(models.Model):
    """A bearer token; only its SHA-256 digest is stored, so a database leak reveals no token."""

    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False, help_text="A revoked token no longer authenticates.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.author})"
