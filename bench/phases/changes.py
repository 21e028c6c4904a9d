"""Phase: the fan-out of edits and deletions (blogChanged) to the fan-out's subscribers, beside creations."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.harness import CHANGES, Bench
from bench.publisher import Published
from stack.services import DaphneInstance


def changes(bench: Bench, connected: int, web1: DaphneInstance) -> dict[str, Any]:
    """Every subscriber follows blogChanged; one event at a time, cycling through a creation, two
    edits of that blog and its deletion, each awaited at every subscriber. CPU per event compares
    with the creation-only fan-out row of the same subscribers."""
    assert bench.pool is not None and bench.publisher is not None
    publisher = bench.publisher
    began = time.monotonic()
    bench.pool.resubscribe([(CHANGES, {"author": None})])
    out: dict[str, Any] = {"warm_up": bench.warm_up(connected)}
    bench.pool.complete_old()
    time.sleep(1.0)
    bench.pool.call({"cmd": "clear"})
    out["resubscribe_s"] = round(time.monotonic() - began, 1)
    current: list[str] = []

    def create() -> Published:
        published = bench.publish("change-")
        current[:] = [published.blog_id]
        return published

    def edit() -> Published:
        return publisher.update(current[0], bench.title("edited-"))

    def delete() -> Published:
        return publisher.delete(current[0])

    steps: Iterator[Callable[[], Published]] = itertools.cycle([create, edit, edit, delete])
    out.update(
        bench.events(
            bench.config.changes_events,
            bench.config.changes_budget,
            connected,
            instances=[web1],
            make=lambda: next(steps)(),
        )
    )
    out["mix"] = "one creation, two edits and one deletion, repeated"
    return out
