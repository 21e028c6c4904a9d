"""Signals the api models send beyond Django's own."""

from dataclasses import dataclass

from django.dispatch import Signal

# Sent inside the transaction of Blog.objects.bulk_create, with `blogs`: the created rows in the
# order given. bulk_create sends no post_save, and every new blog must still be announced.
blogs_created = Signal()

# Why a credential stopped being valid: what a closed connection is told, and the `reason` label
# of the metrics counting them.
REVOKED, EXPIRED, DEACTIVATED, DELETED, SIGNED_OUT = "revoked", "expired", "deactivated", "deleted", "signed_out"
REASONS = (REVOKED, EXPIRED, DEACTIVATED, DELETED, SIGNED_OUT)


@dataclass(frozen=True)
class AccessEnded:
    """Credentials that stopped being valid: every connection signed in with one of them must end.

    A connection matches by its token, its author (all of the author's connections) or its
    browser session.
    """

    reason: str
    token_ids: tuple[int, ...] = ()
    author_ids: tuple[int, ...] = ()
    session_keys: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.token_ids or self.author_ids or self.session_keys)


# Sent with `ended` (an AccessEnded) whenever credentials stop being valid, inside the
# transaction that ends them when there is one (api/access.py sends it for every way they end).
access_ended = Signal()


def announce_access_ended(ended: AccessEnded) -> None:
    if ended:
        access_ended.send(sender=AccessEnded, ended=ended)


# Sent inside the transaction of Blog.objects.update() and bulk_update(), with `blogs`: the changed
# rows as they now are, in the order they were changed. Neither sends post_save, and every edit
# must still be announced.
blogs_updated = Signal()
