"""The after-commit broadcast: one channel-layer message per publication, to every process's hub.

The message is the project's own (`type` MESSAGE_TYPE, the publication in its wire form), sent
with the channel layer's documented `group_send`; hub/receiver.py reads it back with
`publication_from`. Each process's hub joins the one group and filters by author locally, so an
event crosses Redis once per process and subscribers of other authors are never woken.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from notifications.publishing.publication import Publication

HUB_GROUP = "notifications.hubs"
MESSAGE_TYPE = "notifications.publication"


def message_for(publication: Publication) -> dict[str, Any]:
    return {"type": MESSAGE_TYPE, "publication": publication.to_message()}


def publication_from(message: dict[str, Any]) -> Publication | None:
    """The publication a hub message carries; None for a message of another type.

    ValueError for a message of this type that cannot be read (another release's shape).
    """
    if message.get("type") != MESSAGE_TYPE:
        return None
    try:
        return Publication.from_message(message["publication"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"unreadable {MESSAGE_TYPE} message: {type(error).__name__}: {error}") from error


def broadcast(publication: Publication) -> None:
    """Send the publication to every hub, stamped with the time it was sent (delivery latency)."""
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured("CHANNEL_LAYERS needs a default layer: publications are broadcast through it.")
    stamped = dataclasses.replace(publication, announced_at=time.time())
    async_to_sync(layer.group_send)(HUB_GROUP, message_for(stamped))
