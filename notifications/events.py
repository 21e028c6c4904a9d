"""Side effects that must follow a commit, in one place (Saleor's call_event pattern)."""

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from project import metrics

logger = logging.getLogger(__name__)


def call_event(func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run `func` once the current transaction commits (at once outside one).

    A failure is logged and counted but never raised: the write it follows is already
    committed and must stay so (the resume path delivers what a broadcast failed to).
    """

    def run() -> None:
        try:
            func(*args, **kwargs)
        except Exception:
            metrics.broadcast_failed()
            logger.exception("Event %s failed after commit", getattr(func, "__qualname__", func))
        else:
            metrics.broadcast_sent()

    transaction.on_commit(run)
