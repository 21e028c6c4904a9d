"""Django's ASGI handler, with the whole request in one hop to the sync thread."""

from typing import Any

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, reset_queries
from django.http import HttpRequest
from django.http.response import HttpResponseBase


class OneHopASGIHandler(ASGIHandler):
    """Runs the middleware chain and the view together in Django's sync thread.

    Django's async chain switches modes at every sync-only middleware (whitenoise, the bearer
    token) and again for the sync GraphQL view: five or more round trips between the event loop
    and the thread per request, each waiting for the loop, which a fan-out may be holding.
    Everything here is sync anyway, so one hop in and one out is enough. Async views still work:
    Django runs them with async_to_sync from the sync chain.

    The database's request_started receivers cost a hop of their own before every request; they
    run at the start of the request's hop instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        signals.request_started.disconnect(reset_queries)
        signals.request_started.disconnect(close_old_connections)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self._get_response_in_thread, thread_sensitive=True)(request)

    def _get_response_in_thread(self, request: HttpRequest) -> HttpResponseBase:
        reset_queries()
        close_old_connections()
        return self.get_response(request)
