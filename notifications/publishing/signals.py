"""Every change to a blog is announced, however it was made.

Creations: the API, the admin, a command, the ORM, bulk_create. Edits: Model.save() of an existing
blog (the API and the admin use it), QuerySet.update() and bulk_update() (api/models.py sends
`blogs_updated` for them). Deletions: Model.delete(), QuerySet.delete(), the admin, and an
author's deletion cascading to their blogs (Django's collector sends post_delete for each blog,
since a receiver is connected). Only raw SQL is silent.

Fixtures (`loaddata`) are refused for blogs instead: they save rows raw, possibly before their
author exists, and a restore of a dump would announce old blogs as new.
"""

import threading
import weakref
from collections import defaultdict
from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from api.models import Blog
from api.signals import blogs_created, blogs_updated
from notifications.publishing.broadcast import broadcast
from notifications.publishing.events import call_event
from notifications.publishing.log import publication_of, publication_record
from notifications.publishing.publication import ChangeKind, Publication


class BlogFixtureRefused(Exception):
    """loaddata tried to write a blog: it would never be announced."""


@receiver(post_save, sender=Blog, dispatch_uid="announce_new_blog")
def announce_saved_blog(sender: type[Blog], instance: Blog, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        raise BlogFixtureRefused(
            "Blogs are not loaded from fixtures: loaddata writes them without announcing them, so no "
            "subscriber would ever hear of them. Create them with Blog.objects.create() or "
            "Blog.objects.bulk_create() (both announced), in a data migration or `manage.py shell`."
        )
    announce(instance, ChangeKind.CREATED if created else ChangeKind.UPDATED)


@receiver(blogs_created, sender=Blog, dispatch_uid="announce_bulk_created_blogs")
def announce_bulk_created_blogs(sender: type[Blog], blogs: list[Blog], **kwargs: Any) -> None:
    for blog in blogs:
        announce(blog, ChangeKind.CREATED)


@receiver(blogs_updated, sender=Blog, dispatch_uid="announce_bulk_updated_blogs")
def announce_bulk_updated_blogs(sender: type[Blog], blogs: list[Blog], **kwargs: Any) -> None:
    for blog in blogs:
        announce(blog, ChangeKind.UPDATED)


@receiver(post_delete, sender=Blog, dispatch_uid="announce_deleted_blog")
def announce_deleted_blog(sender: type[Blog], instance: Blog, **kwargs: Any) -> None:
    announce(instance, ChangeKind.DELETED)


def announce(blog: Blog, kind: ChangeKind) -> None:
    """Number the change now (inside its transaction); broadcast it after the commit.

    A blog deleted in the same transaction that created or edited it: those changes' broadcasts
    are cancelled, so its text is never sent; their numbers are gone from the log with the blog,
    and the hubs pass over them as over any deleted number.
    """
    publication = publication_of(publication_record(blog, kind))
    unsent = _unsent()
    if kind == ChangeKind.DELETED:
        for earlier in unsent.pop(publication.blog_id, ()):
            earlier.cancelled = True
    send = _Broadcast(publication)
    if kind != ChangeKind.DELETED:
        unsent[publication.blog_id].add(send)
    call_event(send)


class _Broadcast:
    """One after-commit broadcast, which a deletion later in the same transaction may cancel."""

    __slots__ = ("__weakref__", "cancelled", "publication")

    def __init__(self, publication: Publication) -> None:
        self.publication = publication
        self.cancelled = False

    def __call__(self) -> None:
        unsent = _unsent()
        pending = unsent.get(self.publication.blog_id)
        if pending is not None:
            pending.discard(self)
            if not pending:
                del unsent[self.publication.blog_id]
        if not self.cancelled:
            broadcast(self.publication)


_local = threading.local()
_SWEEP_FROM = 1024


def _unsent() -> defaultdict[int, weakref.WeakSet[_Broadcast]]:
    """This thread's broadcasts waiting for their commit, by blog id. Weak: those of a transaction
    that rolled back go when Django drops its commit hooks. Per thread, as transactions are."""
    unsent = getattr(_local, "unsent", None)
    if unsent is None:
        unsent = _local.unsent = defaultdict(weakref.WeakSet)
    if len(unsent) > _local.__dict__.setdefault("swept_at", _SWEEP_FROM):
        # Keys left by rolled-back transactions (sent broadcasts remove their own): swept now and
        # then, so a bulk write of many blogs in one transaction stays linear.
        for blog_id in [blog_id for blog_id, pending in unsent.items() if not pending]:
            del unsent[blog_id]
        _local.swept_at = max(_SWEEP_FROM, 2 * len(unsent))
    return unsent
