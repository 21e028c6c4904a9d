"""Prometheus metrics for this process, served at /metrics to allowed scrapers only.

One registry per process (each Daphne instance is its own scrape target). Every sample carries
`instance_name` (the INSTANCE_NAME setting), so series from several instances stay apart even
when they are federated or pushed through one proxy.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.auth import bearer_token
from api.client_ip import request_ip
from notifications import connections
from project.networks import address_in

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


def instance_name() -> str:
    return str(settings.INSTANCE_NAME)


def broadcast_sent() -> None:
    BROADCASTS_SENT.labels(instance_name()).inc()


def broadcast_failed() -> None:
    BROADCAST_FAILURES.labels(instance_name()).inc()


def events_delivered(count: int) -> None:
    EVENTS_DELIVERED.labels(instance_name()).inc(count)


def delivery_latency(announced_at: float | None) -> None:
    """`announced_at` is the broadcaster's time.time(); absent for publications read from the log."""
    if announced_at is not None:
        # Wall clocks of two hosts: clamp the skew that would make a latency negative.
        DELIVERY_SECONDS.labels(instance_name()).observe(max(0.0, time.time() - announced_at))


WEBSOCKET_PROTOCOLS = ("graphql-transport-ws", "graphql-ws")
STREAM_PROTOCOLS = ("graphql-sse", "multipart-http")  # HTTP subscription streams (notifications/streams.py)


class WebsocketCollector(Collector):
    """Counted at scrape time from the live connections, so the gauges can never drift or leak."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        websockets: Tally[str] = Tally()
        streams: Tally[str] = Tally()
        subscriptions: Tally[str] = Tally()
        for connection in connections.live():
            protocol = connection.protocol_name
            (streams if protocol in STREAM_PROTOCOLS else websockets)[protocol] += 1
            subscriptions[protocol] += connection.subscription_count()
        yield self._family(
            "blogpush_websocket_connections",
            "Open websocket connections, by subprotocol.",
            websockets,
            WEBSOCKET_PROTOCOLS,
        )
        yield self._family(
            "blogpush_http_streams",
            "Open HTTP subscription streams (graphql-sse, Apollo's multipart), by protocol.",
            streams,
            STREAM_PROTOCOLS,
        )
        yield self._family(
            "blogpush_subscriptions_active",
            "Active GraphQL subscriptions, by protocol.",
            subscriptions,
            WEBSOCKET_PROTOCOLS + STREAM_PROTOCOLS,
        )

    @staticmethod
    def _family(name: str, documentation: str, counts: Tally[str], always: tuple[str, ...]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=[INSTANCE_LABEL, "protocol"])
        for protocol in (*always, *sorted(set(counts) - set(always))):
            family.add_metric([instance_name(), protocol], counts.get(protocol, 0))
        return family


PUBLICATIONS_FROM_LOG = Counter(
    "blogpush_publications_read_from_log",
    "Publications this process's hub read from the publication log because they did not arrive live "
    "(Redis was down or lost them, a broadcast never happened, an overtaken event waited too long).",
    [INSTANCE_LABEL],
    registry=REGISTRY,
)


def publications_read_from_log(count: int) -> None:
    PUBLICATIONS_FROM_LOG.labels(instance_name()).inc(count)


class HubCollector(Collector):
    """The delivery hub's state, read at scrape time: alert on `blogpush_hub_up == 0`."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from notifications.hub import hub_states  # the hub imports the schema; metrics load earlier

        up = GaugeMetricFamily(
            "blogpush_hub_up",
            "1 while this process's delivery hub can deliver, 0 while it cannot (see /readyz for why); "
            "absent before anyone subscribed here.",
            labels=[INSTANCE_LABEL],
        )
        position = GaugeMetricFamily(
            "blogpush_hub_delivered_seq",
            "The last publication sequence number this process's hub delivered (compare across instances).",
            labels=[INSTANCE_LABEL],
        )
        for problem, delivered in hub_states():
            up.add_metric([instance_name()], 0 if problem else 1)
            if delivered is not None:
                position.add_metric([instance_name()], delivered)
        yield up
        yield position


REGISTRY.register(WebsocketCollector())
REGISTRY.register(HubCollector())
ProcessCollector(registry=REGISTRY)  # memory, CPU, open files of this process


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


def scrape_allowed(request: HttpRequest) -> bool:
    """A matching METRICS_TOKEN bearer, or a request from an allowed client address.

    The client address is the one every per-address rule uses (api/client_ip.py, which believes
    X-Forwarded-For only from TRUSTED_PROXIES). Behind a proxy that is not trusted, the proxy's
    own address is not enough either: the client it names, the last X-Forwarded-For entry, must
    be allowed too, so the public cannot read metrics through a load balancer on loopback.
    """
    token = settings.METRICS_TOKEN
    offered = bearer_token(request.headers.get("Authorization"))
    if token and offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    allowed = settings.METRICS_ALLOWED_IPS
    if not address_in(request_ip(request), allowed):
        return False
    forwarded = request.headers.get("X-Forwarded-For")
    return forwarded is None or address_in(forwarded.split(",")[-1], allowed)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition; 403 for anyone not allowed to scrape."""
    if not scrape_allowed(request):
        return HttpResponse("Metrics are not available to you.\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
