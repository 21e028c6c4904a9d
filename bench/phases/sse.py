"""Phase: fan-out to graphql-sse subscribers (one HTTP stream each), beside the websocket rows."""

from __future__ import annotations

from bench.harness import (
    RESERVE,
    Bench,
    combos,
)
from bench.servers import rss_bytes
from bench.sse import SSE


def sse_phases(bench: Bench) -> None:
    """SSE subscribers on a fresh web-1: fan-out at growing sizes, then what idle streams cost."""

    assert bench.pool is not None and bench.publisher is not None
    web1 = bench.instances[0]
    url = f"{web1.url}/graphql/"
    web1.restart()  # a fresh heap, as for the websocket rows
    bench.publisher.reconnect()
    bench.connect(1, [url], combos(1), protocol=SSE)  # lazy imports are not counted per stream
    bench.warm_up(1)
    bench.close_clients()
    rss_empty = rss_bytes(web1.pid)
    connected = 0
    for size in bench.config.sse_fanout_sizes:
        with bench.phase(f"sse_fanout_{size}", needs=(30 if not connected else 60) + RESERVE) as record:
            if record is None:
                break
            record["protocol"] = SSE
            record["connect"] = bench.connect(size - connected, [url], combos(1), protocol=SSE)
            connected = bench.pool.status()["alive"]
            record["connected"] = connected
            record["warm_up"] = bench.warm_up(connected)
            record.update(
                bench.events(bench.config.fanout_events, bench.config.fanout_budget, connected, instances=[web1])
            )
    if not connected:
        return
    with bench.phase("sse_idle", needs=bench.config.idle_seconds + 5 + RESERVE) as record:
        if record is not None:
            record.update(bench.idle(connected, [web1], bench.config.idle_seconds))
            record["protocol"] = SSE
            record["empty_instance_rss_mb"] = round(rss_empty / 2**20, 1)
            record["rss_kb_per_connection"] = round((rss_bytes(web1.pid) - rss_empty) / 1024 / connected, 1)
    with bench.phase("close_sse_clients", needs=-1e9) as record:
        if record is not None:
            record["close_and_settle_s"] = bench.close_clients()
