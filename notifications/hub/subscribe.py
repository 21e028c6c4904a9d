"""Subscribing, one flow for every transport: the operation's arguments, its resume point, its
cohort, then the hub.

A transport checks what is its own (a websocket's protocol state and operation ids; an HTTP
stream's origin, address slot and shutdown), then calls `prepare` and, once its connection
exists, `start`. Errors are the client's to read: GraphQLError for variables that do not fit the
operation, BadUserInput for a cursor it cannot resume from, HubUnavailable when this process
cannot deliver now (the client retries, here later or on another instance).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import graphql

from api.validation import Verdict
from notifications.hub.cohorts import cohort_key
from notifications.hub.execution import subscription_arguments
from notifications.hub.hub import get_hub
from notifications.hub.subscription import Connection, LiveSubscription


@dataclass(frozen=True, slots=True)
class Subscribing:
    """A checked subscription operation (`blogPublished` or `blogChanged`), not yet on any connection."""

    cohort_key: Hashable
    document: graphql.DocumentNode
    operation_name: str | None
    variables: dict[str, Any]
    author: str | None
    after_seq: int | None  # where it resumes (None: from now on)

    def on(self, connection: Connection, op_id: str) -> LiveSubscription:
        return LiveSubscription(
            connection,
            op_id,
            self.cohort_key,
            self.document,
            self.operation_name,
            self.variables,
            self.author,
            self.after_seq,
        )


async def prepare(
    verdict: Verdict,
    raw_variables: dict[str, Any] | None,
    operation_name: str | None,
    *,
    resume_cursor: str | None = None,
) -> Subscribing:
    """`verdict` is a subscription that passed the document checks (api/validation.check).

    `resume_cursor` overrides the `after:` argument (an EventSource's Last-Event-ID).
    """
    assert verdict.prepared is not None and verdict.prepared.document is not None
    assert verdict.operation_node is not None
    variables, arguments = subscription_arguments(verdict.operation_node, raw_variables or {})
    cursor = resume_cursor or arguments.get("after")
    after_seq = await get_hub().resume_point(cursor) if cursor is not None else None
    return Subscribing(
        cohort_key(verdict.prepared, operation_name, variables),
        verdict.prepared.document,
        operation_name,
        variables,
        arguments.get("author"),
        after_seq,
    )


async def start(subscription: LiveSubscription) -> None:
    """Replay what it missed, then deliver live; HubUnavailable when this process cannot."""
    await get_hub().subscribe(subscription)


def stop(subscription: LiveSubscription) -> None:
    get_hub().unsubscribe(subscription)
