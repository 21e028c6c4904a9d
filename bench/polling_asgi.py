"""The BASELINE: the seed article's subscription design, served by Daphne for comparison.

The seed (shared/seeds/000_*.txt) makes each subscriber's source an async generator that sleeps
one second, reads the latest blog with `database_sync_to_async(Blog.objects.latest)`, reads its
author with a second query, and yields it. Here it yields only when the latest blog changed (the
seed yields the same blog again every second; that would only make the baseline look worse).

It speaks just enough graphql-transport-ws for the benchmark clients (connection_init/ack with
the instance name, subscribe/next/complete, ping/pong), uses the project's settings, models and
BlogType, and answers `/healthz` like the product, so the same clients and launcher work on both.

Never used by the product: only `python -m bench` starts it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

import graphene  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402
from graphql import ExecutionResult  # noqa: E402

from api.models import Blog  # noqa: E402
from api.schema import BlogType  # noqa: E402

POLL_SECONDS = float(os.environ.get("BENCH_POLL_SECONDS", "1"))


def latest_blog(author: str | None) -> Blog | None:
    """The seed's two queries: the latest blog, then its author."""
    blogs = Blog.objects.all() if author is None else Blog.objects.filter(author__username=author)
    try:
        blog = blogs.latest("published_at", "id")
    except Blog.DoesNotExist:
        return None
    blog.author  # noqa: B018 - the seed's second query, loaded here so resolvers need no database
    return blog


class PolledBlogPublished(graphene.ObjectType):
    class Meta:
        name = "BlogPublished"

    cursor = graphene.String(required=True)
    blog = graphene.Field(BlogType, required=True)


class Subscription(graphene.ObjectType):
    blog_published = graphene.Field(PolledBlogPublished, required=True, author=graphene.String())

    @staticmethod
    async def subscribe_blog_published(root: Any, info: Any, author: str | None = None) -> Any:
        last_id = None
        first = True
        while True:
            await asyncio.sleep(POLL_SECONDS)
            blog = await database_sync_to_async(latest_blog)(author)
            if blog is None or blog.pk == last_id:
                continue
            last_id = blog.pk
            if first:  # what was there before we subscribed is not news
                first = False
                continue
            yield PolledBlogPublished(cursor=str(blog.pk), blog=blog)

    @staticmethod
    def resolve_blog_published(root: Any, info: Any, author: str | None = None) -> Any:
        return root


class Query(graphene.ObjectType):
    ok = graphene.Boolean()


schema = graphene.Schema(query=Query, subscription=Subscription)


class PollingConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = "bench-no-channel-layer"  # no layer: nothing is pushed here

    async def connect(self) -> None:
        offered = [p.decode() if isinstance(p, bytes) else p for p in self.scope.get("subprotocols", [])]
        if "graphql-transport-ws" not in offered:
            await self.close()
            return
        self.operations: dict[str, asyncio.Task[None]] = {}
        await self.accept("graphql-transport-ws")

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type")
        if kind == "connection_init":
            await self.send_json({"type": "connection_ack", "payload": {"instance": settings.INSTANCE_NAME}})
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "subscribe":
            op_id = content["id"]
            self.operations[op_id] = asyncio.ensure_future(self.run_operation(op_id, content.get("payload") or {}))
        elif kind == "complete":
            task = self.operations.pop(content.get("id"), None)
            if task is not None:
                task.cancel()

    async def run_operation(self, op_id: str, payload: dict[str, Any]) -> None:
        result = await schema.subscribe(payload.get("query", ""), variable_values=payload.get("variables") or {})
        if isinstance(result, ExecutionResult):
            await self.send_json({"type": "error", "id": op_id, "payload": [e.formatted for e in result.errors or []]})
            return
        async for item in result:
            await self.send_json({"type": "next", "id": op_id, "payload": item.formatted})

    async def disconnect(self, code: int) -> None:
        for task in getattr(self, "operations", {}).values():
            task.cancel()


application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": URLRouter([path("graphql/", PollingConsumer.as_asgi())])}  # type: ignore[list-item, arg-type]
)
