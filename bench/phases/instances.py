"""Phases: subscribers over two instances behind HAProxy (with a reconnect storm), and scale-out to four."""

from __future__ import annotations

from bench.harness import (
    RESERVE,
    Bench,
    combos,
)


def two_instances(bench: Bench) -> None:
    """10,000 subscribers over two instances through the balancer; then one instance dies (reconnect storm)."""
    assert bench.pool is not None
    web1, web2 = bench.instances[0], bench.instances[1]
    with bench.phase("two_instances", needs=90 + RESERVE) as record:
        if record is None:
            return
        lb = bench.lb([web1, web2])
        try:
            n = bench.config.two_instance_subscribers
            record["connect"] = bench.connect(n, [lb.ws_url], combos(1), reconnect=True)
            connected = bench.pool.status()["alive"]
            record["connected"] = connected
            record["warm_up"] = bench.warm_up(connected)
            record.update(
                bench.events(
                    bench.config.two_instance_events,
                    bench.config.two_instance_budget,
                    connected,
                    instances=[web1, web2],
                )
            )
            if (
                bench.config.storm
                and bench.left() > bench.config.storm_timeout + 2 * bench.config.event_timeout + RESERVE
            ):
                record["storm"] = bench.storm(web2, connected)
        finally:
            record["close_and_settle_s"] = bench.close_clients()
            lb.stop()
            if not web2.running:
                web2.restart()


def scale_out(bench: Bench) -> None:
    """Deliveries/s with a fixed number of subscribers per instance, 1, 2, 4 instances behind HAProxy."""
    assert bench.pool is not None
    for count in bench.config.scale_instances:
        with bench.phase(f"scale_{count}", needs=30 + RESERVE) as record:
            if record is None:
                break
            group = bench.instances[:count]
            lb = bench.lb(group)
            try:
                n = bench.config.scale_per_instance * count
                record["connect"] = bench.connect(n, [lb.ws_url], combos(1))
                connected = bench.pool.status()["alive"]
                record.update({"instances": count, "subscribers": connected})
                record["warm_up"] = bench.warm_up(connected)
                record.update(bench.burst(bench.config.scale_events, connected, group))
            finally:
                record["close_and_settle_s"] = bench.close_clients()
                lb.stop()
