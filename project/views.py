"""HTTP endpoints beside GraphQL: the GraphQL view itself and health checks."""

import asyncio
import hmac
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.cache import patch_vary_headers
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView as BaseGraphQLView
from graphene_django.views import HttpError
from graphql import ExecutionResult, GraphQLError, OperationType, execute_sync
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import validation
from api.auth import bearer_token
from api.errors import format_error
from core import graphql_over_http as spec
from core.client_ip import request_ip
from core.metrics import REGISTRY
from core.networks import address_in
from notifications.hub.hub import hub_problem
from notifications.runtime import layers

logger = logging.getLogger(__name__)

# `extensions.code` of the requests the view refuses before any GraphQL runs, by HTTP status.
HTTP_ERROR_CODES = {405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE"}
SUBSCRIPTIONS_ELSEWHERE = (
    "Subscriptions run over a websocket on this same URL (graphql-transport-ws or graphql-ws), or over HTTP "
    "as a stream: a JSON POST or a GET with 'Accept: text/event-stream' (graphql-sse), or a JSON POST with "
    "'Accept: multipart/mixed;subscriptionSpec=1.0' (Apollo Client's HttpLink)."
)


# graphene-django's dispatch without the ensure_csrf_cookie it is wrapped in (tests/test_internals.py
# checks both): a request signed in with a bearer token has no use for a CSRF cookie, and
# ensure_csrf_cookie masks a fresh random token for every response, before the view runs.
_dispatch_without_csrf_cookie = BaseGraphQLView.dispatch.__wrapped__


@method_decorator(csrf_exempt, name="dispatch")
class GraphQLView(BaseGraphQLView):
    """graphene-django's view with the error codes and document limits the websocket uses too.

    CSRF protects ambient credentials: a request that carries the session cookie must pass
    Django's CSRF check; one that authenticates with a bearer token, or carries no cookie at
    all, cannot be forged by another site and needs no CSRF token. Answers carry the CSRF cookie
    (as graphene-django's view does) for pages that sign in with the session, except those to a
    request signed in with a bearer token.

    The response's media type and status follow the GraphQL-over-HTTP spec (core/graphql_over_http.py).
    """

    response_format = spec.UNSPECIFIED
    answer_content_type: str | None = None  # set once a GraphQL response (not an HTTP refusal) is made

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
            code = HTTP_ERROR_CODES.get(error.response.status_code, "BAD_REQUEST")
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
        extensions_error = spec.extensions_error(self.extensions(request, data))
        if extensions_error is not None:
            return ExecutionResult(errors=[extensions_error])
        verdict = validation.check(query, variables, operation_name)
        if verdict.errors:
            return ExecutionResult(errors=verdict.errors)
        if verdict.operation is OperationType.SUBSCRIPTION:
            return ExecutionResult(
                errors=[GraphQLError(SUBSCRIPTIONS_ELSEWHERE, extensions={"code": "BAD_USER_INPUT"})]
            )
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
        bearer = bearer_token(request.headers.get("Authorization")) is not None
        if settings.SESSION_COOKIE_NAME in request.COOKIES and not bearer:
            rejection = CsrfViewMiddleware(lambda _: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]
            if rejection is not None:
                return rejection
        if request.method not in ("GET", "POST"):
            return super().dispatch(request, *args, **kwargs)  # graphene-django's 405
        accept = request.headers.get("Accept")
        chosen = spec.response_format(accept)
        if chosen is None:
            # A client that takes only a stream: graphql-sse answers in its own event stream;
            # for Apollo's multipart (errors before a subscription starts, queries) plain JSON.
            stream = spec.stream_for(accept, "POST")
            chosen = {spec.SSE: spec.EVENT_STREAM_RESPONSE, spec.MULTIPART: spec.UNSPECIFIED}.get(stream or "")
        if chosen is None and not (self.graphiql and spec.accepts(accept, spec.HTML)):
            response = self.not_acceptable(request)
        else:
            self.response_format = chosen or spec.UNSPECIFIED
            if bearer:
                response = _dispatch_without_csrf_cookie(self, request, *args, **kwargs)
            else:
                response = super().dispatch(request, *args, **kwargs)
            if self.answer_content_type is not None:
                response["Content-Type"] = self.answer_content_type
            if self.answer_content_type == spec.EVENT_STREAM_RESPONSE.content_type:
                response.content = spec.sse_result(response.content.decode()).encode()
                response["Cache-Control"] = "no-cache"
        patch_vary_headers(response, ["Accept"])
        return response

    def get_response(self, request: HttpRequest, data: Any, show_graphiql: bool = False) -> tuple[str | None, int]:
        """graphene-django's response, with the status and media type the negotiated format gives it."""
        result, status = super().get_response(request, data, show_graphiql)
        if self.batch or result is None:
            return result, status  # the spec has no batches: they keep graphene-django's codes
        has_data = status == 200  # graphene-django leaves `data` out, with a 400, after a request error
        well_formed = has_data or self.well_formed(request, data)
        self.answer_content_type = self.response_format.content_type_for(well_formed=well_formed)
        return result, self.response_format.status(has_data=has_data, well_formed=well_formed)

    def well_formed(self, request: HttpRequest, data: Any) -> bool:
        query, variables, operation_name, _ = self.get_graphql_params(request, data)
        return spec.well_formed(query, variables, operation_name, self.extensions(request, data))

    @staticmethod
    def extensions(request: HttpRequest, data: Any) -> Any:
        """The request's `extensions` parameter, read where graphene-django reads the others."""
        return spec.extensions_parameter(request.GET.get("extensions") or data.get("extensions"))

    def not_acceptable(self, request: HttpRequest) -> HttpResponse:
        offered = f"{spec.GRAPHQL_RESPONSE_JSON}, {spec.JSON} or {spec.EVENT_STREAM}" + (
            " (or text/html for GraphiQL)" if self.graphiql else ""
        )
        response = HttpResponse(status=406, content_type=spec.JSON)
        error = HttpError(response, f"The Accept header allows no media type this endpoint answers with: {offered}.")
        response.content = self.json_encode(request, {"errors": [self.format_error(error)]})
        return response


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving HTTP."""
    return JsonResponse({"status": "ok"})


def _database_ok() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer_ok() -> None:
    await layers.ping(get_channel_layer())


async def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database and the channel layer answer, and this process's delivery hub
    (started with the process) delivers. 503 with the reason otherwise."""
    problems = {}
    hub = hub_problem()
    if hub is not None:
        problems["subscriptions"] = hub
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


def scrape_allowed(request: HttpRequest) -> bool:
    """A matching METRICS_TOKEN bearer, or a request from an allowed client address.

    The client address is the one every per-address rule uses (core/client_ip.py, which believes
    X-Forwarded-For only from TRUSTED_PROXIES). Behind a proxy that is not trusted, the proxy's
    own address is not enough either: the client it names, the last X-Forwarded-For entry, must
    be allowed too, so the public cannot read metrics through a load balancer on loopback.
    """
    token = settings.METRICS_TOKEN
    offered = bearer_token(request.headers.get("Authorization"))
    if token and offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    allowed = settings.METRICS_ALLOWED_IPS
    if not address_in(request_ip(request), allowed):
        return False
    forwarded = request.headers.get("X-Forwarded-For")
    return forwarded is None or address_in(forwarded.split(",")[-1], allowed)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition; 403 for anyone not allowed to scrape."""
    if not scrape_allowed(request):
        return HttpResponse("Metrics are not available to you.\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
