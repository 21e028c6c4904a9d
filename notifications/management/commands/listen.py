"""`manage.py listen`: follow new blogs (or, with --changes, every change) from a terminal, one line each."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from blogclient import BlogListener, ListenerError

DEFAULT_URL = "ws://127.0.0.1:8000/graphql/"
CONTENT_SHOWN = 80


def one_line(text: str, limit: int | None = None) -> str:
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def format_event(event: dict[str, Any]) -> str:
    blog = event["blog"]
    title, content = one_line(blog["title"]), one_line(blog["content"], CONTENT_SHOWN)
    return f"{blog['publishedAt']}  {blog['author']['username']}: {title} — {content}"


def format_change(change: dict[str, Any]) -> str:
    """One line per change, its kind first; a deletion has no blog left to show, only its id."""
    blog = change["blog"]
    if blog is None:
        return f"{change['kind']:<8} {change['changedAt']}  {change['blogId']}"
    title, content = one_line(blog["title"]), one_line(blog["content"], CONTENT_SHOWN)
    return f"{change['kind']:<8} {change['changedAt']}  {blog['author']['username']}: {title} — {content}"


class Command(BaseCommand):
    help = (
        "Print each newly published blog as it is pushed (one line each, or JSON lines with --json); with "
        "--changes, every creation, edit and deletion, its kind first. "
        "Reconnects by itself; Ctrl-C stops it (exit code 0). Status messages go to stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--author", help="only this author's blogs (username)")
        parser.add_argument(
            "--url", default=DEFAULT_URL, help=f"the server's GraphQL websocket (default {DEFAULT_URL})"
        )
        parser.add_argument("--json", action="store_true", help="one JSON object per line: {cursor, blog}")
        parser.add_argument(
            "--changes",
            action="store_true",
            help="every creation, edit and deletion (blogChanged): CREATED, UPDATED or DELETED first on each line",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        listener = BlogListener(options["url"], options["author"], on_status=self._status, changes=options["changes"])
        try:
            asyncio.run(self._print_events(listener, as_json=options["json"]))
        except KeyboardInterrupt:
            self._status("stopped")
        except ListenerError as error:
            raise CommandError(str(error)) from error
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`): nothing left to say

    async def _print_events(self, listener: BlogListener, *, as_json: bool) -> None:
        # Ctrl-C and SIGTERM (docker stop, systemd) stop it alike; SIGINT is handled here, not left
        # to Python's default, which a process started with SIGINT ignored (a parent's choice,
        # inherited) would never get.
        task = asyncio.current_task()
        assert task is not None
        for stop in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(stop, task.cancel)
        try:
            async for event in listener.events():
                if as_json:
                    line = json.dumps(event, ensure_ascii=False)
                else:
                    line = format_change(event) if listener.field == "blogChanged" else format_event(event)
                print(line, flush=True)
        except asyncio.CancelledError:
            self._status("stopped")

    @staticmethod
    def _status(message: str) -> None:
        print(f"listen: {message}", file=sys.stderr, flush=True)
