"""Phases: the project side by side with strawberry-django, and a connect storm on fresh instances.

versus_peer_<db>: one mutation, one subscriber, the path every user feels. A client sends
`createBlog` over HTTP to one instance while one websocket subscriber listens on another, Redis
between them; one mutation at a time, each awaited at the subscriber. The same for the peer
(bench/peer/: strawberry-django over the same Channels, Daphne, channels-redis and Redis, in a
virtualenv of its own created here from its pinned requirements). The two sides take turns
mutation by mutation, each with its own subscriber connected throughout (a client process of its
own), so that both meet the same machine: this machine's speed drifts over seconds, and blocks
of mutations would hand a slow stretch to one side only. On SQLite (both on their defaults) and
on PostgreSQL.

The project runs with its production rate limits counted, in Redis, as a user's requests are
(the per-author limit takes a reserve of attempts from the shared count at a time,
api/ratelimit.py); the peer has none.

fresh_storm: two instances started for the phase, and at once many subscribers through HAProxy, as
after a deploy. Reported: how many were refused (closed, or never subscribed) and the time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench.clients import PROBE_PREFIX, ClientPool
from bench.harness import Bench, combos, ms_summary
from bench.publisher import Publisher
from stack.services import REPO_ROOT, DaphneInstance, migrate, production_env, start_all

PEER_DIR = REPO_ROOT / "bench" / "peer"
PEER_VENV = PEER_DIR / ".venv"
PEER_REQUIREMENTS = PEER_DIR / "requirements.txt"


def peer_python(log: Any = print) -> Path:
    """The peer's interpreter; its virtualenv is (re)built from PyPI when missing or stale."""
    digest = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()
    marker = PEER_VENV / ".requirements.sha256"
    python = PEER_VENV / "bin" / "python"
    if python.exists() and marker.exists() and marker.read_text() == digest:
        return python
    log(f"   creating the peer's virtualenv ({PEER_VENV.relative_to(REPO_ROOT)})")
    shutil.rmtree(PEER_VENV, ignore_errors=True)
    # Without a pip of its own (installed into it by this interpreter's pip), and without
    # compiling every module up front: the peer compiles what it imports when it first runs.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(PEER_VENV)], check=True, timeout=300)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "-q"),
            *("--no-compile", "--disable-pip-version-check", "-r", str(PEER_REQUIREMENTS)),
        ],
        check=True,
        timeout=900,
    )
    marker.write_text(digest)
    return python


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _peer_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "peer_site.settings",
        "PYTHONPATH": str(PEER_DIR),
    }


class PeerDaphne(DaphneInstance):
    """Daphne serving the peer, from the peer's own virtualenv."""

    def __init__(self, name: str, env: dict[str, str], python: Path) -> None:
        super().__init__(name, env, cwd=PEER_DIR)
        self.python = python

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTHON"))}
        env |= {**self.env, "PYTHONUNBUFFERED": "1"}
        command = [str(self.python), "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(self.port)]
        self._spawn([*command, "peer_site.asgi:application"], env=env, cwd=self.cwd)
        self._wait_ready(lambda: _listening(self.port), "the peer listening")


def _peer_migrate(python: Path, env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTHON"))}
    subprocess.run(
        [str(python), "manage.py", "migrate", "--run-syncdb", "-v", "0"],
        cwd=PEER_DIR,
        env={**clean, **env},
        check=True,
        timeout=300,
        capture_output=True,
    )


def _create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _probe(bench: Bench, pool: ClientPool, publisher: Publisher, timeout: float = 30) -> bool:
    """Publish probes until the pool's one subscriber got one (it is subscribed then)."""
    pool.call({"cmd": "probe_reset"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bench.publish(PROBE_PREFIX, publisher)
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            if pool.status()["probed"] >= 1:
                pool.call({"cmd": "clear"})
                return True
            time.sleep(0.02)
    return False


def _subscribe(bench: Bench, pool: ClientPool, publisher: Publisher, ws_url: str) -> None:
    pool.connect(1, [ws_url], combos(1), timeout=30)
    if not _probe(bench, pool, publisher):
        raise RuntimeError(f"the subscriber on {ws_url} never received a probe")


def _measure_one(bench: Bench, pool: ClientPool, publisher: Publisher, rows: dict[str, list[float]]) -> None:
    published = bench.publish(publisher=publisher)
    got = pool.await_ids([published.blog_id], timeout=5)[published.blog_id]
    rows["rtt"].append(published.round_trip)
    if got["count"]:
        rows["sent"].append(got["max"] - published.sent)
        rows["answered"].append(got["max"] - published.answered)
    else:
        rows["lost"].append(1.0)


def _summary(rows: dict[str, list[float]]) -> dict[str, Any]:
    sent = ms_summary(rows["sent"])
    p50, p99 = sent.get("p50"), sent.get("p99")
    return {
        "events": len(rows["rtt"]),
        "delivered": len(rows["sent"]),
        "sent_to_push_ms": sent,
        "response_to_push_ms": ms_summary(rows["answered"]),
        "mutation_rtt_ms": ms_summary(rows["rtt"]),
        "p99_over_p50": round(p99 / p50, 2) if p50 and p99 else None,
    }


def versus_peer(bench: Bench) -> None:
    assert bench.redis is not None and bench.pool is not None
    python = peer_python(bench.log)
    kinds = ["sqlite"] + (["postgresql"] if bench.postgres is not None else [])
    for kind in kinds:
        with bench.phase(f"versus_peer_{kind}", needs=40) as record:
            if record is None:
                continue
            if kind == "sqlite":
                folder = Path(tempfile.mkdtemp(prefix="versus-"))
                ours_db, peer_db = f"sqlite:///{folder}/ours.sqlite3", f"sqlite:///{folder}/peer.sqlite3"
            else:
                assert bench.postgres is not None
                ours_db = _create_database(bench.postgres.url, f"versus_ours_{int(time.time())}")
                peer_db = _create_database(bench.postgres.url, f"versus_peer_{int(time.time())}")
            redis_base = bench.redis.url.rsplit("/", 1)[0]
            ours_env = {
                **production_env(ours_db, f"{redis_base}/2"),
                "DJANGO_LOG_LEVEL": "WARNING",
                # Counted in Redis as in production, never refusing the benchmark.
                "RATE_LIMIT_MUTATIONS": "1000000/60",
                "RATE_LIMIT_SIGN_UPS": "off",
                "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": "1000000",
            }
            peer_env = _peer_env(peer_db, f"{redis_base}/3")
            migrate(ours_env)
            _peer_migrate(python, peer_env)
            ours = [DaphneInstance(f"ours-{kind}-{i}", ours_env) for i in (1, 2)]
            peers = [PeerDaphne(f"peer-{kind}-{i}", peer_env, python) for i in (1, 2)]
            for service in (*ours, *peers):
                bench.stack.callback(service.stop)
            try:
                with ThreadPoolExecutor(max_workers=4) as starting:  # side by side; each its own start()
                    list(starting.map(lambda service: service.start(), [*ours, *peers]))
                publishers = {"ours": Publisher(ours[0].url), "peer": Publisher(peers[0].url)}
                publishers["ours"].sign_up("versus", ours_env)
                publishers["peer"].sign_up("versus", peer_env)
                rows: dict[str, dict[str, list[float]]] = {
                    side: {"rtt": [], "sent": [], "answered": [], "lost": []} for side in publishers
                }
                subscriber_urls = {"ours": ours[1].ws_url, "peer": peers[1].ws_url}
                pools = {side: ClientPool(1) for side in publishers}
                for pool in pools.values():
                    bench.stack.callback(pool.stop)
                for side, pool in pools.items():
                    _subscribe(bench, pool, publishers[side], subscriber_urls[side])
                for turn in range(bench.config.versus_events):
                    # Who goes first alternates too: neither side always follows the other's mutation.
                    for side in ("ours", "peer") if turn % 2 == 0 else ("peer", "ours"):
                        _measure_one(bench, pools[side], publishers[side], rows[side])
                for pool in pools.values():
                    pool.close_clients()
                    pool.stop()
                for publisher in publishers.values():
                    publisher.close()
                record["ours"] = _summary(rows["ours"])
                record["peer"] = _summary(rows["peer"])
                ours_p50 = record["ours"]["sent_to_push_ms"].get("p50")
                peer_p50 = record["peer"]["sent_to_push_ms"].get("p50")
                record["p50_ratio"] = round(ours_p50 / peer_p50, 3) if ours_p50 and peer_p50 else None
                record["mutations_to"] = "instance 1 (HTTP)"
                record["subscriber_on"] = "instance 2 (websocket, graphql-transport-ws)"
            finally:
                for service in (*ours, *peers):
                    service.stop()


def fresh_storm(bench: Bench) -> None:
    """Subscribers connect through HAProxy to two instances started a moment ago."""
    assert bench.pool is not None
    n = bench.config.fresh_storm_subscribers
    with bench.phase("fresh_storm", needs=60) as record:
        if record is None:
            return
        fresh = [DaphneInstance(f"fresh-{i}", bench.env) for i in (1, 2)]
        for service in fresh:
            bench.stack.callback(service.stop)
        try:
            start_all(fresh)  # each answers /healthz: serving, and its hub starting or started
            lb = bench.lb(fresh)
            try:
                got = bench.connect(n, [lb.ws_url], combos(1), concurrency=max(64, n // 10), reconnect=False)
                publisher = Publisher(fresh[0].url)
                publisher.token = bench.publisher.token if bench.publisher is not None else None
                warm = bench.warm_up(n, publisher=publisher)
                publisher.close()
                record.update(
                    {
                        "subscribers": n,
                        "connect_s": got["elapsed"],
                        "subscribed_and_received": warm["probed"],
                        "refused": n - warm["probed"],
                        "connect_errors": got["errors"],
                        "instances": got["instances"],
                    }
                )
            finally:
                bench.close_clients(settle=10)
                lb.stop()
        finally:
            for service in fresh:
                service.stop()
