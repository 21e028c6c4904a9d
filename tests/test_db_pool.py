"""core/db_pool.py on a real PostgreSQL (a throwaway cluster): the pool checks a connection it
hands out only when it was not handed out a moment ago, and a checked connection that died is
replaced before anyone uses it."""

import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from core import db_pool
from stack.services import PostgresCluster


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster() as cluster:
        yield cluster


def _kill(postgres: PostgresCluster, backend_pid: int) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [backend_pid]).fetchone() == (True,)


def test_a_connection_handed_out_a_moment_ago_goes_unchecked_and_one_idle_longer_is_checked_and_replaced(
    postgres: PostgresCluster,
):
    with ConnectionPool(
        postgres.url, min_size=1, max_size=1, check=db_pool.check_unless_recent, kwargs={"autocommit": True}
    ) as pool:
        with pool.connection() as connection:
            first_pid = connection.info.backend_pid
        with pool.connection() as connection:
            assert connection.info.backend_pid == first_pid  # the same one, back from the pool

        # Killed right after its use: handed out again at once, it is not checked (no round trip),
        # so its first statement meets the dead backend, as a request's would (DATABASE_UNAVAILABLE).
        _kill(postgres, first_pid)
        with pytest.raises(psycopg.OperationalError), pool.connection() as connection:
            connection.execute("SELECT 1")

        with pool.connection() as connection:  # the pool replaced the broken one
            second_pid = connection.info.backend_pid
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert second_pid != first_pid

        # Killed and left idle past RECENT_SECONDS: the check finds it dead and the pool hands out
        # a fresh connection instead; the statement succeeds.
        _kill(postgres, second_pid)
        time.sleep(db_pool.RECENT_SECONDS + 0.2)
        with pool.connection() as connection:
            assert connection.info.backend_pid not in (first_pid, second_pid)
            assert connection.execute("SELECT 1").fetchone() == (1,)
