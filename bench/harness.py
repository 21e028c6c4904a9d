"""The benchmark harness: the real processes a run measures, and the measurements every phase uses.

Topology: redis-server, a PostgreSQL cluster, up to four Daphne instances of the product
(web-1..web-4), one Daphne serving the polling baseline (bench.polling_asgi), and HAProxy
load balancers (one per phase that goes through one). Subscribers live in separate client
processes (bench.clients); this process publishes blogs over HTTP and reads CPU/RSS from /proc
and database counters from pg_stat_database.

Every phase (bench/phases/) has a time budget: when a phase runs out of it, it stops early and
records how many events it measured and whether every push arrived, instead of hanging.
"""

from __future__ import annotations

import base64
import os
import platform
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.clients import PROBE_PREFIX, ClientPool
from bench.publisher import Published, Publisher
from bench.servers import BenchHAProxy, PgCounters, PollingDaphne, cpu_seconds, raise_nofile, rss_bytes
from stack.services import DaphneInstance, PostgresCluster, RedisServer, migrate, production_env

AUTHOR = "bench"
RESERVE = 40.0  # seconds kept at the end of the run for closing sockets and stopping servers


@dataclass
class Config:
    """Sizes and budgets. `make bench` uses the defaults; `make bench-quick` uses quick()."""

    quick: bool = False
    # One client process per core: more processes cost the clients more CPU per event (fewer
    # sockets ready per epoll wake-up), CPU the servers being measured then lack.
    client_processes: int = max(2, min(8, os.cpu_count() or 2))
    connect_concurrency: int = 64
    latency_events: int = 500
    latency_budget: float = 45.0
    fanout_sizes: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    fanout_events: int = 20
    fanout_budget: float = 20.0  # per size, for the events (connecting has its own timeout)
    event_timeout: float = 30.0  # per event: give up waiting for the last push after this
    connect_timeout: float = 60.0  # per connect step
    mixed_combos: list[int] = field(default_factory=lambda: [1, 10, 100])
    resume_cursors: int = 20  # distinct `after:` values among the resuming subscribers
    mixed_events: int = 20
    mixed_budget: float = 20.0  # per combination count
    changes_events: int = 24  # blogChanged: cycles of a creation, two edits and a deletion
    changes_budget: float = 25.0
    idle_seconds: float = 30.0  # longer than the keep-alive pings (20 s and 25 s), so their cost is in it
    two_instance_subscribers: int = 10000
    two_instance_events: int = 20
    two_instance_budget: float = 20.0
    storm: bool = True
    storm_timeout: float = 60.0
    scale_instances: list[int] = field(default_factory=lambda: [1, 2, 4])
    scale_per_instance: int = 500
    scale_events: int = 10
    scale_budget: float = 20.0
    baseline_subscribers: int = 100
    baseline_events: int = 20
    baseline_budget: float = 20.0
    baseline_idle_seconds: float = 10.0
    warmup_timeout: float = 45.0
    # bench/phases/scaling.py: concurrent createBlog writers over three instances, the counter
    # lock on its own (pgbench), and Redis failovers under Sentinel.
    writer_counts: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    writers_seconds: float = 10.0
    counter_lock_seconds: int = 5
    failover_rounds: int = 4
    failover_rate: float = 10.0
    total_budget: float = 16.5 * 60.0  # later phases are skipped when the run would overrun this
    # SSE subscribers (graphql-sse over HTTP) on one instance, after the websocket fan-out (bench/sse.py).
    sse_fanout_sizes: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    # bench/phases/reads.py: nested list pages on PostgreSQL, latency and statements per request.
    reads_authors: int = 120
    reads_blogs_each: int = 10
    reads_first: int = 100
    reads_count_sizes: list[int] = field(default_factory=lambda: [5, 20])  # statements also counted at these
    reads_requests: int = 200
    reads_budget: float = 20.0  # per shape
    reads_app: str = ""  # another checkout of the project, measured in turns with this one (before/after)
    # bench/phases/versus_peer.py: mutation -> push beside strawberry-django, per database, and a
    # connect storm on freshly started instances.
    versus_events: int = 200
    fresh_storm_subscribers: int = 10000
    phases: str = "latency,versus,reads,baseline,scale,two,fresh,fanout,sse,writers,failover"  # which groups to run
    postgres: bool = True

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            client_processes=2,
            latency_events=20,
            latency_budget=15,
            fanout_sizes=[20],
            fanout_events=5,
            fanout_budget=10,
            event_timeout=10,
            connect_timeout=30,
            mixed_combos=[1, 3],
            resume_cursors=3,
            mixed_events=3,
            mixed_budget=10,
            changes_events=8,
            changes_budget=10,
            idle_seconds=1,
            two_instance_subscribers=20,
            two_instance_events=3,
            two_instance_budget=10,
            storm=True,
            storm_timeout=30,
            scale_instances=[1, 2],
            scale_per_instance=10,
            scale_events=3,
            scale_budget=10,
            baseline_subscribers=5,
            baseline_events=2,
            baseline_budget=15,
            baseline_idle_seconds=1,
            warmup_timeout=20,
            sse_fanout_sizes=[20],
            writer_counts=[1, 2],
            writers_seconds=1.5,
            counter_lock_seconds=1,
            # The failover drill has its own test (tests/test_sentinel.py); the quick run skips it.
            reads_authors=12,
            reads_blogs_each=6,
            reads_first=10,
            reads_count_sizes=[2, 5],
            reads_requests=5,
            reads_budget=10,
            versus_events=10,
            fresh_storm_subscribers=100,
            phases="latency,versus,reads,baseline,scale,two,fresh,fanout,sse,writers",
            total_budget=600,  # a loaded CI machine also builds the peer's virtualenv meanwhile
        )


def subscription(index: int = 0) -> str:
    """Distinct documents that all select the blog (so every one receives every event)."""
    extra = f" v{index}: cursor" if index else ""
    return (
        f"subscription Bench{index}($author: String) {{ blogPublished(author: $author) "
        f"{{ cursor blog {{ id title content publishedAt author {{ username }} }}{extra} }} }}"
    )


CHANGES = (
    "subscription BenchChanges($author: String) { blogChanged(author: $author) "
    "{ cursor kind blogId blog { id title content publishedAt author { username } } } }"
)

RESUMING = (
    "subscription BenchResume($author: String, $after: String) { blogPublished(author: $author, after: $after) "
    "{ cursor blog { id title content publishedAt author { username } } } }"
)


def publication_cursor(seq: int) -> str:
    """A blogPublished cursor, as notifications/publishing/log.py cursor_for makes it (bench runs without Django)."""
    return base64.urlsafe_b64encode(f"pub:{seq}".encode()).decode().rstrip("=")


def publication_seq(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().removeprefix("pub:"))


def combos(count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` distinct (document, variables) pairs; odd ones filter on the benchmark author."""
    return [(subscription(i), {"author": AUTHOR if i % 2 else None}) for i in range(count)]


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms_summary(seconds: list[float]) -> dict[str, Any]:
    """p50/p95/p99/max in milliseconds, and the sample count."""
    out: dict[str, Any] = {"n": len(seconds)}
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)):
        value = percentile(seconds, p)
        out[name] = None if value is None else round(value * 1000, 2)
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_start": list(os.getloadavg()),
    }


class Bench:
    def __init__(self, config: Config, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.results: dict[str, Any] = {"phases": {}, "notes": [], "config": asdict(config)}
        self.began = time.monotonic()
        self.stack = ExitStack()
        self.instances: list[DaphneInstance] = []
        self.redis: RedisServer | None = None
        self.postgres: PostgresCluster | None = None
        self.polling: PollingDaphne | None = None
        self.env: dict[str, str] = {}
        self.pool: ClientPool | None = None
        self.publisher: Publisher | None = None
        self.pg: PgCounters | None = None
        self.titles = 0
        self.last_rtt = 0.0

    # --- infrastructure ----------------------------------------------------------------------
    def left(self) -> float:
        return self.config.total_budget - (time.monotonic() - self.began)

    def note(self, text: str) -> None:
        self.log(f"  note: {text}")
        self.results["notes"].append(text)

    @contextmanager
    def phase(self, name: str, needs: float = 0.0) -> Iterator[dict[str, Any] | None]:
        """Time a phase and store its results; skip it when the run's budget is nearly spent."""
        if self.left() < needs:
            self.note(f"phase {name} skipped: {self.left():.0f}s of the run's budget left, it needs ~{needs:.0f}s")
            self.results["phases"][name] = {"skipped": True}
            yield None
            return
        self.log(f"== {name}")
        record: dict[str, Any] = {}
        began = time.monotonic()
        try:
            yield record
        except Exception as error:
            record["error"] = f"{type(error).__name__}: {error}"[:500]
            record["traceback"] = traceback.format_exc()[-3000:]
            if error.__context__ is not None:  # what was going on when cleanup failed too
                record["during"] = f"{type(error.__context__).__name__}: {error.__context__}"[:500]
            self.note(
                f"phase {name} failed: {record['error']}"
                + (f" (during: {record['during']})" if "during" in record else "")
            )
            if self.pool is not None:
                try:
                    self.pool.close_clients()
                except Exception:
                    self.pool.restart()
        finally:
            record["elapsed_s"] = round(time.monotonic() - began, 1)
            self.results["phases"][name] = record
            self.log(f"   {name}: {record['elapsed_s']}s")

    def start(self) -> None:
        # Service temp dirs in a directory of our own (other test runs may clean /tmp/stack-*);
        # PostgreSQL runs as `postgres` when we are root, so it must be able to traverse it.
        private_tmp = tempfile.mkdtemp(prefix="bench-")
        os.chmod(private_tmp, 0o755)
        tempfile.tempdir = private_tmp
        if not os.environ.get("STACK_KEEP_TMP"):
            self.stack.callback(shutil.rmtree, private_tmp, True)
        limit = raise_nofile(65536)
        self.results["machine"]["nofile_limit"] = list(limit)
        if limit[0] < 2 * max([*self.config.fanout_sizes, self.config.two_instance_subscribers]) + 1000:
            self.note(f"RLIMIT_NOFILE is {limit[0]} per process (hard limit, cannot be raised here)")

        began = time.monotonic()
        self.pool = ClientPool(self.config.client_processes)  # before the servers: spawn is cleanest first
        self.stack.callback(self.pool.stop)
        self.redis = RedisServer()
        self.stack.callback(self.redis.stop)
        self.redis.start()
        if self.config.postgres:
            self.postgres = PostgresCluster()
            self.stack.callback(self.postgres.stop)
            self.postgres.start()
            database_url = self.postgres.url
        else:
            database_url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-sqlite-')}/db.sqlite3"
        self.env = {
            **production_env(database_url, self.redis.url),
            "DJANGO_LOG_LEVEL": "WARNING",
            # Abuse limits, where the code has them, would throttle a benchmark: every subscriber
            # connects from 127.0.0.1 and one author publishes hundreds of blogs.
            "RATE_LIMIT_MUTATIONS": "off",
            "RATE_LIMIT_SIGN_UPS": "off",
            "RATE_LIMIT_LOG_INS": "off",
            "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": "1000000",
            "TRUSTED_PROXIES": "127.0.0.1",
        }
        migrate(self.env)
        count = max([*self.config.scale_instances, 2])
        self.instances = [DaphneInstance(f"web-{i}", self.env) for i in range(1, count + 1)]
        self.polling = PollingDaphne("polling", {k: v for k, v in self.env.items() if k != "REDIS_URL"})
        for service in (*self.instances, self.polling):
            self.stack.callback(service.stop)
        with ThreadPoolExecutor(max_workers=len(self.instances) + 1) as pool:
            list(pool.map(lambda s: s.start(), [*self.instances, self.polling]))
        self.publisher = Publisher(self.instances[0].url)
        self.stack.callback(self.publisher.close)
        self.publisher.sign_up(AUTHOR, self.env)
        for text in self.publisher.notes:
            self.note(text)
        if self.postgres is not None:
            self.pg = PgCounters(self.postgres.url)
            self.stack.callback(self.pg.close)
        self.results["setup_s"] = round(time.monotonic() - began, 1)
        self.log(
            f"   setup: {self.results['setup_s']}s ({count} instances, {self.config.client_processes} client processes)"
        )

    def close_clients(self, settle: float = 30.0) -> float:
        """Close every subscriber, then wait until the servers are done with the disconnects."""
        assert self.pool is not None
        began = time.monotonic()
        try:
            self.pool.close_clients()
        except TimeoutError as error:
            self.note(f"closing subscribers: {error}; client processes restarted")
            self.pool.restart()
        deadline = time.monotonic() + max(0.0, min(settle, self.left() - 15))
        previous = self.server_cpu()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.server_cpu()
            if now - previous < 0.05:  # under 10% of a core: quiet
                break
            previous = now
        return round(time.monotonic() - began, 1)

    def lb(self, instances: list[DaphneInstance]) -> BenchHAProxy:
        server = BenchHAProxy([i.port for i in instances])
        self.stack.callback(server.stop)  # also stopped when a phase fails before its own stop()
        server.start()
        return server

    def server_cpu(self, instances: list[DaphneInstance] | None = None) -> float:
        return sum(cpu_seconds(i.pid) for i in (instances or self.instances))

    def client_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pool.pids) if self.pool is not None else 0.0

    def title(self, prefix: str) -> str:
        self.titles += 1
        return f"{prefix}{self.titles}"

    def publish(self, prefix: str = "event-", publisher: Publisher | None = None) -> Published:
        published = (publisher or self.publisher).publish(self.title(prefix))  # type: ignore[union-attr]
        # With a slow fan-out the mutation itself can take as long as the delivery: budget for it.
        self.last_rtt = published.round_trip
        return published

    # --- measurement helpers -------------------------------------------------------------------
    def warm_up(
        self, expected: int, publisher: Publisher | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Publish probe blogs until every client received one: then all are subscribed.

        A probe is published again only when deliveries stopped growing, so a slow fan-out is
        not buried under more probes. Probe events are never part of a measurement.
        """
        assert self.pool is not None
        timeout = max(
            5.0, min(timeout or self.config.warmup_timeout, self.left() - RESERVE - self.config.event_timeout)
        )
        self.pool.call({"cmd": "probe_reset"})
        began = time.monotonic()
        probes = 0
        probed = 0
        while True:
            self.publish(PROBE_PREFIX, publisher)
            probes += 1
            last_growth = time.monotonic()
            while True:
                time.sleep(0.05)
                now = self.pool.status()["probed"]
                if now > probed:
                    probed, last_growth = now, time.monotonic()
                if probed >= expected or time.monotonic() - last_growth > 1.0 or time.monotonic() - began > timeout:
                    break
            if probed >= expected or time.monotonic() - began > timeout:
                break
        self.pool.call({"cmd": "clear"})
        result = {
            "probes": probes,
            "probed": probed,
            "expected": expected,
            "seconds": round(time.monotonic() - began, 2),
        }
        if probed < expected:
            self.note(f"warm-up: only {probed} of {expected} subscribers received a probe within {timeout:.0f}s")
        return result

    def events(
        self,
        count: int,
        budget: float,
        expected_total: int,
        *,
        instances: list[DaphneInstance] | None = None,
        publisher: Publisher | None = None,
        make: Callable[[], Published] | None = None,
    ) -> dict[str, Any]:
        """Publish one event at a time, each awaited at every subscriber (or timed out).

        `make` makes each event (an edit, a deletion...); by default a new blog.
        """
        assert self.pool is not None
        rows: list[tuple[Published, dict[str, Any]]] = []
        cpu_before = self.server_cpu(instances)
        client_cpu_before = self.client_cpu()
        began = time.monotonic()
        for _ in range(count):
            if rows and time.monotonic() - began > budget:
                break
            if self.left() < self.config.event_timeout + self.last_rtt + RESERVE:
                self.note(f"run budget: stopped after {len(rows)} events at {expected_total} subscribers")
                break
            published = make() if make is not None else self.publish(publisher=publisher)
            got = self.pool.await_ids([published.blog_id], timeout=self.config.event_timeout)[published.blog_id]
            rows.append((published, got))
        cpu = self.server_cpu(instances) - cpu_before
        client_cpu = self.client_cpu() - client_cpu_before
        wall = time.monotonic() - began
        delivered = [got["count"] for _, got in rows]
        complete = [(p, g) for p, g in rows if g["count"] >= expected_total]
        to_last = [g["max"] - p.answered for p, g in complete]
        sent_to_last = [g["max"] - p.sent for p, g in complete]
        result = {
            "subscribers": expected_total,
            "events": len(rows),
            "events_requested": count,
            "events_fully_delivered": len(complete),
            "deliveries_min": min(delivered) if delivered else 0,
            "response_to_last_ms": ms_summary(to_last),
            "sent_to_last_ms": ms_summary(sent_to_last),
            "response_to_first_ms": ms_summary([g["min"] - p.answered for p, g in rows if g["count"]]),
            "mutation_rtt_ms": ms_summary([p.round_trip for p, _ in rows]),
            "server_cpu_s_per_event": round(cpu / len(rows), 4) if rows else None,
            # The clients share the machine's cores with the servers: on 2 cores their time is in every figure.
            "client_cpu_s_per_event": round(client_cpu / len(rows), 4) if rows else None,
            "wall_s": round(wall, 1),
        }
        kinds = sorted({p.kind for p, _ in rows})
        if len(kinds) > 1:
            result["sent_to_last_ms_by_kind"] = {
                kind: ms_summary([g["max"] - p.sent for p, g in complete if p.kind == kind]) for kind in kinds
            }
        if complete:
            # One event after another, each fully delivered before the next: no backlog by construction.
            result["events_per_s_sequential"] = round(1 / statistics.median(sent_to_last), 2)
        if len(complete) < len(rows):
            self.note(
                f"{len(rows) - len(complete)} of {len(rows)} events not delivered to all {expected_total} subscribers "
                f"within {self.config.event_timeout:.0f}s (fewest: {min(delivered)})"
            )
        if len(rows) < count:
            self.note(f"{len(rows)} of {count} events measured at {expected_total} subscribers (budget {budget:.0f}s)")
        return result

    def connect(self, n: int, urls: list[str], subs: list[tuple[str, dict[str, Any]]], **kwargs: Any) -> dict[str, Any]:
        assert self.pool is not None
        kwargs.setdefault("timeout", max(10.0, min(self.config.connect_timeout, self.left() - RESERVE - 60)))
        kwargs.setdefault("concurrency", self.config.connect_concurrency)
        result = self.pool.connect(n, urls, subs, **kwargs)
        result["elapsed"] = round(result["elapsed"], 2)
        if result["failed"]:
            self.note(
                f"connect: {result['failed']} of {n} not subscribed within {kwargs['timeout']:.0f}s: {result['errors']}"
            )
        return result

    # --- phases ----------------------------------------------------------------------------------

    def idle(self, n: int, instances: list[Any], seconds: float) -> dict[str, Any]:
        """CPU/s, RSS and database transactions/s of `instances` with `n` idle subscribers."""
        pids = [i.pid for i in instances]
        # Let the last deliveries settle, and PostgreSQL's statistics: a pooled connection that
        # goes idle reports its counters up to 10 s later (PGSTAT_IDLE_INTERVAL), which would
        # count the last events' queries as idle load.
        time.sleep(11.0 if self.pg and not self.config.quick else min(2.0, seconds))
        cpu0 = sum(cpu_seconds(p) for p in pids)
        db0 = self.pg.read() if self.pg else None
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        out: dict[str, Any] = {
            "subscribers": n,
            "seconds": round(wall, 1),
            "cpu_s_per_s": round(cpu / wall, 4),
            "rss_mb": round(sum(rss_bytes(p) for p in pids) / 2**20, 1),
        }
        if self.pg and db0:
            delta = PgCounters.delta(db0, self.pg.read())
            out["db_xacts_per_s"] = round(delta["xacts"] / wall, 1)
            out["db_app_table_scans_per_s"] = round(delta["app_scans"] / wall, 1)
            out["db_tuples_returned_per_s"] = round(delta["tup_returned"] / wall, 1)
        return out

    def resumed(self, connected: int, web1: DaphneInstance) -> dict[str, Any]:
        """Every subscriber resubscribes with `after:` one of the latest cursors, as clients do after a
        reconnect storm; `after` is not part of the cohort key, so this costs what one cohort costs."""
        assert self.pool is not None
        began = time.monotonic()
        latest = httpx.post(f"{web1.url}/graphql/", json={"query": "{ latestCursor }"}, timeout=30)
        seq = publication_seq(latest.json()["data"]["latestCursor"])
        cursors = [publication_cursor(max(0, seq - k)) for k in range(self.config.resume_cursors)]
        self.pool.resubscribe([(RESUMING, {"author": None, "after": cursor}) for cursor in cursors])
        out: dict[str, Any] = {"warm_up": self.warm_up(connected)}
        self.pool.complete_old()
        time.sleep(1.0)
        self.pool.call({"cmd": "clear"})
        out["resubscribe_s"] = round(time.monotonic() - began, 1)
        out["distinct_after_cursors"] = len(set(cursors))
        out.update(self.events(self.config.mixed_events, self.config.mixed_budget, connected, instances=[web1]))
        return out

    def storm(self, victim: DaphneInstance, connected: int) -> dict[str, Any]:
        assert self.pool is not None
        on_victim = self.pool.status()["instances"].get(victim.name, 0)
        self.log(f"   killing {victim.name} with {on_victim} subscribers")
        killed_at = time.monotonic()
        victim.kill()
        deadline = killed_at + self.config.storm_timeout
        status = self.pool.status()
        while time.monotonic() < deadline:
            status = self.pool.status()
            if status["alive"] >= connected and status["reconnected"] >= on_victim:
                break
            time.sleep(0.2)
        reconnect_s = time.monotonic() - killed_at
        result: dict[str, Any] = {
            "killed": victim.name,
            "subscribers_on_killed": on_victim,
            "reconnected": status["reconnected"],
            "alive_after": status["alive"],
            "reconnect_all_s": round(reconnect_s, 1),
        }
        # The protocols say nothing about when a subscription is active: a second event, a moment
        # later, tells a subscription that was late from one that is lost.
        result["second_event_received"] = None  # published only when the first missed someone
        for label in ("next_event", "second_event"):
            time.sleep(1.0)
            # Clients still reconnecting when an event is published cannot receive it: they are late,
            # not lost. Lost = connected and subscribed before the event, yet never received it.
            alive = self.pool.status()["alive"]
            published = self.publish()
            got = self.pool.await_ids([published.blog_id], timeout=self.config.event_timeout)[published.blog_id]
            result[f"{label}_received"] = got["count"]
            result[f"{label}_subscribed_before"] = alive
            if got["count"] >= connected:
                break
        label = "second_event" if result["second_event_received"] is not None else "next_event"
        result["subscriptions_lost"] = max(0, result[f"{label}_subscribed_before"] - result[f"{label}_received"])
        result["not_reconnected_in_time"] = connected - result[f"{label}_subscribed_before"]
        return result

    def burst(self, count: int, expected: int, instances: list[DaphneInstance]) -> dict[str, Any]:
        """Publish `count` events back to back, then wait for all deliveries: a saturated throughput."""
        assert self.pool is not None
        cpu0 = self.server_cpu(instances)
        published = []
        began = time.monotonic()
        for _ in range(count):
            published.append(self.publish())
            if time.monotonic() - began > self.config.scale_budget:
                break
        ids = [p.blog_id for p in published]
        got = self.pool.await_ids(ids, timeout=self.config.event_timeout + self.config.scale_budget)
        cpu = self.server_cpu(instances) - cpu0
        deliveries = sum(g["count"] for g in got.values())
        last = max((g["max"] for g in got.values() if g["count"]), default=published[0].sent)
        span = last - published[0].sent
        return {
            "events": len(published),
            "deliveries": deliveries,
            "deliveries_expected": expected * len(published),
            "span_s": round(span, 2),
            "deliveries_per_s": round(deliveries / span, 1) if span > 0 else None,
            "server_cpu_s": round(cpu, 2),
            "mutation_rtt_ms": ms_summary([p.round_trip for p in published]),
        }
