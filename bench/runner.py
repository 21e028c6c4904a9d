"""A benchmark run: the harness started, the chosen phases in order, the results against the targets.

The harness (bench/harness.py) starts the real processes and measures; each phase (bench/phases/)
drives one scenario through it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.harness import Bench, Config, machine
from bench.phases import fanout, instances, latency, reads, scaling, sse, versus_peer

# Cheapest and most target-relevant first: when a slow delivery path makes the run overrun its
# budget, what gets cut is the tail of the last phases.
PHASES: tuple[tuple[str, Callable[[Bench], None]], ...] = (
    ("latency", latency.latency),
    ("versus", versus_peer.versus_peer),
    ("reads", reads.reads),
    ("baseline", latency.baseline),
    ("scale", instances.scale_out),
    ("two", instances.two_instances),
    ("fresh", versus_peer.fresh_storm),
    ("fanout", fanout.fanout_and_mixed),
    ("sse", sse.sse_phases),
    ("writers", scaling.writers),
    ("failover", scaling.failover),
)


def run(bench: Bench) -> dict[str, Any]:
    bench.results["machine"] = machine()
    bench.results["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        bench.start()
        chosen = {p.strip() for p in bench.config.phases.split(",")}
        for key, phase in PHASES:
            if key in chosen:
                phase(bench)
    finally:
        bench.results["machine"]["loadavg_end"] = list(os.getloadavg())
        bench.results["duration_s"] = round(time.monotonic() - bench.began, 1)
        bench.stack.close()
    bench.results["targets"] = targets(bench.results)
    return bench.results


def _get(data: dict[str, Any], *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what this run measured (None when not measured)."""
    phases = results["phases"]
    rows: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: Any, met: bool | None, unit: str = "") -> None:
        rows.append({"target": name, "goal": goal, "measured": value, "unit": unit, "met": met})

    two = phases.get("two_instances", {})
    lat2 = phases.get("latency_2_instances", {})
    p50 = _get(two, "response_to_last_ms", "p50")
    complete = two.get("events") and two.get("events_fully_delivered") == two.get("events")
    add(
        "10k over 2 instances: every push delivered",
        "all",
        f"{two.get('events_fully_delivered')}/{two.get('events')} events" if two.get("events") else None,
        bool(complete) if two.get("events") else None,
    )
    add("10k over 2 instances: response → last push p50", "≤ 200 ms", p50, None if p50 is None else p50 <= 200, "ms")
    sent_p50 = _get(two, "sent_to_last_ms", "p50")
    # Not an issue target; it keeps the row above honest when the response itself waits for the fan-out.
    add("10k over 2 instances: mutation sent → last push p50", "(context)", sent_p50, None, "ms")
    m1 = _get(phases, "fanout_" + str(max(results["config"]["fanout_sizes"])), "server_cpu_s_per_event")
    m100 = _get(phases, f"mixed_{max(results['config']['mixed_combos'])}", "server_cpu_s_per_event")
    ratio = round(m100 / m1, 2) if m1 and m100 else None
    add(
        f"{max(results['config']['mixed_combos'])} distinct subscriptions vs 1 (CPU/event)",
        "≤ 2×",
        ratio,
        None if ratio is None else ratio <= 2,
        "×",
    )
    conn = _get(two, "connect")
    if conn:
        ok = conn["ok"]
        add(
            f"connect+subscribe {ok + conn['failed']} subscribers",
            "≤ 30 s, all",
            f"{conn['elapsed']} s, {ok} ok",
            conn["elapsed"] <= 30 and not conn["failed"],
        )
    else:
        add("connect+subscribe 10k subscribers", "≤ 30 s", None, None)
    storm = two.get("storm")
    add(
        "reconnect storm: subscriptions lost",
        "0",
        None if not storm else storm["subscriptions_lost"],
        None if not storm else storm["subscriptions_lost"] == 0,
    )
    for label, key, goal, limit in (
        ("response → push p50, 2 instances", "response_to_push_ms", "≤ 2 ms", ("p50", 2)),
        ("response → push p99, 2 instances", "response_to_push_ms", "≤ 10 ms", ("p99", 10)),
        ("sent → push p50, 2 instances", "sent_to_push_ms", "≤ 8 ms", ("p50", 8)),
    ):
        value = _get(lat2, key, limit[0])
        add(label, goal, value, None if value is None else value <= limit[1], "ms")
    big = phases.get("fanout_" + str(max(results["config"]["fanout_sizes"])), {})
    rtt = _get(big, "mutation_rtt_ms", "p50")
    add(
        f"mutation round trip p50 with {big.get('connected')} subscribers",
        "≤ 20 ms",
        rtt,
        None if rtt is None else rtt <= 20,
        "ms",
    )
    idle = phases.get("idle", {})
    for label, key, goal, ok in (
        ("idle RSS per connection", "rss_kb_per_connection", "≤ 30 KB", lambda v: v <= 30),
        # The one query idle subscribers cost: their instance's hub reads the publication counter
        # every HUB_LOG_CHECK_SECONDS (10 s) for a publication whose broadcast never happened.
        (
            "idle DB queries/s (scans of the app's tables)",
            "db_app_table_scans_per_s",
            "≤ 0.1 (one counter read per 10 s)",
            lambda v: v <= 0.1,
        ),
        ("idle CPU (s/s)", "cpu_s_per_s", "~0", lambda v: v <= 0.02),
    ):
        value = idle.get(key)
        add(label, goal, value, None if value is None else ok(value))
    for kind in ("sqlite", "postgresql"):
        versus = phases.get(f"versus_peer_{kind}", {})
        ratio = versus.get("p50_ratio")
        add(
            f"mutation sent → push p50 vs strawberry-django ({kind})",
            "≤ 0.5×",
            ratio,
            None if ratio is None else ratio <= 0.5,
            "×",
        )
        spread = _get(versus, "ours", "p99_over_p50")
        add(f"mutation sent → push p99 / p50 ({kind})", "≤ 3×", spread, None if spread is None else spread <= 3, "×")
    storm = phases.get("fresh_storm", {})
    refused = storm.get("refused")
    add(
        f"fresh instances, {storm.get('subscribers') or 'N'} subscribers connecting at once: refused",
        "0",
        refused,
        None if refused is None else refused == 0,
    )
    base = _get(phases, "scale_1", "deliveries_per_s")
    for count, factor in ((2, 1.7), (4, 3.0)):
        value = _get(phases, f"scale_{count}", "deliveries_per_s")
        ratio = round(value / base, 2) if value and base else None
        add(
            f"scale-out deliveries/s, {count} vs 1 instance",
            f"≥ {factor}×",
            ratio,
            None if ratio is None else ratio >= factor,
            "×",
        )
    return rows


def main_run(config: Config) -> dict[str, Any]:
    return run(Bench(config, log=lambda text: print(text, flush=True)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m bench")
