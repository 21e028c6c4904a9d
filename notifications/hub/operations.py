"""What a subscription operation asks for, whatever transport it came over (websocket, SSE, multipart)."""

from typing import Any

import graphql

from core.schema import graphql_schema


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
