"""Benchmark-only variants of the stack's services, and what the benchmark reads from them.

- BenchNginx: stack.Nginx with room for tens of thousands of websockets (the stack's config keeps
  nginx's default 512 worker_connections, fine for tests, not for 10,000 subscribers).
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

from stack.services import DaphneInstance, Nginx, http_ok

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


class BenchNginx(Nginx):
    """nginx with enough connections and file descriptors for the big phases.

    A proxied websocket holds two descriptors in nginx. RLIMIT_NOFILE is per process (20,000 here,
    and it cannot be raised without CAP_SYS_RESOURCE), so 10,000 websockets need two workers,
    and `reuseport` has the kernel spread new connections evenly over them.
    """

    workers = 2
    worker_connections = 65536

    def render_template(self) -> str:
        text = super().render_template()
        return text.replace(f"listen 127.0.0.1:{self.port};", f"listen 127.0.0.1:{self.port} reuseport backlog=4096;")

    def _write_config(self) -> Path:
        conf = super()._write_config()
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = self.worker_connections * 2 if nofile == resource.RLIM_INFINITY else nofile
        # Whatever the base config says about these (it changes), ours replaces it.
        text = re.sub(r"worker_processes [^;]*;\n", "", conf.read_text())
        text = re.sub(r"worker_rlimit_nofile [^;]*;\n", "", text)
        text = re.sub(r"events \{[^}]*\}\n", "", text)
        text = text.replace(
            "daemon off;\n",
            f"daemon off;\nworker_processes {self.workers};\nworker_rlimit_nofile {nofile};\n"
            f"events {{ worker_connections {self.worker_connections}; multi_accept on; }}\n",
        )
        # Keep access logging off the hot path (a line per websocket/mutation is pure overhead here).
        text = text.replace(f"access_log {self.access_log_path};", "access_log off;")
        conf.write_text(text)
        return conf


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
