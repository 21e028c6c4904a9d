"""Benchmark-only variants of the stack's services, and what the benchmark reads from them.

- BenchHAProxy: stack.HAProxy with room for tens of thousands of websockets, its readiness checks
  off (the benchmark saturates instances on purpose).
- PollingDaphne: a Daphne process serving bench.polling_asgi (the seed's polling design).
- cpu_seconds / rss_bytes: /proc/<pid>/stat and /proc/<pid>/status of processes we started.
- PgCounters: transaction and row counters of the benchmark database, from pg_stat_database.
"""

from __future__ import annotations

import os
import re
import resource
import sys
from pathlib import Path
from typing import Any

from stack.services import DaphneInstance, HAProxy, http_ok

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) for us and every process we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))  # needs root (or CAP_SYS_RESOURCE)
            return wanted, wanted
        except (ValueError, OSError):
            wanted = hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of one process (its threads included), in seconds; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" of comm: state is field 3 of the man page, so utime (14) is index 11.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except OSError:
        return 0


class BenchHAProxy(HAProxy):
    """The stack's HAProxy config, made to carry the big phases and to stay out of their way.

    A proxied websocket holds two descriptors in HAProxy, and RLIMIT_NOFILE is per process (20,000
    here, not raisable without CAP_SYS_RESOURCE): 10,000 websockets need two HAProxy processes on
    the same port (HAProxy binds with SO_REUSEPORT, so the kernel spreads new connections over
    both). Readiness checks are off and the server timeout is the streams' one: the benchmark
    measures the instances, and an instance saturated on purpose must not be taken out of rotation
    or have its slow answers cut. A dead one is still passed over after `timeout connect`.
    """

    processes = 2

    def __init__(self, upstream_ports: list[int], port: int | None = None) -> None:
        super().__init__(upstream_ports, port)
        self.siblings = [_BenchHAProxyProcess(upstream_ports, self.port) for _ in range(self.processes - 1)]

    def render_config(self) -> str:
        return _bench_config(super().render_config())

    def start(self) -> None:
        super().start()
        for sibling in self.siblings:
            sibling.start()

    def stop(self) -> None:
        for sibling in self.siblings:
            sibling.stop()
        super().stop()


class _BenchHAProxyProcess(HAProxy):
    def render_config(self) -> str:
        return _bench_config(super().render_config())


def _bench_config(text: str) -> str:
    text = re.sub(r"^(\s*server web-\d+ \S+) check$", r"\1", text, flags=re.MULTILINE)
    text = re.sub(r"^(\s*timeout server) \S+$", r"\1 1h", text, flags=re.MULTILINE)
    # Keep the per-request log line off the hot path (a line per websocket/mutation is pure overhead).
    return re.sub(r"^(\s*)option httplog$", r"\1no log", text, count=1, flags=re.MULTILINE)


class PollingDaphne(DaphneInstance):
    """Daphne serving bench.polling_asgi:application with the project's settings and database."""

    def start(self) -> None:
        env = {**os.environ, **self.env, "INSTANCE_NAME": self.name, "PYTHONUNBUFFERED": "1"}
        self._spawn(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "bench.polling_asgi:application"],
            env=env,
            cwd=self.cwd,
        )
        self._wait_ready(lambda: http_ok(f"{self.url}/healthz"), "GET /healthz")


class PgCounters:
    """pg_stat_database counters of one database: a proxy for 'queries' (each autocommit query is a transaction)."""

    QUERY = "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched FROM pg_stat_database WHERE datname = %s"
    # Every query of the app reads one of its tables; autovacuum and our own sampling do not scan them.
    SCANS = "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_user_tables"

    def __init__(self, url: str, dbname: str = "blog") -> None:
        import psycopg

        self.dbname = dbname
        self.conn = psycopg.connect(url, autocommit=True)
        self.samples = 0

    def read(self) -> dict[str, Any]:
        with self.conn.cursor() as cursor:
            cursor.execute(self.QUERY, (self.dbname,))
            row = cursor.fetchone()
            cursor.execute(self.SCANS)
            scans = cursor.fetchone()
        self.samples += 1
        assert row is not None and scans is not None
        return {
            "xacts": int(row[0]),
            "tup_returned": int(row[1]),
            "tup_fetched": int(row[2]),
            "app_scans": int(scans[0]),
        }

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
        # Our own sampling is one transaction per read (two queries in autocommit: two): don't count it.
        out = {key: after[key] - before[key] for key in before}
        out["xacts"] = max(0, out["xacts"] - 2)
        return out

    def close(self) -> None:
        self.conn.close()
