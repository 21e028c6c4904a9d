"""Every change to a blog is announced, however it was made.

Creations: the API, the admin, a command, the ORM, bulk_create. Edits: Model.save() of an existing
blog (the API and the admin use it), QuerySet.update() and bulk_update() (api/models.py sends
`blogs_updated` for them). Deletions: Model.delete(), QuerySet.delete(), the admin, and an
author's deletion cascading to their blogs (Django's collector sends post_delete for each blog,
since a receiver is connected). Only raw SQL is silent.

Fixtures (`loaddata`) are refused for blogs instead: they save rows raw, possibly before their
author exists, and a restore of a dump would announce old blogs as new.
"""

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from api.models import Blog
from api.signals import blogs_created, blogs_updated
from notifications.publishing.broadcast import pending_broadcast
from notifications.publishing.events import call_event
from notifications.publishing.log import publication_of, publication_record
from notifications.publishing.publication import ChangeKind


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
    """Number the change now (inside its transaction); broadcast it after the commit."""
    call_event(pending_broadcast(publication_of(publication_record(blog, kind))))
