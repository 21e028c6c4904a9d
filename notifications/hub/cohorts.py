"""Who is subscribed in this process, grouped so each event runs once per distinct subscription.

A *cohort* is the subscribers whose result for an event is byte for byte the same: the same
document (with `after:` left out: publish ignores it), operation and variables. The hub renders
an event once per cohort and writes that one result to every member's connection.

Its members are `subscription.LiveSubscription`s: one subscription operation on one connection.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import graphql

from api.documents import Prepared
from api.errors import format_error
from core.schema import graphql_schema
from notifications.hub.execution import run_orm_resolvers_in_thread
from notifications.hub.subscription import EventFrames, LiveSubscription
from notifications.publishing.publication import ChangeKind, Publication
from notifications.schema import FIELD_KINDS


class SharedContext:
    """The context a shared execution sees: no user, because the result is shared by many."""

    user = None
    channels_scope: dict[str, Any] = {}


@dataclass(eq=False)
class Cohort:
    key: Hashable
    document: graphql.DocumentNode
    operation_name: str | None
    variables: dict[str, Any]
    author: str | None
    # The kinds of change its subscription field announces: a blogPublished cohort never sees an edit.
    kinds: frozenset[ChangeKind]
    members: set[LiveSubscription] = field(default_factory=set)

    async def render(self, publication: Publication) -> EventFrames:
        """This event's result for every member, serialized once."""
        result = graphql.execute(
            graphql_schema(),
            self.document,
            root_value=publication,
            context_value=SharedContext(),
            variable_values=self.variables,
            operation_name=self.operation_name,
            middleware=[run_orm_resolvers_in_thread],
        )
        if graphql.pyutils.is_awaitable(result):
            result = await result  # type: ignore[misc]
        assert isinstance(result, graphql.ExecutionResult)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [format_error(error) for error in result.errors]
        return EventFrames(json.dumps(body, separators=(",", ":")), publication.cursor)


class CohortRegistry:
    """Cohorts by key, and by the author they follow (None: every author)."""

    def __init__(self) -> None:
        self._cohorts: dict[Hashable, Cohort] = {}
        self._by_author: dict[str | None, set[Cohort]] = defaultdict(set)

    def add(self, subscription: LiveSubscription) -> Cohort:
        cohort = self._cohorts.get(subscription.cohort_key)
        if cohort is None:
            cohort = Cohort(
                subscription.cohort_key,
                subscription.document,
                subscription.operation_name,
                subscription.variables,
                subscription.author,
                subscribed_kinds(subscription.document, subscription.operation_name),
            )
            self._cohorts[cohort.key] = cohort
            self._by_author[cohort.author].add(cohort)
        cohort.members.add(subscription)
        return cohort

    def remove(self, subscription: LiveSubscription) -> None:
        subscription.active = False
        cohort = self._cohorts.get(subscription.cohort_key)
        if cohort is None:
            return
        cohort.members.discard(subscription)
        if not cohort.members:
            del self._cohorts[cohort.key]
            self._by_author[cohort.author].discard(cohort)
            if not self._by_author[cohort.author]:
                del self._by_author[cohort.author]

    def cohort_of(self, subscription: LiveSubscription) -> Cohort:
        return self._cohorts[subscription.cohort_key]

    def for_change(self, author: str, kind: ChangeKind) -> list[Cohort]:
        """The cohorts a change of `kind` to a blog by `author` goes to: those following everyone and
        those following them, whose field announces that kind."""
        return [
            cohort
            for cohort in (*self._by_author.get(None, ()), *self._by_author.get(author, ()))
            if kind in cohort.kinds
        ]

    def __bool__(self) -> bool:
        return bool(self._cohorts)


def subscribed_kinds(document: graphql.DocumentNode, operation_name: str | None) -> frozenset[ChangeKind]:
    """The kinds of change the operation's subscription field announces (one root field, as validated)."""
    operation = graphql.utilities.get_operation_ast(document, operation_name)
    assert operation is not None
    root = operation.selection_set.selections[0]
    assert isinstance(root, graphql.FieldNode)
    return FIELD_KINDS[root.name.value]


def cohort_key(prepared: Prepared, operation_name: str | None, variables: dict[str, Any]) -> Hashable:
    """What makes two subscriptions' results identical: the document without `after:`, and the rest.

    `after` only decides where a subscriber starts (the hub replays from it); publish ignores it,
    so subscribers resuming from different cursors still share one cohort and one execution.
    """
    basis = prepared.memo.get("cohort")
    if basis is None:
        assert prepared.document is not None and prepared.operation is not None
        basis = prepared.memo["cohort"] = _cohort_basis(prepared.document, prepared.operation)
    text, after_only = basis
    kept = {name: value for name, value in variables.items() if name not in after_only}
    return (text, operation_name, json.dumps(kept, sort_keys=True, default=str))


class _RemoveNodes(graphql.Visitor):
    def __init__(self, nodes: Sequence[graphql.Node]) -> None:
        super().__init__()
        self.ids = {id(node) for node in nodes}

    def enter(self, node: graphql.Node, *args: Any) -> Any:
        return graphql.REMOVE if id(node) in self.ids else None


class _VariableUses(graphql.Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_variable_definition(self, *args: Any) -> Any:
        return graphql.SKIP  # a definition is not a use

    def enter_variable(self, node: graphql.VariableNode, *args: Any) -> None:
        self.names.add(node.name.value)


def _cohort_basis(
    document: graphql.DocumentNode, operation: graphql.OperationDefinitionNode
) -> tuple[str, frozenset[str]]:
    """The document printed without the root field's `after` argument, and the variables only it used."""
    root = operation.selection_set.selections[0]
    assert isinstance(root, graphql.FieldNode)
    after = [argument for argument in root.arguments or () if argument.name.value == "after"]
    after_variables = {a.value.name.value for a in after if isinstance(a.value, graphql.VariableNode)}
    stripped = graphql.visit(document, _RemoveNodes(after))
    uses = _VariableUses()
    graphql.visit(stripped, uses)
    return graphql.print_ast(stripped), frozenset(after_variables - uses.names)
