"""Run Redis (--sentinel: a master, a replica and three sentinels), PostgreSQL, N Daphne instances
and HAProxy natively until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from stack.deployment import Stack
from stack.services import StackError


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Stop on SIGTERM exactly like on Ctrl-C (also when SIGINT was inherited as ignored).

    Later signals are ignored: a second Ctrl-C while a half-started stack is being
    torn down (inside `Stack.start`) must not cut the cleanup short and leak processes.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _print_sentinel(stack: Stack) -> None:
    assert stack.sentinel is not None
    group = stack.sentinel
    master = group.master()
    print(f"  redis: master {master.name} :{master.port}, replica {group.replica().name} :{group.replica().port}")
    for key, value in group.env().items():
        print(f"  {key}={value}")
    print(
        "  failover drill: kill -9 <the master's pid> (below), or "
        f"redis-cli -p {group.sentinels[0].port} SENTINEL FAILOVER {group.master_name}; "
        f"watch: redis-cli -p {group.sentinels[0].port} SENTINEL GET-MASTER-ADDR-BY-NAME {group.master_name}"
    )
    for node in group.nodes:
        print(f"  {node.name} pid {node.pid}")


def _print_pg_pair(stack: Stack) -> None:
    assert stack.pg_pair is not None
    pair = stack.pg_pair
    print(f"  DATABASE_URL={pair.url}")
    print(
        f"  failover drill: kill -9 {pair.primary.pid} (the primary), then "
        f"pg_ctl promote -D {pair.standby.data_dir} (as the user owning it)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("--instances", type=int, default=3, help="Daphne instances (default 3)")
    parser.add_argument("--sqlite", action="store_true", help="use a SQLite file instead of a PostgreSQL cluster")
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="Redis as a master, a replica and three sentinels (REDIS_SENTINELS) instead of one server",
    )
    parser.add_argument(
        "--pg-standby",
        action="store_true",
        help="PostgreSQL as a primary with a synchronous streaming standby (DATABASE_URL names both)",
    )
    args = parser.parse_args(argv)
    if args.pg_standby and args.sqlite:
        parser.error("--pg-standby needs PostgreSQL, not --sqlite")

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = Stack(
        instances=args.instances, postgres=not args.sqlite, sentinel=args.sentinel, pg_standby=args.pg_standby
    )
    try:
        began = time.monotonic()
        stack.start()
        print(f"stack up in {time.monotonic() - began:.1f}s", flush=True)
        print(f"  http: {stack.url}/\n  ws:   {stack.ws_url}")
        for instance in stack.instances:
            print(f"  {instance.name}: {instance.url}/")
        if stack.sentinel is not None:
            _print_sentinel(stack)
        if stack.pg_pair is not None:
            _print_pg_pair(stack)
        print("logs:")
        for service in stack.services:
            print(f"  {service.name:<8} {service.log_path}")
        print("Ctrl-C to stop.", flush=True)
        while True:
            signal.pause()
    except StackError as error:
        print(f"stack failed to start: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("stopping...", file=sys.stderr, flush=True)
    finally:
        # A second Ctrl-C must not interrupt the cleanup and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
