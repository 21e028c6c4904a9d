"""A subscription operation against the schema: the arguments it asks with, and where its resolvers run."""

from typing import Any

import graphql
from channels.db import database_sync_to_async
from graphql.language.ast import OperationType

from core.schema import graphql_schema


def _named_type_name(graphql_type: Any) -> str:
    while graphql.is_wrapping_type(graphql_type):
        graphql_type = graphql_type.of_type
    return graphql_type.name


def run_orm_resolvers_in_thread(next_: Any, root: Any, info: graphql.GraphQLResolveInfo, **args: Any) -> Any:
    """Keep the event loop free of the ORM without slowing subscription fan-out.

    Queries and mutations sent over a socket run their (sync, ORM-backed) resolvers in Django's
    thread. Subscription events are built from broadcast data, so only connection fields (which
    query the database) leave the loop.
    """
    if info.operation.operation is OperationType.SUBSCRIPTION and not _named_type_name(info.return_type).endswith(
        "Connection"
    ):
        return next_(root, info, **args)
    return database_sync_to_async(next_)(root, info, **args)


def subscription_arguments(
    operation: graphql.OperationDefinitionNode, raw_variables: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Coerced variables and the root field's arguments; GraphQLError when the variables do not fit."""
    coerced = graphql.execution.values.get_variable_values(
        graphql_schema(), operation.variable_definitions or (), raw_variables or {}
    )
    if isinstance(coerced, list):
        raise coerced[0]
    field_node = operation.selection_set.selections[0]
    assert isinstance(field_node, graphql.FieldNode)
    subscription_type = graphql_schema().subscription_type
    assert subscription_type is not None
    field_def = subscription_type.fields[field_node.name.value]
    return coerced, graphql.execution.values.get_argument_values(field_def, field_node, coerced)
