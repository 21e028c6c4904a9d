"""`manage.py seed_demo`: a few authors and blogs, so a first look is not at an empty page."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from api import services
from api.models import Author, Blog

DEMO_BLOGS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "ada": (
        "Writes about engines, analytical and otherwise.",
        [
            ("Notes on the engine", "It weaves algebraic patterns just as the loom weaves flowers and leaves."),
            ("Pushed, not polled", "Subscribers hear about this post milliseconds after it is committed."),
        ],
    ),
    "grace": (
        "Compilers, debugging, and the occasional moth.",
        [
            ("First actual case of bug being found", "Relay #70, panel F. Taped into the log book."),
            ("It is easier to ask forgiveness", "...than it is to get permission. Ship the prototype."),
        ],
    ),
    "alan": (
        "Machines, morphogenesis, and long walks.",
        [("Can machines think?", "I propose to consider the question by playing a game first.")],
    ),
}


class Command(BaseCommand):
    help = (
        "Create demo authors (ada, grace, alan) with a few blogs each, and print a fresh API token "
        "per author for GraphiQL's Headers pane. Safe to run again: existing authors keep their blogs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quiet-tokens", action="store_true", help="do not create and print tokens")

    def handle(self, *args: Any, **options: Any) -> None:
        created_blogs = 0
        for username, (bio, blogs) in DEMO_BLOGS.items():
            author = Author.objects.filter(username=username).first()
            if author is None:
                # A random password: a demo account must not be a known login on a real server.
                author = services.author_create(username=username, password=secrets.token_urlsafe(16), bio=bio)
                self.stdout.write(f"created author {username}")
            if not Blog.objects.filter(author=author).exists():
                for title, content in blogs:
                    services.blog_create(author=author, title=title, content=content)
                    created_blogs += 1
            if not options["quiet_tokens"]:
                token = services.token_create(author=author).raw
                self.stdout.write(f'  {username}: {{"Authorization": "Bearer {token}"}}')
        self.stdout.write(self.style.SUCCESS(f"{created_blogs} demo blogs created."))
