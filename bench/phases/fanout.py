"""Phase: fan-out to thousands of websocket subscribers on one instance, then mixed and resumed
subscriptions, then edits and deletions (blogChanged) to the same subscribers."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import (
    RESERVE,
    Bench,
    combos,
)
from bench.phases.changes import changes
from bench.servers import rss_bytes


def fanout_and_mixed(bench: Bench) -> None:
    """Subscribers on web-1 (direct): fan-out at growing sizes, idle cost, then mixed subscriptions."""
    assert bench.pool is not None
    web1 = bench.instances[0]
    connected = fan_out_to_sizes(bench, web1.ws_url, bench.config.fanout_sizes)
    if not connected:
        return
    mixed: dict[int, Any] = {}
    for count in bench.config.mixed_combos:
        if count == 1 and f"fanout_{bench.config.fanout_sizes[-1]}" in bench.results["phases"]:
            # One combination is exactly the last fan-out step: same clients, same document.
            mixed[1] = {**bench.results["phases"][f"fanout_{bench.config.fanout_sizes[-1]}"], "reused": "fanout"}
            continue
        with bench.phase(f"mixed_{count}", needs=45 + RESERVE) as record:
            if record is None:
                break
            began = time.monotonic()
            # New operations first; the old ones are completed only once every new one is live
            # (see bench.clients.Client.resubscribe).
            bench.pool.resubscribe(combos(count))
            record["warm_up"] = bench.warm_up(connected)
            bench.pool.complete_old()
            time.sleep(1.0)
            bench.pool.call({"cmd": "clear"})
            record["resubscribe_s"] = round(time.monotonic() - began, 1)
            record["distinct_subscriptions"] = count
            record.update(
                bench.events(bench.config.mixed_events, bench.config.mixed_budget, connected, instances=[web1])
            )
            mixed[count] = record
    with bench.phase("resumed", needs=45 + RESERVE) as record:
        if record is not None:
            record.update(bench.resumed(connected, web1))
    with bench.phase("changes", needs=45 + RESERVE) as record:
        if record is not None:
            record.update(changes(bench, connected, web1))
    with bench.phase("close_fanout_clients", needs=-1e9) as record:
        if record is not None:
            record["close_and_settle_s"] = bench.close_clients()


def fan_out_to_sizes(bench: Bench, url: str, sizes: list[int], *, protocol: str | None = None, prefix: str = "") -> int:
    """On a fresh web-1: subscribers at `url` at growing `sizes` (a row each), then what they cost
    idle (rows `<prefix>fanout_<size>` and `<prefix>idle`). Returns how many are connected at the end."""
    assert bench.pool is not None and bench.publisher is not None
    web1 = bench.instances[0]
    over = {"protocol": protocol} if protocol else {}
    # A fresh process: earlier phases grew its heap, and freed memory is reused, not returned,
    # which would hide the new connections' RSS.
    web1.restart()
    bench.publisher.reconnect()
    # One subscriber and one event first, so lazy imports are not counted per connection.
    bench.connect(1, [url], combos(1), **over)
    bench.warm_up(1)
    bench.close_clients()
    rss_empty = rss_bytes(web1.pid)
    connected = 0
    for size in sizes:
        with bench.phase(f"{prefix}fanout_{size}", needs=(30 if not connected else 60) + RESERVE) as record:
            if record is None:
                break
            record.update(over)
            record["connect"] = bench.connect(size - connected, [url], combos(1), **over)
            connected = bench.pool.status()["alive"]
            record["connected"] = connected
            record["warm_up"] = bench.warm_up(connected)
            record.update(
                bench.events(bench.config.fanout_events, bench.config.fanout_budget, connected, instances=[web1])
            )
    if not connected:
        return 0
    with bench.phase(f"{prefix}idle", needs=bench.config.idle_seconds + 5 + RESERVE) as record:
        if record is not None:
            record.update(bench.idle(connected, [web1], bench.config.idle_seconds))
            record.update(over)
            record["empty_instance_rss_mb"] = round(rss_empty / 2**20, 1)
            record["rss_kb_per_connection"] = round((rss_bytes(web1.pid) - rss_empty) / 1024 / connected, 1)
    return connected
