"""Every way credentials end, turned into one `access_ended` signal (api/signals.py).

Services, the admin and `ApiToken.objects.update(revoked=True)` / `Author.objects.update(is_active=False)`
send it themselves (api/models.py); these receivers cover the rest: a token or author saved from
the admin's change form, a shell or a command; deletions (also cascades and QuerySet.delete,
which send post_delete per row while a receiver listens); and a browser session logging out.
"""

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from api.models import ApiToken, Author
from api.signals import DEACTIVATED, DELETED, REVOKED, SIGNED_OUT, AccessEnded, announce_access_ended


@receiver(post_save, sender=ApiToken, dispatch_uid="access_token_saved")
def token_saved(sender: type[ApiToken], instance: ApiToken, **kwargs: Any) -> None:
    if instance.revoked:  # saving a token that was revoked already announces nothing anyone holds
        announce_access_ended(AccessEnded(REVOKED, token_ids=(instance.pk,)))


@receiver(post_delete, sender=ApiToken, dispatch_uid="access_token_deleted")
def token_deleted(sender: type[ApiToken], instance: ApiToken, origin: Any = None, **kwargs: Any) -> None:
    if isinstance(origin, Author) or getattr(origin, "model", None) is Author:
        return  # the author's own deletion is announced (as DELETED) for all their connections
    announce_access_ended(AccessEnded(REVOKED, token_ids=(instance.pk,)))


@receiver(post_save, sender=Author, dispatch_uid="access_author_saved")
def author_saved(sender: type[Author], instance: Author, created: bool = False, **kwargs: Any) -> None:
    if not instance.is_active and not created:
        announce_access_ended(AccessEnded(DEACTIVATED, author_ids=(instance.pk,)))


@receiver(post_delete, sender=Author, dispatch_uid="access_author_deleted")
def author_deleted(sender: type[Author], instance: Author, **kwargs: Any) -> None:
    announce_access_ended(AccessEnded(DELETED, author_ids=(instance.pk,)))


@receiver(user_logged_out, dispatch_uid="access_session_logged_out")
def session_logged_out(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    # Sent before the session is flushed: its key is still the one its websockets signed in with.
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if key:
        announce_access_ended(AccessEnded(SIGNED_OUT, session_keys=(key,)))
