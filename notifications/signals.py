"""Every new blog is announced, however it was created: API, admin, a command or the ORM."""

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from api.models import Blog
from notifications.events import call_event
from notifications.publications import event_payload, publication_record
from notifications.subscriptions import BlogPublished


@receiver(post_save, sender=Blog, dispatch_uid="announce_new_blog")
def announce_new_blog(sender: type[Blog], instance: Blog, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if not created or raw:
        return
    publication = publication_record(instance)
    call_event(BlogPublished.announce, event_payload(publication))
