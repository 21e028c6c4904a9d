"""Soak: publishers and many resuming subscribers through the balancer while instances and Redis fail.

    python -m stack.soak [--subscribers 500] [--minutes 10] [--rate 4] [--instances 3]

Every subscriber is a blogclient.BlogListener (reconnects with backoff and jitter and resumes
with its last cursor). Meanwhile a chaos loop SIGKILLs a random Daphne instance (restarting it
a few seconds later) or restarts Redis with its data lost. At the end each subscriber's events
are compared with the publication log: the goal is 0 lost and 0 duplicated, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import threading
import time
from typing import Any

import httpx
import psycopg

from stack.deployment import Stack

SIGN_UP = 'mutation { createAuthor(input: {username: "soak", password: "soak password", bio: "soak"}) { token } }'
CREATE_BLOG = 'mutation($title: String!) { createBlog(input: {title: $title, content: "soak"}) { blog { id } } }'


def publish(stack: Stack, token: str, rate: float, stop: threading.Event, errors: list[str]) -> None:
    with httpx.Client(base_url=stack.url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                client.post(
                    "/graphql/", json={"query": CREATE_BLOG, "variables": {"title": f"soak {n}"}}
                ).raise_for_status()
            except httpx.HTTPError as error:  # an instance died mid-request; the log tells what committed
                errors.append(str(error))
            stop.wait(1 / rate)


def chaos(stack: Stack, stop: threading.Event, log: list[str]) -> None:
    while not stop.wait(random.uniform(20, 40)):
        if random.random() < 0.7:
            victim = random.choice(stack.instances)
            log.append(f"{time.strftime('%X')} SIGKILL {victim.name}")
            victim.kill()
            stop.wait(3)
            victim.start()
        else:
            assert stack.redis is not None
            log.append(f"{time.strftime('%X')} Redis restart (data lost)")
            stack.redis.restart()


def in_publish_order(received: list[str], truth: list[str]) -> bool:
    seen = set(received)
    return [blog_id for blog_id in truth if blog_id in seen] == received


def published_ids(stack: Stack) -> list[str]:
    assert stack.postgres is not None
    with psycopg.connect(stack.postgres.url) as db:
        rows = db.execute("SELECT blog_id FROM notifications_publication ORDER BY seq").fetchall()
    return [base64.b64encode(f"Blog:{pk}".encode()).decode() for (pk,) in rows]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from blogclient import BlogListener

    # One author publishes for minutes on end, and every subscriber comes from 127.0.0.1:
    # lift the per-author mutation rate limit and the per-address connection limit.
    env = {"RATE_LIMIT_MUTATIONS": "off", "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": str(args.subscribers * 2)}
    with Stack(instances=args.instances, postgres=True, env=env) as stack:
        token = httpx.post(f"{stack.url}/graphql/", json={"query": SIGN_UP}).json()["data"]["createAuthor"]["token"]
        received: list[list[str]] = [[] for _ in range(args.subscribers)]
        ready = [asyncio.Event() for _ in range(args.subscribers)]

        async def subscriber(index: int) -> None:
            def status(message: str) -> None:
                if message.startswith("listening"):
                    ready[index].set()

            listener = BlogListener(stack.ws_url, on_status=status, backoff_first=0.2, backoff_max=5)
            async for event in listener.events():
                received[index].append(event["blog"]["id"])

        tasks = [asyncio.create_task(subscriber(i)) for i in range(args.subscribers)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 120)
        stop = threading.Event()
        publish_errors: list[str] = []
        chaos_log: list[str] = []
        threads = [
            threading.Thread(target=publish, args=(stack, token, args.rate, stop, publish_errors)),
            threading.Thread(target=chaos, args=(stack, stop, chaos_log)),
        ]
        for thread in threads:
            thread.start()
        await asyncio.sleep(args.minutes * 60)
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        truth = published_ids(stack)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(len(r) < len(truth) for r in received):
            await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        lost = sum(len(set(truth) - set(r)) for r in received)
        duplicated = sum(len(r) - len(set(r)) for r in received)
        out_of_order = sum(1 for r in received if not in_publish_order(r, truth))
        return {
            "subscribers": args.subscribers,
            "minutes": args.minutes,
            "published": len(truth),
            "deliveries": sum(len(r) for r in received),
            "lost": lost,
            "duplicated": duplicated,
            "subscribers_out_of_order": out_of_order,
            "publish_errors": len(publish_errors),
            "faults": chaos_log,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=4, help="blogs published per second")
    parser.add_argument("--instances", type=int, default=3)
    report = asyncio.run(run(parser.parse_args()))
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["lost"] == 0 and report["duplicated"] == 0 and report["subscribers_out_of_order"] == 0 else 1)


if __name__ == "__main__":
    main()
