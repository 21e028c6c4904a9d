"""Every live subscriber connection of this process, in one registry.

Keep-alives, the SIGTERM drain and the connection metrics all walk this one set, each through
the small interface below, whatever the transport behind a connection.
"""

from __future__ import annotations

import weakref
from typing import Protocol


class LiveConnection(Protocol):
    @property
    def protocol_name(self) -> str:
        """The transport's name, as metrics label it (e.g. graphql-transport-ws)."""

    def subscription_count(self) -> int:
        """Subscriptions this connection is serving now."""

    @property
    def keepalive_seconds(self) -> float:
        """How often notifications/keepalive.py sends this connection its keep-alive."""

    def send_keepalive(self) -> None:
        """The transport's keep-alive, if it is ready for one."""

    def going_away(self) -> None:
        """The process is shutting down: end the connection so the client reconnects elsewhere."""


# Weak: a connection that vanished without saying goodbye cannot leak here.
_live: weakref.WeakSet[LiveConnection] = weakref.WeakSet()


def register(connection: LiveConnection) -> None:
    _live.add(connection)


def unregister(connection: LiveConnection) -> None:
    _live.discard(connection)


def live() -> list[LiveConnection]:
    return list(_live)
