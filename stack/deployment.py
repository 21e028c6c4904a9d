"""The whole deployment, natively: Redis (or Sentinel), PostgreSQL, Daphne instances, HAProxy.

Built from the single services of stack/services.py and the Sentinel group of stack/sentinel.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from stack.pg_standby import PostgresPair
from stack.sentinel import SentinelRedis
from stack.services import (
    DaphneInstance,
    HAProxy,
    PostgresCluster,
    RedisServer,
    Service,
    StackError,
    migrate,
    production_env,
    remove_tmp,
    shared_static_root,
    start_all,
    stop_all,
)


class Stack:
    """Redis (one server, or a master, a replica and three sentinels) + PostgreSQL (or SQLite)
    + N Daphne instances behind HAProxy.

    Use as a context manager, or call `start()` / `stop()`. Whatever was
    started is stopped in reverse order, also when starting fails halfway.
    """

    def __init__(
        self,
        instances: int = 3,
        postgres: bool = True,
        env: Mapping[str, str] | None = None,
        sentinel: bool | SentinelRedis = False,
        pg_standby: bool = False,
    ) -> None:
        """`sentinel`: Redis as a master, a replica and three sentinels (stack/sentinel.py), or
        that group itself when the caller wants other settings (passwords, timings).
        `pg_standby`: PostgreSQL as a primary with a synchronous streaming standby
        (stack/pg_standby.py), DATABASE_URL naming both."""
        self.instance_count = instances
        self.use_postgres = postgres
        self.extra_env = dict(env or {})
        self.redis: RedisServer | None = None
        self.sentinel: SentinelRedis | None = None
        if sentinel:
            self.sentinel = sentinel if isinstance(sentinel, SentinelRedis) else SentinelRedis()
        self.postgres: PostgresCluster | None = None
        self.pg_pair = PostgresPair() if pg_standby else None
        self.instances: list[DaphneInstance] = []
        self.lb: HAProxy | None = None
        self.env: dict[str, str] = {}
        self._cleanup = ExitStack()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._started_lb().url

    @property
    def ws_url(self) -> str:
        return self._started_lb().ws_url

    @property
    def services(self) -> list[Service]:
        """Every service created so far, in start order."""
        redis_services = self.sentinel.services if self.sentinel is not None else [self.redis]
        standby = [self.pg_pair.standby] if self.pg_pair is not None else []
        candidates = (*redis_services, self.postgres, *standby, *self.instances, self.lb)
        return [service for service in candidates if service is not None]

    def start(self) -> Stack:
        with ExitStack() as cleanup:
            if self.sentinel is not None:
                cleanup.callback(self.sentinel.stop)
                self.sentinel.start()
                redis_env = self.sentinel.env()
            else:
                self.redis = RedisServer()
                cleanup.callback(self.redis.stop)
                self.redis.start()
                redis_env = {"REDIS_URL": self.redis.url}

            if self.pg_pair is not None:
                cleanup.callback(self.pg_pair.stop)
                self.pg_pair.start()
                self.postgres = self.pg_pair.primary
                database_url = self.pg_pair.url
            elif self.use_postgres:
                self.postgres = PostgresCluster()
                cleanup.callback(self.postgres.stop)
                self.postgres.start()
                database_url = self.postgres.url
            else:
                sqlite_dir = Path(tempfile.mkdtemp(prefix="stack-sqlite-"))
                cleanup.callback(remove_tmp, sqlite_dir)
                database_url = f"sqlite:///{sqlite_dir}/db.sqlite3"

            self.env = {
                **production_env(database_url, ""),
                **redis_env,
                # The balancer is the instances' only peer: believe the client address it forwards.
                "TRUSTED_PROXIES": "127.0.0.1",
                **self.extra_env,
            }
            # Both are one-shot processes that mostly import Django: overlap them.
            with ThreadPoolExecutor(max_workers=2) as pool:
                migrated, collected = pool.submit(migrate, self.env), pool.submit(shared_static_root, self.env)
                migrated.result()
                self.env["DJANGO_STATIC_ROOT"] = str(collected.result())

            self.instances = [DaphneInstance(f"web-{i}", self.env) for i in range(1, self.instance_count + 1)]
            cleanup.callback(stop_all, self.instances)
            start_all(self.instances)

            self.lb = HAProxy([instance.port for instance in self.instances])
            cleanup.callback(self.lb.stop)
            self.lb.start()

            self._cleanup = cleanup.pop_all()
        return self

    def stop(self) -> None:
        """Stop everything started, in reverse order. Idempotent."""
        self._cleanup.close()

    def _started_lb(self) -> HAProxy:
        if self.lb is None:
            raise StackError("the stack is not started")
        return self.lb
