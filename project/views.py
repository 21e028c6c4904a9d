"""HTTP endpoints beside GraphQL: the GraphQL view itself and health checks."""

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView as BaseGraphQLView

from api.auth import bearer_token
from api.errors import format_error

logger = logging.getLogger(__name__)


@method_decorator(csrf_exempt, name="dispatch")
class GraphQLView(BaseGraphQLView):
    """graphene-django's view with the error codes the websocket uses too.

    CSRF protects ambient credentials: a request that carries the session cookie must pass
    Django's CSRF check; one that authenticates with a bearer token, or carries no cookie at
    all, cannot be forged by another site and needs no CSRF token.
    """

    format_error = staticmethod(format_error)

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
    if hasattr(layer, "connection"):  # channels-redis: ask Redis itself
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
