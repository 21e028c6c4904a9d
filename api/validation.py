"""The limits every GraphQL document passes before it runs, on HTTP and on websockets alike.

graphene-django's view and django-channels-graphql-ws each parse and validate with graphql-core's
standard rules; neither bounds what a document may cost. `check()` runs first on both paths:

- size, measured before anything is parsed or cached, then tokens: graphql-core's lexer stops at
  `max_lexical_tokens` / `max_comments`, so a huge document costs no more than the limit;
- parsed and validated once per distinct text (api/documents.py, bounded in bytes), for HTTP and
  websockets alike;
- introspection: graphql-core's NoSchemaIntrospectionCustomRule when GRAPHQL_INTROSPECTION is off
  (`__typename` stays allowed: Apollo and urql add it to every selection);
- depth: graphene's `depth_limit_validator`;
- cost: fields that would be resolved in the worst case, each connection multiplying its
  selection by its page size, plus the page-size bounds graphene-django would otherwise assert;
- cursors: a connection's `after`/`before` must be a cursor the API gave (api/pagination.py),
  refused here once rather than by every parent of a nested connection.

Plain syntax and validation errors are left to the executor, which reports them in the protocol's
usual way; graphene's depth validator also needs a valid document (it loops on fragment cycles).
"""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from graphene.validation import depth_limit_validator
from graphene_django.settings import graphene_settings
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule

from api.documents import Prepared, PreparedDocuments, estimated_bytes
from api.pagination import cursor_error
from core.schema import graphql_schema

PAGINATION_ARGUMENTS = ("first", "last")
CURSOR_ARGUMENTS = ("after", "before")


def limit_error(message: str, limit: str, **details: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT", "limit": limit, **details})


def executor_rules() -> tuple[type[ASTValidationRule], ...]:
    """The rules graphene-django's view validates with: the standard ones, and the introspection policy."""
    if settings.GRAPHQL_INTROSPECTION:
        return tuple(specified_rules)
    return (*specified_rules, NoSchemaIntrospectionCustomRule)


@dataclass
class Verdict:
    """What `check()` found: errors to send, and the operation's type when the document is valid.

    When every check passed, `document` and `operation_node` are the parsed, validated document
    and its chosen operation (`prepared` holds both): the HTTP view executes them instead of
    parsing and validating again, and the websocket hands subscriptions to the hub.
    """

    errors: list[GraphQLError] = field(default_factory=list)
    operation: OperationType | None = None
    document: DocumentNode | None = None
    operation_node: OperationDefinitionNode | None = None
    prepared: Prepared | None = None


def check(query: Any, variables: Any = None, operation_name: Any = None) -> Verdict:
    """Enforce every limit on one request; an empty verdict leaves the rest to the executor."""
    return _check(query, variables, operation_name, compute=True) or Verdict()


def check_if_known(query: Any, variables: Any = None, operation_name: Any = None) -> Verdict | None:
    """`check()` when it needs no parsing (a known document, or one refused for its size), else None.

    The websocket answers those on the event loop and parses new documents in a thread.
    """
    return _check(query, variables, operation_name, compute=False)


def _check(query: Any, variables: Any, operation_name: Any, *, compute: bool) -> Verdict | None:
    if not isinstance(query, str):
        return Verdict([GraphQLError("'query' must be a string.", extensions={"code": "BAD_USER_INPUT"})])
    if variables is not None and not isinstance(variables, dict):
        return Verdict([GraphQLError("'variables' must be an object.", extensions={"code": "BAD_USER_INPUT"})])
    if operation_name is not None and not isinstance(operation_name, str):
        return Verdict([GraphQLError("'operationName' must be a string.", extensions={"code": "BAD_USER_INPUT"})])
    prepared = prepare(query, operation_name) if compute else prepared_if_known(query, operation_name)
    if prepared is None:
        return None
    if prepared.errors or prepared.document is None or prepared.operation is None:
        return Verdict(list(prepared.errors))
    walk = _CostWalk(graphql_schema(), prepared.document, prepared.operation, variables or {})
    errors = walk.check(settings.GRAPHQL_MAX_COST)
    if errors:
        return Verdict(errors)
    return Verdict([], prepared.operation.operation, prepared.document, prepared.operation, prepared)


def _size_error(query: str) -> GraphQLError | None:
    """Measured before anything else: an oversized text is never parsed, cached or kept."""
    limit = settings.GRAPHQL_MAX_DOCUMENT_CHARS
    if len(query) > limit:
        return limit_error(
            f"The document has {len(query)} characters; at most {limit} are accepted: put large values in variables.",
            "documentSize",
            max=limit,
        )
    return None


def _cache_key(query: str, operation_name: str | None) -> tuple[Any, ...]:
    # The settings that judged a document are part of its key (tests change them at run time).
    return (
        query,
        operation_name,
        settings.GRAPHQL_MAX_DOCUMENT_CHARS,
        settings.GRAPHQL_MAX_TOKENS,
        settings.GRAPHQL_MAX_DEPTH,
        settings.GRAPHQL_INTROSPECTION,
    )


def prepared_if_known(query: str, operation_name: str | None) -> Prepared | None:
    """The prepared document when it needs no parsing: cached, or refused for its size; else None."""
    size_error = _size_error(query)
    if size_error is not None:
        return Prepared((size_error,))
    return DOCUMENTS.get(_cache_key(query, operation_name))


def prepare(query: str, operation_name: str | None) -> Prepared:
    """Size first, then tokens (graphql-core's lexer stops at the limit), then parse and validate.

    Only documents that pass every check are cached; a refused one costs its request only.
    """
    known = prepared_if_known(query, operation_name)
    if known is not None:
        return known
    prepared, document = _prepare(query, operation_name)
    if document is not None and not prepared.errors:
        DOCUMENTS.put(_cache_key(query, operation_name), prepared, estimated_bytes(query, document))
    return prepared


DOCUMENTS = PreparedDocuments(settings.GRAPHQL_DOCUMENT_CACHE_BYTES)


def _prepare(query: str, operation_name: str | None) -> tuple[Prepared, DocumentNode | None]:
    """What the document's text alone decides: tokens, validity, operation, depth, introspection."""
    max_tokens = settings.GRAPHQL_MAX_TOKENS
    try:
        document = parse(query, max_lexical_tokens=max_tokens, max_comments=max_tokens)
    except GraphQLError as error:
        return Prepared((_parse_limit_error(error),) if error.message.endswith("Parsing aborted.") else ()), None
    schema = graphql_schema()
    if validate(schema, document, specified_rules, max_errors=1):
        return Prepared(), None  # the executor reports plain validation errors in its own way
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        message = (
            f"Unknown operation named '{operation_name}'."
            if operation_name
            else "The document holds several operations: send 'operationName' to pick one."
        )
        return Prepared((GraphQLError(message, extensions={"code": "BAD_USER_INPUT"}),)), None
    max_depth = settings.GRAPHQL_MAX_DEPTH
    depth_errors = [
        limit_error(error.message, "depth", max=max_depth) if not error.extensions else error
        for error in validate(schema, document, [depth_limit_validator(max_depth)])
    ]
    if depth_errors:
        return Prepared(tuple(depth_errors)), None
    if not settings.GRAPHQL_INTROSPECTION:
        errors = validate(schema, document, [NoSchemaIntrospectionCustomRule])
        if errors:
            return Prepared(tuple(errors)), None
    return Prepared((), document, operation), document


def executor_errors(query: str) -> list[GraphQLError]:
    """The syntax or validation errors the executor reports for a document `prepare` left to it."""
    try:
        document = parse(
            query, max_lexical_tokens=settings.GRAPHQL_MAX_TOKENS, max_comments=settings.GRAPHQL_MAX_TOKENS
        )
    except GraphQLError as error:
        return [error]
    return validate(graphql_schema(), document, executor_rules())


def _parse_limit_error(error: GraphQLError) -> GraphQLError:
    if "nested too deeply" in error.message:
        return limit_error(error.message, "depth", max=settings.GRAPHQL_MAX_DEPTH)
    return limit_error(error.message, "tokens", max=settings.GRAPHQL_MAX_TOKENS)


class _CostWalk:
    """Counts fields, multiplying each connection's selection by the page size it will return.

    Runs on every request (page sizes may come from variables), over a document already validated,
    so it needs no validation context: a plain recursive walk over the operation.
    """

    def __init__(
        self,
        graphql_schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: dict[str, Any],
    ) -> None:
        self.schema = graphql_schema
        self.operation = operation
        self.max_page = graphene_settings.RELAY_CONNECTION_MAX_LIMIT
        self.fragments: dict[str, FragmentDefinitionNode] = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        defaults = {
            definition.variable.name.value: definition.default_value
            for definition in operation.variable_definitions or ()
        }
        self.variables = {**defaults, **variables}
        self.fragment_costs: dict[str, int] = {}
        self.errors: list[GraphQLError] = []

    def check(self, max_cost: int) -> list[GraphQLError]:
        """Page-size errors, else a cost error when the operation costs more than `max_cost`."""
        root = self.schema.get_root_type(self.operation.operation)
        if root is None:
            return []
        cost = self.selection_set(self.operation.selection_set, root)
        if self.errors:
            return self.errors
        if cost > max_cost:
            return [
                limit_error(
                    f"The operation's cost {cost} exceeds the limit of {max_cost}: "
                    "ask for fewer items with first/last.",
                    "cost",
                    cost=cost,
                    max=max_cost,
                )
            ]
        return []

    def selection_set(self, selection_set: SelectionSetNode, parent: GraphQLNamedType) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selection_set(selection.selection_set, inner or parent)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def fragment(self, name: str) -> int:
        # Memoised: a fragment spread many times is walked once, so fragment "bombs" stay linear.
        if name not in self.fragment_costs:
            fragment = self.fragments[name]
            self.fragment_costs[name] = 0  # cycles are refused by standard validation already
            condition = self.schema.get_type(fragment.type_condition.name.value)
            self.fragment_costs[name] = self.selection_set(fragment.selection_set, condition) if condition else 1
        return self.fragment_costs[name]

    def field(self, node: FieldNode, parent: GraphQLNamedType) -> int:
        definition = self.definition(parent, node.name.value)
        if definition is None or node.selection_set is None:
            return 1
        child = get_named_type(definition.type)
        return 1 + self.page_size(node, definition) * self.selection_set(node.selection_set, child)

    def definition(self, parent: GraphQLNamedType, name: str) -> GraphQLField | None:
        if name == "__typename":
            return TypeNameMetaFieldDef
        if parent is self.schema.query_type and name in ("__schema", "__type"):
            return SchemaMetaFieldDef if name == "__schema" else TypeMetaFieldDef
        return getattr(parent, "fields", {}).get(name)

    def page_size(self, node: FieldNode, definition: GraphQLField) -> int:
        """How many items a connection returns: its first/last, or graphene-django's maximum page."""
        if not any(name in definition.args for name in PAGINATION_ARGUMENTS):
            return 1
        self.check_cursors(node)
        sizes = []
        for argument in node.arguments:
            if argument.name.value not in PAGINATION_ARGUMENTS:
                continue
            value: Any = argument.value
            if isinstance(value, VariableNode):
                value = self.variables.get(value.name.value)
            if isinstance(value, IntValueNode):
                value = int(value.value)
            if isinstance(value, int) and not isinstance(value, bool):
                if not 0 <= value <= self.max_page:
                    self.errors.append(
                        limit_error(
                            f"'{argument.name.value}' on '{node.name.value}' "
                            f"must be between 0 and {self.max_page}, got {value}.",
                            "pageSize",
                            max=self.max_page,
                        )
                    )
                sizes.append(min(max(value, 0), self.max_page))
        return max(sizes) if sizes else self.max_page

    def check_cursors(self, node: FieldNode) -> None:
        for argument in node.arguments:
            if argument.name.value not in CURSOR_ARGUMENTS:
                continue
            value: Any = argument.value
            if isinstance(value, VariableNode):
                value = self.variables.get(value.name.value)
            elif isinstance(value, StringValueNode):
                value = value.value
            elif isinstance(value, NullValueNode):
                value = None
            message = cursor_error(argument.name.value, node.name.value, value)
            if message is not None:
                self.errors.append(
                    GraphQLError(message, node, extensions={"code": "BAD_USER_INPUT", "argument": argument.name.value})
                )
