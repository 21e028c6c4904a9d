"""Django's ASGI handler, with the whole request in one hop to a reused sync thread."""

from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, reset_queries
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from project.request_threads import threads_for

# Load balancers' probes: answered on threads of their own, so that a request pool busy with
# slow requests never makes an instance look dead (/healthz) or unready (/readyz).
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


class OneHopASGIHandler(ASGIHandler):
    """Runs the middleware chain and the view together in a sync thread leased for the request.

    Django's async chain switches modes at every sync-only middleware (whitenoise, the bearer
    token) and again for the sync GraphQL view: five or more round trips between the event loop
    and the thread per request, each waiting for the loop, which a fan-out may be holding.
    Everything here is sync anyway, so one hop in and one out is enough. Async views still work:
    Django runs them with async_to_sync from the sync chain.

    The database's request_started receivers cost a hop of their own before every request; they
    run at the start of the request's hop instead.

    Each request's thread-sensitive work runs on a thread of project/request_threads.py (through
    asgiref's ThreadSensitiveContext with an executor, which Django's own inner context defers
    to): HTTP_THREADS threads for requests, HEALTH_THREADS for health probes, none started per
    request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        signals.request_started.disconnect(reset_queries)
        signals.request_started.disconnect(close_old_connections)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await super().__call__(scope, receive, send)  # Django's own refusal
            return
        if scope.get("path") in HEALTH_PATHS:
            threads = threads_for("health", settings.HEALTH_THREADS)
        else:
            threads = threads_for("http", settings.HTTP_THREADS)
        async with threads.lease() as thread, ThreadSensitiveContext(executor=thread):
            await super().__call__(scope, receive, send)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self._get_response_in_thread, thread_sensitive=True)(request)

    def _get_response_in_thread(self, request: HttpRequest) -> HttpResponseBase:
        reset_queries()
        close_old_connections()
        return self.get_response(request)
