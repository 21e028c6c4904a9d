"""Where GraphQL resolvers run when an operation executes on the event loop."""

from typing import Any

import graphql
from channels.db import database_sync_to_async
from graphql.language.ast import OperationType


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
