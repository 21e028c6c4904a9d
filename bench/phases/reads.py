"""Phase: list pages that nest, read on PostgreSQL: latency per request and statements per request.

A Daphne instance of its own on a PostgreSQL cluster of its own, with pg_stat_statements loaded:
the statements of a request are the growth of `sum(calls)` over the `blog` database (the counting
query itself left out), so they are what PostgreSQL executed, whatever the code that sent them.
The data is seeded with SQL (`reads_authors` authors, `reads_blogs_each` blogs each, 4 KB of content
per blog). `--reads-app DIR` also serves another checkout of the project (older code, say) on the
same database, and the two take turns request by request: a paired before/after comparison.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Bench, ms_summary
from stack.services import REPO_ROOT, DaphneInstance, PostgresCluster, migrate, production_env

NESTED = "blogs(first: 5) { edges { node { title } } }"
SHAPES: dict[str, tuple[str, str]] = {
    "reads_blogs": (
        "blogs with their author",
        "{ blogs(first: %d) { edges { node { title author { username } } } } }",
    ),
    "reads_blogs_nested": (
        "blogs, their author, the author's 5 latest",
        "{ blogs(first: %d) { edges { node { title author { username " + NESTED + " } } } } }",
    ),
    "reads_authors_nested": (
        "authors with their 5 latest blogs",
        "{ authors(first: %d) { edges { node { username " + NESTED + " } } } }",
    ),
}

SEED = """
INSERT INTO api_author (password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
                        date_joined, bio)
SELECT '!', false, 'reader' || lpad(i::text, 5, '0'), '', '', '', false, true, now(), 'Writes about ' || i
FROM generate_series(1, %(authors)s) AS i;
INSERT INTO api_blog (author_id, title, content, published_at)
SELECT a.id, 'A post by ' || a.username || ' #' || b, repeat('Some words of content. ', 180),
       now() - make_interval(secs => b * 10000 + a.id)
FROM api_author AS a, generate_series(1, %(blogs)s) AS b WHERE a.username LIKE 'reader%%';
ANALYZE;
"""

STATEMENTS = """
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements AS s JOIN pg_database AS d ON d.oid = s.dbid
WHERE d.datname = 'blog' AND s.query NOT LIKE '%pg_stat_statements%'
"""


class CountingPostgres(PostgresCluster):
    """A throwaway cluster that counts every statement it executes (pg_stat_statements)."""

    def _init_cluster(self) -> None:
        super()._init_cluster()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n")


def reads(bench: Bench) -> None:
    config = bench.config
    with bench.phase("reads", needs=30 + 3 * config.reads_budget) as record:
        if record is None:
            return
        import psycopg

        apps = {"this": REPO_ROOT}
        if config.reads_app:
            apps["compared"] = Path(config.reads_app)
        record.update(
            authors=config.reads_authors,
            blogs_each=config.reads_blogs_each,
            first=config.reads_first,
            counted="pg_stat_statements: sum(calls) over the blog database, per request",
        )
        if config.reads_app:
            record["compared_app"] = config.reads_app
        postgres = CountingPostgres()
        instances: dict[str, DaphneInstance] = {}
        try:
            postgres.start()
            redis_url = bench.redis.url if bench.redis else ""
            env = {**production_env(postgres.url, redis_url), "DJANGO_LOG_LEVEL": "WARNING"}
            migrate(env)
            with psycopg.connect(postgres.url, autocommit=True) as db:
                db.execute("CREATE EXTENSION pg_stat_statements")
                seed = SEED % {"authors": config.reads_authors, "blogs": config.reads_blogs_each}
                for statement in filter(str.strip, seed.split(";")):
                    db.execute(statement.encode())
            for name, app in apps.items():
                instances[name] = DaphneInstance(f"reads-{name}", env, cwd=app)
                instances[name].start()
            with psycopg.connect(postgres.url, autocommit=True) as db:
                clients = {name: httpx.Client(base_url=instance.url) for name, instance in instances.items()}
                try:
                    for key, (label, template) in SHAPES.items():
                        measured = _shape(bench, clients, db, label, template)
                        record[key] = measured["this"]
                        if "compared" in measured:
                            record.setdefault("compared", {})[key] = measured["compared"]
                finally:
                    for client in clients.values():
                        client.close()
        finally:
            for instance in instances.values():
                instance.stop()
            postgres.stop()


def _shape(
    bench: Bench, clients: dict[str, httpx.Client], db: Any, label: str, template: str
) -> dict[str, dict[str, Any]]:
    """Statements at each page size, then latency at `reads_first`, the apps' requests taking turns
    (a paired comparison: load on the shared machine drifts for both alike)."""
    config = bench.config

    def statements() -> int:
        row = db.execute(STATEMENTS).fetchone()
        return int(row[0])

    def request(http: httpx.Client, first: int) -> tuple[float, int]:
        before = statements()
        began = time.perf_counter()
        response = http.post("/graphql/", json={"query": template % first}, timeout=60)
        elapsed = time.perf_counter() - began
        executed = statements() - before
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"{label} (first: {first}): {response.status_code} {str(body)[:300]}")
        return elapsed, executed

    out: dict[str, dict[str, Any]] = {name: {"label": label, "statements": {}} for name in clients}
    for name, http in clients.items():
        for first in sorted({*config.reads_count_sizes, config.reads_first}):
            request(http, first)  # warm: the connection and the document cache
            out[name]["statements"][str(first)] = request(http, first)[1]
    times: dict[str, list[float]] = {name: [] for name in clients}
    counts: dict[str, list[int]] = {name: [] for name in clients}
    began = time.monotonic()
    turn = 0
    while len(times["this"]) < config.reads_requests and time.monotonic() - began < config.reads_budget:
        order = list(clients) if turn % 2 == 0 else list(reversed(clients))
        turn += 1
        for name in order:
            elapsed, executed = request(clients[name], config.reads_first)
            times[name].append(elapsed)
            counts[name].append(executed)
    if len(times["this"]) < config.reads_requests:
        done = len(times["this"])
        bench.note(f"{label}: {done} of {config.reads_requests} requests within {config.reads_budget:.0f}s")
    for name in clients:
        out[name]["requests"] = len(times[name])
        out[name]["statements_per_request"] = round(sum(counts[name]) / max(1, len(counts[name])), 2)
        out[name]["latency_ms"] = ms_summary(times[name])
        bench.log(
            f"   {label} ({name}): p50 {out[name]['latency_ms']['p50']} ms, p99 {out[name]['latency_ms']['p99']} ms, "
            f"{out[name]['statements_per_request']} statements per request; by page size {out[name]['statements']}"
        )
    return out
