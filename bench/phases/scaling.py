"""Phases of scale: how far createBlog scales with concurrent writers, and a Redis failover.

- `writers_<n>`: n threads here, each writing createBlog to one of web-1..web-3 directly (writer
  i to instance i mod 3), one request at a time, for a fixed time. One subscriber per instance
  checks every blog is delivered. Beside blogs/s: the Daphne processes' and PostgreSQL's CPU,
  and how many database sessions wait on a lock (pg_stat_activity, sampled every 10 ms): the
  publication counter's row lock is the only one createBlog contends on.
- `counter_lock`: the same transaction as a publication (INSERT the blog, UPDATE the counter,
  INSERT the publication, COMMIT), replayed by pgbench straight against PostgreSQL with 1 and 8
  clients in a scratch copy of those tables: what the row lock allows with no application time.
- `failover`: stack/failover.py's drill on a stack of its own (3 instances, Sentinel), a few
  rounds, each SIGKILLing the current master.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, combos, ms_summary
from bench.publisher import Publisher
from bench.servers import cpu_seconds
from stack.deployment import Stack
from stack.failover import Drill, delivery_bound_s
from stack.sentinel import SentinelRedis

# createBlog only ever waits for this one lock: the publication counter's row, held from its
# UPDATE to the transaction's COMMIT.
# A session holds the counter's row lock from its UPDATE to its COMMIT: while its last statement
# is that UPDATE or the publication's INSERT (the COMMIT itself, one round trip, is not seen).
# 'idle in transaction' then means the database waits for the application, with the lock held.
LOCK_WAITS = """
WITH s AS (
  SELECT state, wait_event_type IS NOT DISTINCT FROM 'Lock' AS waiting,
         query ~* 'UPDATE\\s+"?notifications_publicationcounter"?\\s'
           OR query ~* '^\\s*INSERT\\s+INTO\\s+"?notifications_publication"?\\s' AS publishing
  FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()
)
SELECT count(*) FILTER (WHERE waiting),
       count(*) FILTER (WHERE state = 'active'),
       count(*) FILTER (WHERE publishing AND NOT waiting AND state = 'active'),
       count(*) FILTER (WHERE publishing AND state = 'idle in transaction')
FROM s
"""
PGBENCH_SCRIPT = """\\set n random(1, 1000000000)
BEGIN;
INSERT INTO api_blog (author_id, title, content, published_at)
  VALUES (:author, 'pgbench ' || :n, 'x', now()) RETURNING id AS blog \\gset
UPDATE notifications_publicationcounter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq AS seq \\gset
INSERT INTO notifications_publication
  (seq, kind, blog_id, blog_pk, author_username, title, content, published_at, created_at)
  VALUES (:seq, 'created', :blog, :blog, 'pgbench', 'pgbench ' || :n, 'x', now(), now());
COMMIT;
"""
TABLES = ("api_author", "api_blog", "notifications_publication", "notifications_publicationcounter")


def tree_cpu_seconds(root: int | None) -> float:
    """CPU of a process and its children (PostgreSQL: the postmaster and every backend)."""
    if root is None:
        return 0.0
    total = cpu_seconds(root)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root:  # ppid
            total += cpu_seconds(int(stat.parent.name))
    return total


class LockSampler(threading.Thread):
    """Samples how many sessions of the database wait on a lock, and how many are active."""

    def __init__(self, url: str, dbname: str, period: float = 0.01) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.dbname = dbname
        self.period = period
        self.samples: list[tuple[int, int, int, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with self.conn.cursor() as cursor:
            while not self.halt.wait(self.period):
                cursor.execute(LOCK_WAITS, (self.dbname,))
                row = cursor.fetchone()
                if row is not None:
                    self.samples.append((int(row[0]), int(row[1]), int(row[2]), int(row[3])))

    def stop(self) -> dict[str, Any]:
        self.halt.set()
        self.join(5)
        self.conn.close()
        n = len(self.samples) or 1
        waiting = [s[0] for s in self.samples]
        held_by_db = sum(1 for s in self.samples if s[2]) / n
        held_by_app = sum(1 for s in self.samples if s[3] and not s[2]) / n
        return {
            "lock_samples": len(self.samples),
            "lock_waiters_mean": round(sum(waiting) / n, 2),
            "lock_wait_share": round(sum(1 for w in waiting if w) / n, 3),  # samples with anyone waiting
            "active_sessions_mean": round(sum(s[1] for s in self.samples) / n, 2),
            # Share of the time the lock was held (its UPDATE or INSERT ran or had run, no COMMIT yet),
            # split by who had the turn: PostgreSQL executing, or the application (idle in transaction).
            "lock_held_share": round(held_by_db + held_by_app, 3),
            "lock_held_waiting_for_app_share": round(held_by_app, 3),
        }


def _ms(values: list[float]) -> dict[str, Any]:

    return ms_summary(values)


def writers(bench: Bench) -> None:
    """createBlog/s with 1, 2, 4, 8 concurrent writers over three instances on PostgreSQL."""
    config = bench.config
    assert bench.pool is not None and bench.publisher is not None
    if bench.postgres is None:
        bench.note("writers phases skipped: they measure PostgreSQL's counter lock (run without --sqlite)")
        return
    group = bench.instances[:3]
    bench.connect(len(group), [instance.ws_url for instance in group], [_subscription()], reconnect=False)
    bench.warm_up(len(group))
    for count in config.writer_counts:
        with bench.phase(f"writers_{count}", needs=config.writers_seconds + 40) as record:
            if record is None:
                break
            record.update(_write(bench, count, config.writers_seconds))
    bench.close_clients()
    with bench.phase("counter_lock", needs=4 * config.counter_lock_seconds + 20) as record:
        if record is not None:
            record.update(_pgbench(bench, config.counter_lock_seconds))


def _subscription() -> tuple[str, dict[str, Any]]:

    return combos(1)[0]


def _write(bench: Bench, count: int, seconds: float) -> dict[str, Any]:
    assert bench.pool is not None and bench.publisher is not None and bench.postgres is not None
    group = bench.instances[:3]
    publishers = []
    for index in range(count):
        publisher = Publisher(group[index % len(group)].url)
        publisher.token = bench.publisher.token
        publishers.append(publisher)
    done: list[tuple[str, float, float]] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def write(number: int, publisher: Publisher) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                published = publisher.publish(f"writer-{count}-{number}-{n}")
            except Exception as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}"[:200])
                continue
            with lock:
                done.append((published.blog_id, published.sent, published.answered))

    sampler = LockSampler(bench.postgres.url, "blog")
    daphne_before, pg_before = bench.server_cpu(group), tree_cpu_seconds(bench.postgres.pid)
    me_before = resource.getrusage(resource.RUSAGE_SELF)
    sampler.start()
    began = time.monotonic()
    threads = [threading.Thread(target=write, args=(i, p)) for i, p in enumerate(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    locks = sampler.stop()
    daphne = bench.server_cpu(group) - daphne_before
    pg = tree_cpu_seconds(bench.postgres.pid) - pg_before
    me_after = resource.getrusage(resource.RUSAGE_SELF)
    writers_cpu = (me_after.ru_utime - me_before.ru_utime) + (me_after.ru_stime - me_before.ru_stime)
    for publisher in publishers:
        publisher.close()
    ids = [blog_id for blog_id, _, _ in done]
    got = bench.pool.await_ids(ids, timeout=bench.config.event_timeout) if ids else {}
    delivered = sum(1 for blog_id in ids if got.get(blog_id, {}).get("count", 0) >= len(group))
    if errors:
        bench.note(f"writers_{count}: {len(errors)} createBlog failed, e.g. {errors[0]}")
    held = locks["lock_held_share"]
    return {
        # Little's law: the lock's utilisation / throughput = how long each publication holds it.
        "lock_hold_ms_estimate": round(1000 * held * wall / len(done), 2) if done and held else None,
        "writers": count,
        "instances": len(group),
        "seconds": round(wall, 2),
        "blogs": len(done),
        "blogs_per_s": round(len(done) / wall, 1),
        "errors": len(errors),
        "mutation_rtt_ms": _ms([answered - sent for _, sent, answered in done]),
        "daphne_cpu_s_per_s": round(daphne / wall, 2),
        "postgres_cpu_s_per_s": round(pg / wall, 2),
        "writers_cpu_s_per_s": round(writers_cpu / wall, 2),
        "cores": os.cpu_count(),
        "delivered_to_every_instance": delivered,
        **locks,
    }


def _pgbench(bench: Bench, seconds: float) -> dict[str, Any]:
    """The publication transaction with no application around it, on a scratch copy of its tables."""
    assert bench.postgres is not None
    postgres = bench.postgres
    client = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "blog"]
    bindir = postgres.bindir
    subprocess.run([str(bindir / "createdb"), *client, "counterbench"], check=True, capture_output=True)
    dump = subprocess.run(
        [str(bindir / "pg_dump"), *client, *(f"--table={table}" for table in TABLES), "blog"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(
        [str(bindir / "psql"), *client, "-q", "-d", "counterbench"], input=dump, check=True, capture_output=True
    )
    author = subprocess.run(
        [str(bindir / "psql"), *client, "-At", "-d", "counterbench", "-c", "SELECT min(id) FROM api_author"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    out: dict[str, Any] = {"seconds": seconds, "tables": list(TABLES)}
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    try:
        for clients in (1, 8):
            sampler = LockSampler(postgres.url.rsplit("/", 1)[0] + "/counterbench", "counterbench")
            sampler.start()
            ran = subprocess.run(
                [
                    str(bindir / "pgbench"),
                    *client,
                    *("-n", "-c", str(clients), "-j", str(min(2, clients)), "-T", str(seconds)),
                    *("-D", f"author={author}", "-f", script.name, "counterbench"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            tps = re.search(r"tps = ([\d.]+)", ran.stdout)
            latency = re.search(r"latency average = ([\d.]+) ms", ran.stdout)
            out[f"clients_{clients}"] = {
                "tps": round(float(tps.group(1)), 1) if tps else None,
                "latency_ms": float(latency.group(1)) if latency else None,
                **sampler.stop(),
            }
    finally:
        os.unlink(script.name)
        subprocess.run([str(bindir / "dropdb"), *client, "counterbench"], capture_output=True)
    return out


def failover(bench: Bench) -> None:
    """The Sentinel failover drill, several rounds, on a stack of its own."""
    config = bench.config
    needs = 30 + config.failover_rounds * 20
    with bench.phase("failover", needs=needs) as record:
        if record is None:
            return
        group = SentinelRedis()
        stack = Stack(instances=3, postgres=True, sentinel=group, env={"RATE_LIMIT_MUTATIONS": "1000000/60"})
        bench.stack.callback(stack.stop)
        began = time.monotonic()
        stack.start()
        record["setup_s"] = round(time.monotonic() - began, 1)
        try:
            drill = Drill(stack, subscribers=6, rate=config.failover_rate)
            report = asyncio.run(drill.run(config.failover_rounds))
        finally:
            stack.stop()
        summary = report.summary()
        for number, (round_summary, failover_round) in enumerate(zip(summary["rounds"], report.rounds, strict=True)):
            round_summary["readyz_503_s"] = _not_ready_seconds(report, failover_round.killed_at)
            round_summary["round"] = number + 1
        record.update(summary)
        record["timings"] = {
            "down_after_ms": group.timings.down_after_ms,
            "failover_timeout_ms": group.timings.failover_timeout_ms,
            "bound_s": delivery_bound_s(group.timings),
        }
        record["sentinel_events"] = report.sentinel_events
        record["lost_or_duplicated_or_out_of_order"] = summary["subscribers"] - summary["subscribers_complete_in_order"]


def _not_ready_seconds(report: Any, killed_at: float) -> float | None:
    """Per instance, from the kill to its first 200 after a 503; the longest."""
    longest = None
    for instance in {probe.instance for probe in report.readyz}:
        after = [p for p in report.readyz if p.instance == instance and p.at >= killed_at]
        first_503 = next((i for i, p in enumerate(after) if p.status == 503), None)
        if first_503 is None:
            continue
        back = next((p for p in after[first_503:] if p.status == 200), None)
        if back is not None:
            seconds = round(back.at - killed_at, 2)
            longest = seconds if longest is None else max(longest, seconds)
    return longest
