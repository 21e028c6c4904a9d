"""Side effects that must follow a commit, in one place (Saleor's call_event pattern)."""

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import metrics

logger = logging.getLogger(__name__)

# What an unreachable Redis raises (redis-py's errors, including Sentinel's MasterNotFoundError).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


def call_event(func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run `func` once the current transaction commits (at once outside one).

    A failure is logged and counted but never raised: the write it follows is already
    committed and must stay so (the resume path delivers what a broadcast failed to).
    """

    def run() -> None:
        try:
            func(*args, **kwargs)
        except UNREACHABLE as error:
            # Redis down or failing over: expected, and repaired by the hubs' log reads. One line each.
            metrics.broadcast_failed()
            logger.warning(
                "Event %s failed after commit, the channel layer is unreachable (%s: %s); "
                "instances read it from the publication log",
                getattr(func, "__qualname__", func),
                type(error).__name__,
                error,
            )
        except Exception:
            metrics.broadcast_failed()
            logger.exception("Event %s failed after commit", getattr(func, "__qualname__", func))
        else:
            metrics.broadcast_sent()

    transaction.on_commit(run)
