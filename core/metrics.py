"""Prometheus metrics of this process: their definitions, and the registry /metrics serves.

A leaf: packages add their own scrape-time collectors to REGISTRY (notifications/hub/hub.py,
notifications/transports/connections.py); project/views.py serves it to allowed scrapers.

One registry per process (each Daphne instance is its own scrape target). Every sample carries
`instance_name` (the INSTANCE_NAME setting), so series from several instances stay apart even
when they are federated or pushed through one proxy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, ProcessCollector

REGISTRY = CollectorRegistry()
INSTANCE_LABEL = "instance_name"

# Buckets from 1 ms to 10 s: a push normally takes a few ms; seconds mean trouble.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUEST_SECONDS = Histogram(
    "blogpush_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, URL route and status.",
    [INSTANCE_LABEL, "method", "route", "status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
BROADCASTS_SENT = Counter(
    "blogpush_broadcasts_sent",
    "Publications handed to the channel layer by this process.",
    [INSTANCE_LABEL],
    registry=REGISTRY,
)
BROADCAST_FAILURES = Counter(
    "blogpush_broadcast_failures",
    "Publications this process failed to hand to the channel layer (the blog stays committed).",
    [INSTANCE_LABEL],
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "blogpush_events_delivered",
    "Subscription events sent to subscribers (websockets and HTTP streams) by this process.",
    [INSTANCE_LABEL],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "blogpush_delivery_latency_seconds",
    "From the broadcast of a publication (after commit) to its send to the last subscriber of a cohort "
    "(subscribers sharing document and variables); one sample per cohort per event.",
    [INSTANCE_LABEL],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)


CONNECTIONS_SIGNED_OUT = Counter(
    "blogpush_connections_signed_out",
    "Websockets closed (4403) and HTTP streams ended by this process because their sign-in ended, by reason "
    "(revoked, expired, deactivated, deleted, signed_out) and protocol.",
    [INSTANCE_LABEL, "reason", "protocol"],
    registry=REGISTRY,
)
WRITES_REFUSED = Counter(
    "blogpush_socket_writes_refused",
    "Mutations refused over a websocket because its sign-in had ended when the mutation arrived, by reason.",
    [INSTANCE_LABEL, "reason"],
    registry=REGISTRY,
)
REVOCATION_BROADCASTS = Counter(
    "blogpush_revocation_broadcasts",
    "Ended credentials (revoked tokens, deactivated or deleted authors, sign-outs) announced to every instance.",
    [INSTANCE_LABEL],
    registry=REGISTRY,
)
REVOCATION_BROADCAST_FAILURES = Counter(
    "blogpush_revocation_broadcast_failures",
    "Announcements of ended credentials this process failed to hand to the channel layer (the revocation stays "
    "committed; the sockets' own checks refuse their writes, and instances recheck their sockets on reconnecting).",
    [INSTANCE_LABEL],
    registry=REGISTRY,
)


def instance_name() -> str:
    return str(settings.INSTANCE_NAME)


def broadcast_sent() -> None:
    BROADCASTS_SENT.labels(instance_name()).inc()


def broadcast_failed() -> None:
    BROADCAST_FAILURES.labels(instance_name()).inc()


def connection_signed_out(reason: str, protocol: str) -> None:
    CONNECTIONS_SIGNED_OUT.labels(instance_name(), reason, protocol).inc()


def socket_write_refused(reason: str) -> None:
    WRITES_REFUSED.labels(instance_name(), reason).inc()


def revocation_broadcast(*, failed: bool) -> None:
    (REVOCATION_BROADCAST_FAILURES if failed else REVOCATION_BROADCASTS).labels(instance_name()).inc()


def events_delivered(count: int) -> None:
    if count:
        EVENTS_DELIVERED.labels(instance_name()).inc(count)


def delivery_latency(announced_at: float | None) -> None:
    """`announced_at` is the broadcaster's time.time(); absent for publications read from the log."""
    if announced_at is not None:
        # Wall clocks of two hosts: clamp the skew that would make a latency negative.
        DELIVERY_SECONDS.labels(instance_name()).observe(max(0.0, time.time() - announced_at))


PUBLICATIONS_FROM_LOG = Counter(
    "blogpush_publications_read_from_log",
    "Publications this process's hub read from the publication log because they did not arrive live "
    "(Redis was down or lost them, a broadcast never happened, an overtaken event waited too long).",
    [INSTANCE_LABEL],
    registry=REGISTRY,
)


def publications_read_from_log(count: int) -> None:
    if count:
        PUBLICATIONS_FROM_LOG.labels(instance_name()).inc(count)


ProcessCollector(registry=REGISTRY)  # memory, CPU, open files of this process
GCCollector(registry=REGISTRY)  # the cyclic collector's runs by generation: pauses of the event loop


def _route(request: HttpRequest) -> str:
    """The URL pattern, not the path, so the label set stays bounded."""
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return "/" + match.route
    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


class HttpMetricsMiddleware:
    """Times every request (static files included when placed before WhiteNoise)."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response  # always sync: project/handlers.OneHopASGIHandler

    def __call__(self, request: HttpRequest) -> Any:
        started = time.perf_counter()
        response = self.get_response(request)
        self._observe(request, response, started)
        return response

    @staticmethod
    def _observe(request: HttpRequest, response: HttpResponse, started: float) -> None:
        HTTP_REQUEST_SECONDS.labels(
            instance_name(), request.method or "", _route(request), str(response.status_code)
        ).observe(time.perf_counter() - started)
