"""The PostgreSQL pool's check of a connection it hands out: a round trip only when it is due.

Django's pool checks every connection on checkout when CONN_HEALTH_CHECKS is on (psycopg_pool's
`check_connection`: an empty query), and every request checks one out: a round trip to the
database before each request's first statement. Here a connection handed out within the last
RECENT_SECONDS is handed out again unchecked: it worked a moment ago, and a connection that
broke since fails its request's first statement, which is answered DATABASE_UNAVAILABLE with a
retry hint (api/errors.py) and leaves the pool with it, as during any outage. A failover takes
longer than that to promote a standby (docs/scaling.md), so connections idle across it are
checked, and replaced, before a request sees them.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from psycopg_pool import ConnectionPool

RECENT_SECONDS = 1.0

_handed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def check_unless_recent(connection: Any) -> None:
    """psycopg_pool's `check` callback: raise if a connection not used lately does not answer."""
    now = time.monotonic()
    with _lock:
        last = _handed_out.get(connection)
    if last is None or now - last >= RECENT_SECONDS:
        ConnectionPool.check_connection(connection)
    with _lock:
        _handed_out[connection] = now
