"""Recording a publication and shaping what subscribers receive."""

import base64
import binascii
import time

from django.db import transaction

from api.models import Blog
from notifications.models import Publication, PublicationCounter

CURSOR_PREFIX = "pub:"


def cursor_for(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def seq_from_cursor(cursor: str) -> int:
    """Inverse of cursor_for; ValueError for anything it did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise ValueError("malformed cursor") from error
    if not text.startswith(CURSOR_PREFIX) or not text[len(CURSOR_PREFIX) :].isdigit():
        raise ValueError("malformed cursor")
    return int(text[len(CURSOR_PREFIX) :])


@transaction.atomic
def publication_record(blog: Blog) -> Publication:
    """Number the blog's publication; the counter's row lock is held until our commit."""
    counter = PublicationCounter.objects.select_for_update().get(pk=1)
    counter.last_seq += 1
    counter.save(update_fields=["last_seq"])
    return Publication.objects.create(seq=counter.last_seq, blog=blog, author_username=blog.author.username)


def event_payload(publication: Publication) -> dict:
    """Plain data, read once at broadcast time, so delivery never touches the database."""
    blog = publication.blog
    author = blog.author
    return {
        "seq": publication.seq,
        "cursor": cursor_for(publication.seq),
        "announced_at": time.time(),  # for the publish-to-send latency metric
        "blog": {
            "id": blog.pk,
            "title": blog.title,
            "content": blog.content,
            "published_at": blog.published_at.isoformat(),
            "author": {"id": author.pk, "username": author.username, "bio": author.bio},
        },
    }
