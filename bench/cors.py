"""What serving other origins costs: django-cors-headers per HTTP request, the origin check and the
CORS headers per HTTP stream and per websocket handshake. In-process, production settings.

    .venv/bin/python -m bench.cors [--origins 3] [--rounds 20000] [--out bench/results/DATE-cors.md]

Prints CPU microseconds per call (the median of 7 runs): the middleware alone around a view that does
nothing (a listed origin, an unlisted one, none, a preflight), then a whole `{ __typename }` query
through the real middleware chain and view with and without the CORS middleware, then what a
stream and a handshake pay in notifications/transports/origins.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPEATS = 7


def per_call_us(call: Callable[[], object], rounds: int) -> float:
    """Median over REPEATS runs of `rounds` calls, in CPU microseconds of this process per call (the
    machine is shared: wall time would count the turns other processes take)."""
    runs = []
    for _ in range(REPEATS):
        began = time.process_time()
        for _ in range(rounds):
            call()
        runs.append((time.process_time() - began) / rounds * 1e6)
    return statistics.median(runs)


def paired_us(first: Callable[[], object], second: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Both, measured in alternating runs so that drifts of the machine hit both alike."""
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(REPEATS * 3):
        for call, into in ((first, runs[0]), (second, runs[1])):
            began = time.process_time()
            for _ in range(rounds):
                call()
            into.append((time.process_time() - began) / rounds * 1e6)
    return statistics.median(runs[0]), statistics.median(runs[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cors", description=__doc__)
    parser.add_argument("--origins", type=int, default=3, help="origins in CORS_ALLOWED_ORIGINS (default 3)")
    parser.add_argument("--rounds", type=int, default=20_000, help="calls per run (default 20000)")
    parser.add_argument("--out", help="also write what is printed to this file (Markdown)")
    args = parser.parse_args(argv)
    lines: list[str] = []

    def say(text: str = "") -> None:
        """Print, and keep for --out."""
        lines.append(text)
        print(text, flush=True)

    listed = [f"https://app{i}.example.com" for i in range(args.origins)]
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_LOG_LEVEL": "WARNING",
            "CORS_ALLOWED_ORIGINS": ",".join(listed),
            "DATABASE_URL": "sqlite://:memory:",
        }
    )
    import django

    warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no static files needed here
    django.setup()
    from corsheaders.middleware import CorsMiddleware
    from django.http import HttpResponse
    from django.test import Client, RequestFactory, override_settings
    from django.test.utils import setup_test_environment

    from notifications.transports import origins

    setup_test_environment()
    rounds = args.rounds
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    say(f"# bench.cors, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    say("```")
    say(f"{os.cpu_count()} cores, load average {load} at start (shared machine: CPU time of this process, not wall)")
    say(f"CORS_ALLOWED_ORIGINS: {args.origins} origins; {rounds} calls per run, median of {REPEATS} runs\n")

    # 1. The middleware alone: what it adds around any view.
    factory = RequestFactory()

    def bare(request: object) -> HttpResponse:
        return HttpResponse(b"{}", content_type="application/json")

    middleware = CorsMiddleware(bare)
    requests = {
        "listed origin": factory.post("/graphql/", HTTP_ORIGIN=listed[-1]),
        "unlisted origin": factory.post("/graphql/", HTTP_ORIGIN="https://evil.example"),
        "no Origin": factory.post("/graphql/"),
        "preflight (listed)": factory.options(
            "/graphql/", HTTP_ORIGIN=listed[-1], HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
        ),
    }
    say("django-cors-headers per request (µs, beyond a view that does nothing):")
    for name, request in requests.items():
        spent, baseline = paired_us(partial(middleware, request), partial(bare, request), rounds)
        say(f"  {name:<22} {spent - baseline:6.1f}")

    # 2. A whole request through the real chain and the GraphQL view, with and without the middleware.
    chain = [name for name in django.conf.settings.MIDDLEWARE if "corsheaders" not in name]
    body = {"query": "{ __typename }"}
    clients = {"with": Client(), "without": Client()}

    def query(client: Client) -> None:
        response = client.post("/graphql/", body, content_type="application/json", HTTP_ORIGIN=listed[-1])
        assert response.status_code == 200

    # A client builds its middleware chain on its first request, and keeps it.
    query(clients["with"])
    with override_settings(MIDDLEWARE=chain):
        query(clients["without"])
    assert "access-control-allow-origin" not in clients["without"].post("/graphql/", body, HTTP_ORIGIN=listed[-1])
    with_cors, without_cors = paired_us(
        lambda: query(clients["with"]), lambda: query(clients["without"]), max(rounds // 50, 100)
    )
    say("\na `{ __typename }` query through the middleware chain and the view (µs per request):")
    say(f"  with CORS {with_cors:8.1f}   without {without_cors:8.1f}   difference {with_cors - without_cors:6.1f}")

    # 3. What an HTTP stream and a websocket handshake pay in origins.py (their own code paths).
    scope = {
        "type": "http",
        "scheme": "http",
        "headers": [
            (b"host", b"api.example.com"),
            (b"origin", listed[-1].encode()),
            (b"accept", b"text/event-stream"),
            (b"content-type", b"application/json"),
            (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Chrome/140"),
        ],
    }
    headers = origins.scope_headers(scope)
    own = {**headers, "origin": "http://api.example.com"}
    with override_settings(ALLOWED_HOSTS=["api.example.com"]):
        say("\nper HTTP stream / websocket handshake (µs):")
        for name, call in {
            "stream, listed origin": lambda: origins.admit(scope, headers),
            "stream, the site's own origin": lambda: origins.admit(scope, own),
            "handshake, listed origin (headers read too)": lambda: origins.admit(scope, origins.scope_headers(scope)),
        }.items():
            say(f"  {name:<44} {per_call_us(call, rounds):6.1f}")
    say("```")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
