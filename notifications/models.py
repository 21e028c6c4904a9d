"""The publication log: every change to a blog gets a sequence number, in commit order."""

from django.conf import settings
from django.db import models

from notifications.publishing.publication import ChangeKind


class PublicationCounter(models.Model):
    """One row. Publishers lock it until they commit, so sequence order is commit order.

    Ids from a database sequence are not: a transaction holding id 10 can commit after
    the one holding id 11, and a subscriber resuming after 11 would then miss 10.
    """

    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"last seq {self.last_seq}"


class Publication(models.Model):
    """One change to one blog, as the change left it.

    A creation or an edit keeps the blog's text as it was written then, and belongs to the blog:
    when the blog is deleted they are deleted with it (CASCADE), so the log never holds a deleted
    blog's title or content. What remains of it is its tombstone: kind DELETED, the blog's id and
    its author's username (for `author:` filters), and no text.
    """

    seq = models.BigIntegerField(unique=True)
    kind = models.CharField(
        max_length=7, choices=[(kind.value, kind.name.capitalize()) for kind in ChangeKind], default=ChangeKind.CREATED
    )
    blog = models.ForeignKey("api.Blog", null=True, on_delete=models.CASCADE, related_name="publications")
    blog_pk = models.BigIntegerField(db_index=True, help_text="The blog's id, kept on its tombstone.")
    author_username = models.CharField(max_length=150, db_index=True)
    title = models.CharField(max_length=settings.BLOG_TITLE_MAX, blank=True, default="")
    content = models.TextField(blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.blog_pk}"
