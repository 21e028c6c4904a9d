"""Many publishers commit at once while a reader watches the publication log.

Run against a real PostgreSQL (DATABASE_URL). Prints one JSON line:
- seq_holes_seen: times the reader saw a sequence number committed while a smaller one was
  still missing. Must be 0: that is what makes `after:` resume gap-free.
- id_holes_seen: the same for blog ids (a database sequence), for contrast: these can happen.

With a third argument `mixed`, each writer also edits every blog it creates and deletes every
other one, all through the services: creations, edits and deletions interleave across writers.
A deletion takes its blog's earlier log entries with it, so the hole counts are not kept then
(`null`); the subscribers' side (tests/test_faults.py) checks the order instead.
"""

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import Count, Max  # noqa: E402

from api import services  # noqa: E402
from api.models import Author, Blog  # noqa: E402
from notifications.models import Publication  # noqa: E402

WRITERS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
PER_WRITER = int(sys.argv[2]) if len(sys.argv) > 2 else 25
MIXED = len(sys.argv) > 3 and sys.argv[3] == "mixed"


def main() -> None:
    author = Author.objects.get(username=os.environ["PUBLISHER_USERNAME"])
    base_seq = Publication.objects.aggregate(m=Max("seq"))["m"] or 0
    base_id = Blog.objects.aggregate(m=Max("id"))["m"] or 0
    done = threading.Event()
    seen = {"seq_holes_seen": 0, "id_holes_seen": 0, "checks": 0}

    def write() -> None:
        for i in range(PER_WRITER):
            blog = services.blog_create(author=author, title=f"concurrent {threading.get_ident()} {i}", content="c")
            if MIXED:
                services.blog_update(author=author, blog_id=blog.pk, content="edited")
                if i % 2:
                    services.blog_delete(author=author, blog_id=blog.pk)
        connection.close()

    def watch() -> None:
        while not done.is_set():
            pubs = Publication.objects.filter(seq__gt=base_seq).aggregate(top=Max("seq"), n=Count("id"))
            if pubs["top"] is not None and pubs["n"] != pubs["top"] - base_seq:
                seen["seq_holes_seen"] += 1
            blogs = Blog.objects.filter(id__gt=base_id).aggregate(top=Max("id"), n=Count("id"))
            if blogs["top"] is not None and blogs["n"] != blogs["top"] - base_id:
                seen["id_holes_seen"] += 1
            seen["checks"] += 1
        connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    writers = [threading.Thread(target=write) for _ in range(WRITERS)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    watcher.join()
    seen["published"] = Publication.objects.filter(seq__gt=base_seq).count()
    seen["first_seq"] = base_seq + 1
    print(json.dumps({**seen, "seq_holes_seen": None, "id_holes_seen": None} if MIXED else seen))


if __name__ == "__main__":
    main()
