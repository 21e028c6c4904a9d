"""HTTP endpoints beside GraphQL: the GraphQL view itself and health checks."""

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView as BaseGraphQLView
from graphene_django.views import HttpError
from graphql import ExecutionResult, GraphQLError, OperationType, execute_sync

from api import validation
from api.auth import bearer_token
from api.errors import format_error

logger = logging.getLogger(__name__)


@method_decorator(csrf_exempt, name="dispatch")
class GraphQLView(BaseGraphQLView):
    """graphene-django's view with the error codes and document limits the websocket uses too.

    CSRF protects ambient credentials: a request that carries the session cookie must pass
    Django's CSRF check; one that authenticates with a bearer token, or carries no cookie at
    all, cannot be forged by another site and needs no CSRF token.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Django builds a view per request, so settings (and test overrides of them) apply at once.
        batch = settings.GRAPHQL_BATCH
        kwargs.setdefault("batch", batch)
        kwargs.setdefault("graphiql", settings.GRAPHQL_GRAPHIQL and not batch)
        kwargs.setdefault("validation_rules", validation.executor_rules())
        super().__init__(**kwargs)

    @staticmethod
    def format_error(error: Exception) -> dict[str, Any]:
        if isinstance(error, HttpError):  # a request the view refused before any GraphQL ran
            code = "METHOD_NOT_ALLOWED" if error.response.status_code == 405 else "BAD_REQUEST"
            return {"message": error.message, "extensions": {"code": code}}
        return format_error(error)

    def parse_body(self, request: HttpRequest) -> Any:
        try:
            data = super().parse_body(request)
        except RecursionError as error:  # json.loads on "[[[[...": nested deeper than Python recurses
            raise HttpError(HttpResponseBadRequest("The JSON body is nested too deeply.")) from error
        if self.batch:
            if len(data) > settings.GRAPHQL_BATCH_MAX:
                raise HttpError(
                    HttpResponseBadRequest(f"A batch holds at most {settings.GRAPHQL_BATCH_MAX} operations.")
                )
            if not all(isinstance(entry, dict) for entry in data):
                raise HttpError(HttpResponseBadRequest("Each operation in a batch must be a JSON object."))
        return data

    def execute_graphql_request(
        self,
        request: HttpRequest,
        data: Any,
        query: Any,
        variables: Any,
        operation_name: Any,
        show_graphiql: bool = False,
    ) -> ExecutionResult | None:
        """Enforce the limits the websocket enforces too (api/validation.py), then run as usual."""
        if query is None or (show_graphiql and not query):
            return super().execute_graphql_request(request, data, query, variables, operation_name, show_graphiql)
        verdict = validation.check(query, variables, operation_name)
        if verdict.errors:
            return ExecutionResult(errors=verdict.errors)
        if verdict.operation is OperationType.SUBSCRIPTION:
            message = "Subscriptions run over a websocket on this same URL (graphql-transport-ws or graphql-ws)."
            return ExecutionResult(errors=[GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})])
        if verdict.document is None or (request.method == "GET" and verdict.operation is not OperationType.QUERY):
            # Invalid documents, and mutations over GET: graphene-django answers those its own way.
            return super().execute_graphql_request(request, data, query, variables, operation_name, show_graphiql)
        try:  # the document was parsed and validated once for every request that sends it (api/validation)
            return execute_sync(
                self.schema.graphql_schema,
                verdict.document,
                root_value=self.get_root_value(request),
                context_value=self.get_context(request),
                variable_values=variables,
                operation_name=operation_name,
                middleware=self.get_middleware(request),
                execution_context_class=self.execution_context_class,
            )
        except Exception as error:  # as graphene-django does: an exception becomes a (masked) error
            return ExecutionResult(errors=[GraphQLError(str(error), original_error=error)])

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        uses_session = settings.SESSION_COOKIE_NAME in request.COOKIES
        if uses_session and bearer_token(request.headers.get("Authorization")) is None:
            rejection = CsrfViewMiddleware(lambda _: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]
            if rejection is not None:
                return rejection
        return super().dispatch(request, *args, **kwargs)


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving HTTP."""
    return JsonResponse({"status": "ok"})


def _database_ok() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer_ok() -> None:
    layer = get_channel_layer()
    if layer is not None and hasattr(layer, "connection"):
        # channels-redis: ask Redis itself. Under Sentinel the connection goes to the master the
        # sentinels name, so this is 503 from the master's death until a replica is promoted.
        await layer.connection(0).ping()


async def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database and the channel layer answer. 503 with the reason otherwise."""
    problems = {}
    try:
        await asyncio.wait_for(database_sync_to_async(_database_ok)(), timeout=3)
    except Exception as error:
        problems["database"] = f"{type(error).__name__}: {error}"
    try:
        await asyncio.wait_for(_channel_layer_ok(), timeout=3)
    except Exception as error:
        problems["channel_layer"] = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if problems:
        logger.warning("Not ready: %s", problems)
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})
