"""Django's PostgreSQL backend (ENGINE "core.postgresql"), whose pool checks a connection it hands
out as core/db_pool.py decides.

Django builds the psycopg pool itself and passes it `check` (every connection, or none), so the
pool's OPTIONS cannot name another: the check is set on the pool Django built, its `_check`
(psycopg_pool's private attribute, used here only; tests/test_internals.py checks it).
"""

from typing import Any

from django.db.backends.postgresql import base

from core.db_pool import check_unless_recent


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        pool = super().pool
        if pool is not None and pool._check is not check_unless_recent:
            pool._check = check_unless_recent
        return pool
