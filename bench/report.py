"""Results as Markdown: the tables printed by `make bench`, saved beside the JSON and put in docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


def _v(value: Any, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{suffix}"


def _g(data: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ratio(slow: Any, fast: Any) -> str:
    if not slow or not fast or fast <= 0:
        return "–"
    return f"{slow / fast:,.0f}×" if slow / fast >= 10 else f"{slow / fast:.1f}×"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    phases = results.get("phases", {})
    m = results.get("machine", {})
    out = [
        f"Run {results.get('started', '?')}, {results.get('duration_s', '?')} s in all"
        f"{' (quick sizes: a smoke run, not figures)' if _g(results, 'config', 'quick') else ''}. "
        f"Machine: {m.get('cores')} cores ({m.get('cpu_model') or 'unknown CPU'}), {m.get('memory_gib')} GiB, "
        f"Python {m.get('python')}, RLIMIT_NOFILE {(_g(m, 'nofile_limit') or ['?'])[0]}, "
        f"load average {', '.join(f'{x:.1f}' for x in m.get('loadavg_start', []))} at start "
        "(the machine is shared: compare medians and ratios, not single times).",
        "",
        "**Latency**, one subscriber, one event at a time (ms; *response → push* is negative when the push "
        "arrives before the mutation's HTTP response):",
        "",
    ]
    rows: list[list[Any]] = []
    for name, label in (
        ("latency_1_instance", "push, 1 instance"),
        ("latency_2_instances", "push, subscriber on the other instance via the balancer"),
        ("baseline_polling", "BASELINE: seed's 1 s DB polling"),
    ):
        r = phases.get(name, {})
        rows.append(
            [
                label,
                _v(r.get("events")),
                _v(_g(r, "sent_to_push_ms", "p50")),
                _v(_g(r, "sent_to_push_ms", "p95")),
                _v(_g(r, "sent_to_push_ms", "p99")),
                _v(_g(r, "response_to_push_ms", "p50")),
                _v(_g(r, "response_to_push_ms", "p95")),
                _v(_g(r, "response_to_push_ms", "p99")),
                _v(_g(r, "mutation_rtt_ms", "p50")),
            ]
        )
    out += _table(
        ["path", "events", "sent→push p50", "p95", "p99", "response→push p50", "p95", "p99", "mutation RTT p50"], rows
    )

    base = phases.get("baseline_polling", {})
    ours = phases.get("latency_1_instance", {})
    idle = phases.get("idle", {})
    base_p50, ours_p50 = _g(base, "sent_to_push_ms", "p50"), _g(ours, "sent_to_push_ms", "p50")
    out += [
        f"**Push vs the polling baseline**: sent → push p50 {_v(ours_p50, ' ms')} vs "
        f"{_v(base_p50, ' ms')} (**{_ratio(base_p50, ours_p50)} faster**); "
        f"idle DB queries/s (scans of the app's tables): {_v(idle.get('db_app_table_scans_per_s'))} with "
        f"{_v(idle.get('subscribers'))} subscribers vs {_v(_g(base, 'idle', 'db_app_table_scans_per_s'))} with "
        f"{_v(base.get('subscribers'))} polling subscribers ({_v(_g(base, 'idle', 'db_xacts_per_s'))} transactions/s, "
        f"{_v(_g(base, 'idle', 'db_tuples_returned_per_s'))} tuples read/s); "
        f"idle CPU {_v(idle.get('cpu_s_per_s'))} s/s vs "
        f"{_v(_g(base, 'idle', 'cpu_s_per_s'))} s/s.",
        "",
        "**Fan-out**, one event at a time to every subscriber "
        "(times in ms; CPU = Daphne user+system seconds per event):",
        "",
    ]
    rows = []
    fan = sorted(
        (int(k.split("_")[1]), v) for k, v in phases.items() if re.fullmatch(r"fanout_\d+", k) and not v.get("skipped")
    )
    two = phases.get("two_instances", {})
    two_rows = (
        [(f"{_v(two.get('subscribers'))} over 2 instances via HAProxy", two)] if two and not two.get("skipped") else []
    )
    for label, r in [(f"{n:,} on 1 instance", r) for n, r in fan] + two_rows:
        rows.append(
            [
                label,
                _v(r.get("connected")),
                f"{_v(r.get('events'))}/{_v(r.get('events_requested'))}",
                f"{_v(r.get('events_fully_delivered'))}",
                _v(_g(r, "response_to_last_ms", "p50")),
                _v(_g(r, "response_to_last_ms", "max")),
                _v(_g(r, "sent_to_last_ms", "p50")),
                _v(_g(r, "mutation_rtt_ms", "p50")),
                _v(r.get("server_cpu_s_per_event")),
                _v(r.get("events_per_s_sequential")),
                _v(_g(r, "connect", "elapsed")),
            ]
        )
    out += _table(
        [
            "subscribers",
            "connected",
            "events",
            "all delivered",
            "response→last p50",
            "max",
            "sent→last p50",
            "mutation RTT p50",
            "CPU s/event",
            "events/s (one at a time)",
            "connect s",
        ],
        rows,
    )

    out += _sse(phases, dict(fan), idle)

    big = fan[-1][1] if fan else {}
    base_cpu = big.get("server_cpu_s_per_event")

    def mixed_row(label: Any, r: dict[str, Any]) -> list[Any]:
        cpu = r.get("server_cpu_s_per_event")
        return [
            label,
            _v(r.get("connected") or r.get("subscribers")),
            f"{_v(r.get('events'))}",
            _v(r.get("events_fully_delivered")),
            _v(_g(r, "response_to_last_ms", "p50")),
            _v(_g(r, "sent_to_last_ms", "p50")),
            _v(cpu),
            f"{cpu / base_cpu:.2f}×" if cpu and base_cpu else "–",
        ]

    rows = [
        mixed_row(count, big if count == 1 else phases.get(f"mixed_{count}", {}))
        for count in (_g(results, "config", "mixed_combos") if big else None) or []
    ]
    resumed = phases.get("resumed", {})
    if resumed and not resumed.get("skipped"):
        cursors = _v(resumed.get("distinct_after_cursors"))
        rows.append(mixed_row(f"1, every subscriber with `after:` ({cursors} distinct cursors)", resumed))
    changed = phases.get("changes", {})
    if changed and not changed.get("skipped"):
        rows.append(mixed_row("1, `blogChanged`: creations, edits and deletions (1:2:1)", changed))
    if rows:
        out += [
            "**Mixed subscriptions** on one instance (distinct (document, variables) pairs; 1 = the last fan-out row):",
            "",
        ]
        out += _table(
            [
                "distinct",
                "subscribers",
                "events",
                "all delivered",
                "response→last p50",
                "sent→last p50",
                "CPU s/event",
                "CPU vs 1",
            ],
            rows,
        )

    if idle and not idle.get("skipped"):
        out += [
            f"**Idle**, {_v(idle.get('subscribers'))} subscribers on one instance for {_v(idle.get('seconds'))} s: "
            f"RSS {_v(idle.get('rss_kb_per_connection'))} KB per connection ({_v(idle.get('rss_mb'))} MB in all, "
            f"{_v(idle.get('empty_instance_rss_mb'))} MB empty), CPU {_v(idle.get('cpu_s_per_s'))} s/s, "
            f"DB: {_v(idle.get('db_app_table_scans_per_s'))} app-table scans/s, "
            f"{_v(idle.get('db_xacts_per_s'))} transactions/s (any client, autovacuum included).",
            "",
        ]

    storm = two.get("storm") if two else None
    if storm:
        out += [
            f"**Reconnect storm**: {storm['killed']} killed with {_v(storm['subscribers_on_killed'])} subscribers; "
            f"{_v(storm['reconnected'])} reconnected through the balancer in {_v(storm['reconnect_all_s'])} s; "
            f"the next event reached {_v(storm['next_event_received'])}"
            + (
                f", the one after {_v(storm['second_event_received'])}"
                if storm.get("second_event_received") is not None
                else ""
            )
            + f" of {_v(two.get('connected'))}: **{_v(storm['subscriptions_lost'])} subscriptions lost** "
            f"(subscribed before the event but never received it; {_v(storm.get('not_reconnected_in_time'))} "
            "still reconnecting, not counted).",
            "",
        ]

    rows = []
    scale = sorted(
        (int(k.split("_")[1]), v) for k, v in phases.items() if re.fullmatch(r"scale_\d+", k) and not v.get("skipped")
    )
    one = scale[0][1].get("deliveries_per_s") if scale else None
    for count, r in scale:
        rows.append(
            [
                count,
                _v(r.get("subscribers")),
                _v(r.get("events")),
                f"{_v(r.get('deliveries'))}/{_v(r.get('deliveries_expected'))}",
                _v(r.get("deliveries_per_s")),
                f"{r['deliveries_per_s'] / one:.2f}×" if one and r.get("deliveries_per_s") else "–",
            ]
        )
    if rows:
        out += ["**Scale-out** behind HAProxy, fixed subscribers per instance, a burst of events back to back:", ""]
        out += _table(["instances", "subscribers", "events", "delivered", "deliveries/s", "vs 1"], rows)

    out += _scaling(phases)
    out += _reads(phases)
    out += _versus(phases)

    rows = []
    for t in results.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured" if t["goal"] != "(context)" else ""}[t["met"]]
        unit = "" if t["measured"] is None or not t["unit"] else t["unit"] if t["unit"] == "×" else f" {t['unit']}"
        rows.append([t["target"], t["goal"], _v(t["measured"], unit), met])
    if rows:
        out += ["**Targets**:", "", *_table(["target", "goal", "measured", "met"], rows)]

    durations = ", ".join(f"{name} {v.get('elapsed_s')} s" for name, v in phases.items() if "elapsed_s" in v)
    out += [f"Phase durations: setup {results.get('setup_s')} s, {durations}.", ""]
    if results.get("notes"):
        out += ["Notes:", ""] + [f"- {note}" for note in results["notes"]] + [""]
    return "\n".join(out)


def _reads(phases: dict[str, Any]) -> list[str]:
    reads = phases.get("reads", {})
    shapes = [value for value in reads.values() if isinstance(value, dict) and "statements" in value]
    if not shapes:
        return []
    sizes = sorted({int(size) for shape in shapes for size in shape["statements"]})
    compared = reads.get("compared", {})
    shapes += [{**shape, "label": f"{shape['label']}, `--reads-app`"} for shape in compared.values()]
    rows = [
        [
            shape["label"],
            _v(shape.get("requests")),
            _v(_g(shape, "latency_ms", "p50")),
            _v(_g(shape, "latency_ms", "p99")),
            _v(shape.get("statements_per_request")),
            " / ".join(_v(shape["statements"].get(str(size))) for size in sizes),
        ]
        for shape in shapes
    ]
    return [
        f"**Reads** on PostgreSQL ({_v(reads.get('authors'))} authors, {_v(reads.get('blogs_each'))} blogs each, "
        f"one request at a time, `first: {reads.get('first')}`); statements counted by PostgreSQL "
        "(pg_stat_statements), per request"
        + (f"; `--reads-app` rows: {reads['compared_app']}, requests taking turns with this code" if compared else "")
        + ":",
        "",
        *_table(
            [
                "list page",
                "requests",
                "p50 ms",
                "p99 ms",
                "statements",
                "statements at first: " + " / ".join(str(size) for size in sizes),
            ],
            rows,
        ),
    ]


def _versus(phases: dict[str, Any]) -> list[str]:
    """One mutation, one subscriber on another instance, beside strawberry-django; the fresh-instance storm."""
    names = [(kind, f"versus_peer_{kind}") for kind in ("sqlite", "postgresql")]
    runs = [(kind, phases[name]) for kind, name in names if name in phases]
    rows = []
    for kind, r in runs:
        for side, label in (("ours", "this project"), ("peer", "strawberry-django")):
            s = r.get(side) or {}
            rows.append(
                [
                    kind,
                    label,
                    _v(s.get("events")),
                    _v(_g(s, "sent_to_push_ms", "p50")),
                    _v(_g(s, "sent_to_push_ms", "p95")),
                    _v(_g(s, "sent_to_push_ms", "p99")),
                    _v(s.get("p99_over_p50"), "×"),
                    _v(_g(s, "mutation_rtt_ms", "p50")),
                ]
            )
    out: list[str] = []
    if rows:
        out += [
            "**Versus strawberry-django**, same Channels, Daphne, channels-redis and Redis, in the same run, the two "
            "taking turns mutation by mutation: `createBlog` over HTTP to one instance, the push on a websocket "
            "subscribed on another, one mutation at a time (ms; this project counts its per-author rate limit in "
            "Redis, a reserve of attempts at a time):",
            "",
            *_table(
                ["database", "server", "events", "sent→push p50", "p95", "p99", "p99/p50", "mutation RTT p50"], rows
            ),
        ]
    storm = phases.get("fresh_storm")
    if storm and not storm.get("skipped"):
        out += [
            f"**Fresh-instance connect storm**: {_v(storm.get('subscribers'))} subscribers through HAProxy to two "
            f"instances started a moment before: {_v(storm.get('refused'))} refused, "
            f"{_v(storm.get('subscribed_and_received'))} subscribed and received the next event; connecting took "
            f"{_v(storm.get('connect_s'), ' s')}.",
            "",
        ]
    return out


def _pct(share: Any) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"


def _scaling(phases: dict[str, Any]) -> list[str]:
    """Concurrent writers, the counter lock alone, Redis failovers."""
    out: list[str] = []
    writers = sorted(
        (int(k.split("_")[1]), v) for k, v in phases.items() if re.fullmatch(r"writers_\d+", k) and v.get("blogs")
    )
    if writers:
        out += [
            "**Concurrent writers**: createBlog, each writer on one of 3 instances in turn, one request at a "
            "time, PostgreSQL. CPU in cores busy (s/s). From pg_stat_activity every 10 ms: *lock held*, the share "
            "of the time some transaction held the publication counter's row lock, *by the app* the part of it "
            "spent idle in transaction (PostgreSQL waiting for the application), *hold* = held ÷ blogs/s, "
            "*waiters* = sessions waiting on the lock:",
            "",
        ]
        rows = [
            [
                n,
                _v(r.get("blogs_per_s")),
                _v(_g(r, "mutation_rtt_ms", "p50")),
                _v(_g(r, "mutation_rtt_ms", "p95")),
                _v(r.get("daphne_cpu_s_per_s")),
                _v(r.get("postgres_cpu_s_per_s")),
                _v(r.get("writers_cpu_s_per_s")),
                _pct(r.get("lock_held_share")),
                _pct(r.get("lock_held_waiting_for_app_share")),
                _v(r.get("lock_hold_ms_estimate")),
                _v(r.get("lock_waiters_mean")),
                f"{_v(r.get('delivered_to_every_instance'))}/{_v(r.get('blogs'))}",
            ]
            for n, r in writers
        ]
        out += _table(
            [
                "writers",
                "blogs/s",
                "RTT p50 ms",
                "p95",
                "Daphne CPU",
                "PostgreSQL CPU",
                "writers' CPU",
                "lock held",
                "by the app",
                "hold ms",
                "waiters",
                "delivered",
            ],
            rows,
        )
    lock = phases.get("counter_lock", {})
    if lock.get("clients_1"):
        one, eight = lock["clients_1"], lock.get("clients_8", {})
        out += [
            f"**Counter lock alone** (pgbench, the publication transaction without the application, "
            f"{_v(lock.get('seconds'))} s each): 1 client {_v(one.get('tps'))} tps "
            f"({_v(one.get('latency_ms'))} ms), 8 clients {_v(eight.get('tps'))} tps "
            f"({_v(eight.get('latency_ms'))} ms, {_v(eight.get('lock_waiters_mean'))} sessions waiting on the lock "
            "on average).",
            "",
        ]
    failover = phases.get("failover", {})
    if failover.get("rounds"):
        timings = failover.get("timings", {})
        out += [
            f"**Redis failover** (Sentinel, down-after-milliseconds {_v(timings.get('down_after_ms'))}; "
            f"{_v(failover.get('subscribers'))} subscribers on {_v(len(failover.get('instances', [])))} instances, "
            f"createBlog through the balancer at a steady rate; the master SIGKILLed, then restarted as a replica; "
            f"stated bound {_v(timings.get('bound_s'))} s):",
            "",
        ]
        rows = [
            [
                r.get("round"),
                f"{r.get('killed')} → {r.get('promoted')}",
                _v(r.get("sentinel_switch_s")),
                f"{_v(r.get('first_delivery_min_s'))}–{_v(r.get('first_delivery_max_s'))}",
                _v(r.get("readyz_503_s")),
                _v(r.get("published_during_switch")),
                _v(r.get("broadcast_failures")),
            ]
            for r in failover["rounds"]
        ]
        out += _table(
            [
                "round",
                "killed → promoted",
                "sentinels switched s",
                "kill → first live delivery s",
                "/readyz 200 again s",
                "published during the switch",
                "broadcasts failed (read from the log)",
            ],
            rows,
        )
        out += [
            f"{_v(failover.get('published'))} blogs published, {_v(len(failover.get('mutation_failures', [])))} "
            f"mutations failed; {_v(failover.get('subscribers_complete_in_order'))} of "
            f"{_v(failover.get('subscribers'))} subscribers received every one exactly once, in order.",
            "",
        ]
    return out


def _sse(phases: dict[str, Any], websocket_rows: dict[int, Any], websocket_idle: dict[str, Any]) -> list[str]:
    """SSE subscribers (bench/sse.py) beside the websocket rows of the same size."""
    sse = sorted(
        (int(k.split("_")[2]), v)
        for k, v in phases.items()
        if re.fullmatch(r"sse_fanout_\d+", k) and not v.get("skipped")
    )
    if not sse:
        return []
    rows = []
    for size, r in sse:
        ws = websocket_rows.get(size, {})
        rows.append(
            [
                f"{size:,} SSE on 1 instance",
                _v(r.get("connected")),
                f"{_v(r.get('events'))}/{_v(r.get('events_requested'))}",
                _v(r.get("events_fully_delivered")),
                _v(_g(r, "response_to_last_ms", "p50")),
                _v(_g(r, "response_to_last_ms", "max")),
                _v(_g(r, "sent_to_last_ms", "p50")),
                _v(_g(ws, "sent_to_last_ms", "p50")),
                _v(_g(r, "mutation_rtt_ms", "p50")),
                _v(r.get("server_cpu_s_per_event")),
                _v(ws.get("server_cpu_s_per_event")),
                _v(_g(r, "connect", "elapsed")),
            ]
        )
    out = [
        "**SSE fan-out**: the same events to graphql-sse subscribers (one HTTP stream each, straight to the "
        "instance), beside the websocket row of the same size (*ws*):",
        "",
    ]
    out += _table(
        [
            "subscribers",
            "connected",
            "events",
            "all delivered",
            "response→last p50",
            "max",
            "sent→last p50",
            "ws sent→last p50",
            "mutation RTT p50",
            "CPU s/event",
            "ws CPU s/event",
            "connect s",
        ],
        rows,
    )
    idle = phases.get("sse_idle", {})
    if idle and not idle.get("skipped"):
        out += [
            f"**Idle SSE**, {_v(idle.get('subscribers'))} streams on one instance for {_v(idle.get('seconds'))} s: "
            f"RSS {_v(idle.get('rss_kb_per_connection'))} KB per stream (websocket: "
            f"{_v(websocket_idle.get('rss_kb_per_connection'))} KB per connection), {_v(idle.get('rss_mb'))} MB "
            f"in all, {_v(idle.get('empty_instance_rss_mb'))} MB empty; CPU {_v(idle.get('cpu_s_per_s'))} s/s "
            "(heartbeat comments every 15 s included).",
            "",
        ]
    return out


def update_page(page: Path, markdown: str, source: str) -> bool:
    """Replace what is between the bench markers of `page`; False when the markers are missing."""
    text = page.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = f"{START}\n_Latest `make bench` ({source}):_\n\n{markdown.strip()}\n{END}"
    page.write_text(head + body + tail)
    return True
