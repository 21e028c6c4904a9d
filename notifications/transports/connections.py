"""Every live subscriber connection of this process, in one registry.

Keep-alives, the SIGTERM drain and the connection metrics all walk this one set, each through
hub/subscription.Connection, whatever the transport behind a connection.
"""

from __future__ import annotations

import weakref
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.metrics import INSTANCE_LABEL, REGISTRY, instance_name
from notifications.hub.subscription import Connection

# Weak: a connection that vanished without saying goodbye cannot leak here.
_live: weakref.WeakSet[Connection] = weakref.WeakSet()


def register(connection: Connection) -> None:
    _live.add(connection)


def unregister(connection: Connection) -> None:
    _live.discard(connection)


def live() -> list[Connection]:
    return list(_live)


WEBSOCKET_PROTOCOLS = ("graphql-transport-ws", "graphql-ws")
STREAM_PROTOCOLS = ("graphql-sse", "multipart-http")  # HTTP subscription streams (streams.py)


class WebsocketCollector(Collector):
    """Counted at scrape time from the live connections, so the gauges can never drift or leak."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        websockets: Tally[str] = Tally()
        streams: Tally[str] = Tally()
        subscriptions: Tally[str] = Tally()
        for connection in live():
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


REGISTRY.register(WebsocketCollector())
