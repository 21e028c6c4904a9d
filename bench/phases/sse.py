"""Phase: fan-out to graphql-sse subscribers (one HTTP stream each), beside the websocket rows."""

from __future__ import annotations

from bench.harness import (
    Bench,
)
from bench.phases.fanout import fan_out_to_sizes
from bench.sse import SSE


def sse_phases(bench: Bench) -> None:
    """SSE subscribers on a fresh web-1: fan-out at growing sizes, then what idle streams cost."""

    connected = fan_out_to_sizes(
        bench, f"{bench.instances[0].url}/graphql/", bench.config.sse_fanout_sizes, protocol=SSE, prefix="sse_"
    )
    if not connected:
        return
    with bench.phase("close_sse_clients", needs=-1e9) as record:
        if record is not None:
            record["close_and_settle_s"] = bench.close_clients()
