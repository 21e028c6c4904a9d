"""Every new blog is announced, however it was created: API, admin, a command, the ORM, bulk_create.

Fixtures (`loaddata`) are refused for blogs instead: they save rows raw, possibly before their
author exists, and a restore of a dump would announce old blogs as new.
"""

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from api.models import Blog
from api.signals import blogs_created
from notifications.publishing.broadcast import broadcast
from notifications.publishing.events import call_event
from notifications.publishing.log import publication_of, publication_record


class BlogFixtureRefused(Exception):
    """loaddata tried to create a blog: it would never be announced."""


@receiver(post_save, sender=Blog, dispatch_uid="announce_new_blog")
def announce_new_blog(sender: type[Blog], instance: Blog, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if not created:
        return
    if raw:
        raise BlogFixtureRefused(
            "Blogs are not loaded from fixtures: loaddata writes them without announcing them, so no "
            "subscriber would ever hear of them. Create them with Blog.objects.create() or "
            "Blog.objects.bulk_create() (both announced), in a data migration or `manage.py shell`."
        )
    announce(instance)


@receiver(blogs_created, sender=Blog, dispatch_uid="announce_bulk_created_blogs")
def announce_bulk_created_blogs(sender: type[Blog], blogs: list[Blog], **kwargs: Any) -> None:
    for blog in blogs:
        announce(blog)


def announce(blog: Blog) -> None:
    """Number the blog's publication now (inside its transaction); broadcast it after the commit."""
    call_event(broadcast, publication_of(publication_record(blog)))
