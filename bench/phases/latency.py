"""Phases: one subscriber's push latency, and the polling baseline it is compared with."""

from __future__ import annotations

import time
from contextlib import ExitStack

from bench.harness import (
    Bench,
    combos,
    ms_summary,
)


def latency(bench: Bench) -> None:
    """One subscriber; mutation → push on the same instance, and on the other one through the balancer."""
    assert bench.pool is not None
    web1, web2 = bench.instances[0], bench.instances[1]
    cases = [("latency_1_instance", [web1.ws_url], None), ("latency_2_instances", None, web2)]
    for name, urls, other in cases:
        with bench.phase(name, needs=10) as record:
            if record is None:
                continue
            with ExitStack() as cleanup:
                if other is not None:
                    lb = bench.lb([web1, web2])
                    cleanup.callback(lb.stop)
                    # Through the balancer (round robin) until the subscriber sits on the other instance.
                    for _ in range(10):
                        got = bench.connect(1, [lb.ws_url], combos(1))
                        if got["instances"].get(other.name):
                            break
                        bench.pool.close_clients()
                    record["subscriber_instance"] = other.name
                    record["via"] = "haproxy"
                else:
                    bench.connect(1, urls or [], combos(1))
                    record["subscriber_instance"] = web1.name
                record["mutations_to"] = web1.name
                bench.warm_up(1)
                sent: list[float] = []
                answered: list[float] = []
                rtts: list[float] = []
                began = time.monotonic()
                for _ in range(bench.config.latency_events):
                    if time.monotonic() - began > bench.config.latency_budget:
                        bench.note(f"{name}: budget reached after {len(rtts)} events")
                        break
                    published = bench.publish()
                    got = bench.pool.await_ids([published.blog_id], timeout=5)[published.blog_id]
                    rtts.append(published.round_trip)
                    if got["count"]:
                        sent.append(got["max"] - published.sent)
                        answered.append(got["max"] - published.answered)
                record.update(
                    {
                        "events": len(rtts),
                        "delivered": len(sent),
                        "sent_to_push_ms": ms_summary(sent),
                        "response_to_push_ms": ms_summary(answered),
                        "mutation_rtt_ms": ms_summary(rtts),
                    }
                )
                bench.pool.close_clients()


def baseline(bench: Bench) -> None:
    """The seed's polling design: latency and DB load, with the same clients."""
    assert bench.pool is not None and bench.polling is not None
    with bench.phase("baseline_polling", needs=30) as record:
        if record is None:
            return
        n = bench.config.baseline_subscribers
        record["connect"] = bench.connect(n, [bench.polling.ws_url], combos(1))
        record["warm_up"] = bench.warm_up(n, timeout=max(bench.config.warmup_timeout, 10))
        # Idle: nothing published; every subscriber still polls once a second.
        record["idle"] = bench.idle(n, [bench.polling], bench.config.baseline_idle_seconds)
        sent: list[float] = []
        answered: list[float] = []
        rtts: list[float] = []
        missing = 0
        began = time.monotonic()
        for _ in range(bench.config.baseline_events):
            if rtts and time.monotonic() - began > bench.config.baseline_budget:
                bench.note(f"baseline: budget reached after {len(rtts)} events")
                break
            published = bench.publish()
            bench.pool.await_ids([published.blog_id], timeout=5)
            times = bench.pool.collect([published.blog_id], full=True)[published.blog_id]["times"]
            rtts.append(published.round_trip)
            missing += n - len(times)
            sent += [t - published.sent for t in times]
            answered += [t - published.answered for t in times]
        record.update(
            {
                "subscribers": n,
                "events": len(rtts),
                "missed_deliveries": missing,
                "sent_to_push_ms": ms_summary(sent),
                "response_to_push_ms": ms_summary(answered),
                "mutation_rtt_ms": ms_summary(rtts),
                "poll_seconds": 1.0,
            }
        )
        bench.close_clients()
