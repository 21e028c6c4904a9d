"""The limits every GraphQL document passes before it runs, on HTTP and on websockets alike.

graphene-django's view and django-channels-graphql-ws each parse and validate with graphql-core's
standard rules; neither bounds what a document may cost. `check()` runs first on both paths:

- size and tokens: graphql-core's own parser limits (`max_source_length`, `max_lexical_tokens`,
  `max_comments`), so an oversized document is refused before it is even tokenised;
- introspection: graphql-core's NoSchemaIntrospectionCustomRule when GRAPHQL_INTROSPECTION is off
  (`__typename` stays allowed: Apollo and urql add it to every selection);
- depth: graphene's `depth_limit_validator`;
- cost: fields that would be resolved in the worst case, each connection multiplying its
  selection by its page size, plus the page-size bounds graphene-django would otherwise assert.

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
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule

from project.schema import schema

PAGINATION_ARGUMENTS = ("first", "last")


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
    and its chosen operation: the HTTP view executes them instead of parsing and validating again.
    """

    errors: list[GraphQLError] = field(default_factory=list)
    operation: OperationType | None = None
    document: DocumentNode | None = None
    operation_node: OperationDefinitionNode | None = None


@dataclass(frozen=True)
class _Prepared:
    """What a document's text alone decides, computed once per distinct document."""

    errors: tuple[GraphQLError, ...] = ()
    document: DocumentNode | None = None
    operation: OperationDefinitionNode | None = None


def check(query: Any, variables: Any = None, operation_name: Any = None) -> Verdict:
    """Enforce every limit on one request; an empty verdict leaves the rest to the executor."""
    return _check(query, variables, operation_name, compute=True) or Verdict()


def check_if_known(query: Any, variables: Any = None, operation_name: Any = None) -> Verdict | None:
    """`check()` when the document was checked before, else None: the caller decides where to parse it.

    The websocket answers known documents on the event loop and parses new ones in a thread.
    """
    return _check(query, variables, operation_name, compute=False)


def _check(query: Any, variables: Any, operation_name: Any, *, compute: bool) -> Verdict | None:
    if not isinstance(query, str):
        return Verdict([GraphQLError("'query' must be a string.", extensions={"code": "BAD_USER_INPUT"})])
    if variables is not None and not isinstance(variables, dict):
        return Verdict([GraphQLError("'variables' must be an object.", extensions={"code": "BAD_USER_INPUT"})])
    if operation_name is not None and not isinstance(operation_name, str):
        return Verdict([GraphQLError("'operationName' must be a string.", extensions={"code": "BAD_USER_INPUT"})])
    key = (
        query,
        operation_name,
        settings.GRAPHQL_MAX_DOCUMENT_CHARS,
        settings.GRAPHQL_MAX_TOKENS,
        settings.GRAPHQL_MAX_DEPTH,
        settings.GRAPHQL_INTROSPECTION,
    )
    prepared = _prepared.get(key)
    if prepared is None:
        if not compute:
            return None
        prepared = _prepare(*key)
        if len(_prepared) >= PREPARED_DOCUMENTS:
            oldest = next(iter(_prepared), None)  # good enough against floods of distinct documents
            if oldest is not None:
                _prepared.pop(oldest, None)
        _prepared[key] = prepared
    if prepared.errors or prepared.document is None or prepared.operation is None:
        return Verdict(list(prepared.errors))
    walk = _CostWalk(schema.graphql_schema, prepared.document, prepared.operation, variables or {})
    errors = walk.check(settings.GRAPHQL_MAX_COST)
    if errors:
        return Verdict(errors)
    return Verdict([], prepared.operation.operation, prepared.document, prepared.operation)


# Parsed and validated documents by text (and the settings that judged them). Parsing and
# graphql-core's validation were 4 ms of a mutation's 13 ms in the view, and graphene-django then
# did both again; clients send the same few documents over and over. A parsed document is never
# mutated, so one serves every request, thread and websocket that sends the same text.
PREPARED_DOCUMENTS = 1024
_prepared: dict[tuple[Any, ...], _Prepared] = {}


def _prepare(
    query: str, operation_name: str | None, max_chars: int, max_tokens: int, max_depth: int, introspection: bool
) -> _Prepared:
    """What the document's text alone decides: parse and size limits, validity, depth, introspection."""
    try:
        document = parse(query, max_source_length=max_chars, max_lexical_tokens=max_tokens, max_comments=max_tokens)
    except GraphQLError as error:
        return _Prepared((_parse_limit_error(error),) if error.message.endswith("Parsing aborted.") else ())
    graphql_schema = schema.graphql_schema
    if validate(graphql_schema, document, specified_rules, max_errors=1):
        return _Prepared()  # the executor reports plain validation errors in its own way
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        message = (
            f"Unknown operation named '{operation_name}'."
            if operation_name
            else "The document holds several operations: send 'operationName' to pick one."
        )
        return _Prepared((GraphQLError(message, extensions={"code": "BAD_USER_INPUT"}),))
    depth_errors = [
        limit_error(error.message, "depth", max=max_depth) if not error.extensions else error
        for error in validate(graphql_schema, document, [depth_limit_validator(max_depth)])
    ]
    if depth_errors:
        return _Prepared(tuple(depth_errors))
    if not introspection:
        errors = validate(graphql_schema, document, [NoSchemaIntrospectionCustomRule])
        if errors:
            return _Prepared(tuple(errors))
    return _Prepared((), document, operation)


def _parse_limit_error(error: GraphQLError) -> GraphQLError:
    if "Source contains" in error.message:
        return limit_error(error.message, "documentSize", max=settings.GRAPHQL_MAX_DOCUMENT_CHARS)
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
