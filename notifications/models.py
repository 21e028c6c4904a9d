"""The publication log: every announced blog gets a sequence number, in commit order."""

from django.db import models


class PublicationCounter(models.Model):
    """One row. Publishers lock it until they commit, so sequence order is commit order.

    Ids from a database sequence are not: a transaction holding id 10 can commit after
    the one holding id 11, and a subscriber resuming after 11 would then miss 10.
    """

    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"last seq {self.last_seq}"


class Publication(models.Model):
    seq = models.BigIntegerField(unique=True)
    blog = models.OneToOneField("api.Blog", on_delete=models.CASCADE, related_name="publication")
    author_username = models.CharField(max_length=150, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.blog_id}"
