"""The private or undocumented parts of Daphne, Twisted, Autobahn, Channels, channels-redis,
django-channels-graphql-ws, Django, graphene-django, graphql-core, django-cors-headers, psycopg_pool (and pytest-xdist)
this project relies on.

Each is used in one place only and pinned in the requirements:
- Daphne, Twisted, Autobahn: notifications/transports/direct.py (direct writes, close codes,
  the write buffer) and project/server.py (the sweeps);
- Channels: notifications/transports/consumers.py's __call__ (channels' consumer loop, replaced);
- django-channels-graphql-ws: notifications/transports/consumers.py (hooks and private state);
- channels-redis: notifications/runtime/layers.py (create_pool, group_send's parts, the receive's pop,
  and connection() for /readyz);
- Django: project/handlers.py (ASGIHandler's middleware loading and response hop, and its own
  ThreadSensitiveContext deferring to the handler's), api/ratelimit.py (RedisCache's pool);
- graphene-django, graphql-core: api/schema.py's ConnectionField, api/selection.py, project/views.py
  (graphene-django's dispatch without its ensure_csrf_cookie);
- django-cors-headers: notifications/transports/origins.py (whether an origin is listed);
- psycopg_pool: core/postgresql/base.py (the check of the pool Django builds);
- pytest-xdist (the test runner, not the product): tests/scheduling.py (the scheduler's scope).
A
version bump that changes one of them fails here, loudly, instead of quietly turning a guard
off (a slow reader never closed, a sweep never run, a library cache back in use).
"""

import asyncio
import inspect
import socket
from types import SimpleNamespace
from typing import Any

import channels_redis.core
import django.db
import pytest
from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from channels.consumer import AsyncConsumer, get_handler_name
from channels_graphql_ws import GraphqlWsConsumer
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from corsheaders.middleware import CorsMiddleware
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import close_old_connections, reset_queries
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from twisted.internet import tcp
from twisted.python import failure

from notifications.runtime import layers
from notifications.transports import direct as transport
from notifications.transports import origins
from notifications.transports.consumers import GraphqlConsumer
from notifications.transports.streams import chunk
from project.handlers import OneHopASGIHandler
from project.server import SweepingServer
from tests.scheduling import SharedFixtureScheduling


async def test_daphne_hands_applications_a_send_that_leads_to_the_websocket_protocol():
    captured: dict[str, Any] = {}

    async def application(scope, receive, send):
        captured["send"] = send

    server = Server(application=application, endpoints=["tcp:port=0"])  # never run: only built
    protocol = WebSocketProtocol()
    server.connections = {protocol: {}}
    server.create_application(protocol, {"type": "websocket"})
    await server.connections[protocol]["application_instance"]
    assert transport.daphne_protocol(captured["send"]) is protocol


def test_autobahn_lets_us_send_any_close_code_with_a_handshake_timeout():
    assert "closeHandshakeTimeout" in AutobahnProtocol.CONFIG_ATTRS_COMMON
    parameters = inspect.signature(AutobahnProtocol.sendCloseFrame).parameters
    assert {"code", "reasonUtf8"} <= set(parameters)
    assert WebSocketProtocol.STATE_OPEN == AutobahnProtocol.STATE_OPEN


class _Reactor:
    """Just enough of a reactor for a Twisted TCP connection to accept writes."""

    def __init__(self) -> None:
        self.writers: set[Any] = set()

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)

    def addReader(self, reader: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass


def test_twisted_write_buffer_is_where_the_slow_reader_guard_reads_it():
    ours, theirs = socket.socketpair()
    try:
        connection = tcp.Connection(ours, None, reactor=_Reactor())  # type: ignore[arg-type]
        connection.connected = True  # what makeConnection sets on an accepted socket
        assert transport.plain_tcp_socket(connection) is ours
        assert transport.nothing_queued(connection) and transport.unread_bytes(connection) == 0
        connection.write(b"x" * 1000)
        assert transport.unread_bytes(connection) == 1000
        assert not transport.nothing_queued(connection)
        connection.doWrite()  # the reactor found the socket writable: the peer's buffer takes it all
        assert transport.unread_bytes(connection) == 0 and transport.nothing_queued(connection)
        assert len(theirs.recv(4096)) == 1000
    finally:
        ours.close()
        theirs.close()


def test_unread_bytes_raises_rather_than_answering_zero_when_twisted_changes():
    class Changed:
        pass

    try:
        transport.unread_bytes(Changed())
    except RuntimeError as error:
        assert "Twisted" in str(error)
    else:
        raise AssertionError("a transport without Twisted's buffer must not read as empty")


def test_daphne_sweeps_reschedule_themselves_as_the_server_command_expects():
    assert "callLater(1, self.application_checker)" in inspect.getsource(Server.application_checker)
    assert "callLater(2, self.timeout_checker)" in inspect.getsource(Server.timeout_checker)
    assert SweepingServer.application_checker is not Server.application_checker


def test_the_library_hooks_the_consumer_overrides_are_still_called():
    receive = inspect.getsource(GraphqlWsConsumer.receive_json)
    subscribe = inspect.getsource(GraphqlWsConsumer._on_gql_subscribe)
    connection_init = inspect.getsource(GraphqlWsConsumer._on_gql_connection_init)
    assert "self._operation_locks" in receive and "self._send_gql_error(" in receive
    assert "self._on_gql_subscribe__parse_query(" in subscribe
    assert "self._send_gql_connection_ack()" in connection_init
    assert "self._format_error(" in inspect.getsource(GraphqlWsConsumer._send_gql_error)
    assert "self._send_gql_complete(" in inspect.getsource(GraphqlWsConsumer._on_gql_complete)
    for name in ("_send_gql_connection_ack", "_send_gql_complete", "_send_gql_error", "_on_gql_subscribe__parse_query"):
        assert inspect.iscoroutinefunction(getattr(GraphqlWsConsumer, name)), name
    consumer = GraphqlConsumer()
    assert consumer._subscriptions == {} and len(consumer._operation_locks) == 0


def test_an_operation_holds_its_lock_while_it_runs():
    """GraphqlConsumer.access_ended lets running operations answer before the 4403: it waits on these locks."""
    receive = inspect.getsource(GraphqlWsConsumer.receive_json)
    assert "self._operation_locks[op_id] = op_lock" in receive
    assert "await op_lock.acquire()" in receive
    running = receive.index("await self._on_gql_subscribe(op_id")
    assert receive.index("await op_lock.acquire()") < running < receive.index("op_lock.release()")


def _flush(connection: tcp.Connection, reactor: _Reactor) -> None:
    """What the reactor does while the socket is writable: write while Twisted wants to, drop when told to."""
    for _ in range(1000):
        if connection not in reactor.writers:
            return
        why = connection.doWrite()
        if why:
            reactor.removeWriter(connection)
            connection.connectionLost(failure.Failure(why))


async def test_an_http_stream_under_daphne_is_written_and_ended_as_notifications_streams_expect():
    """Daphne's HTTP `send` leads to its WebRequest; a response started through it is chunked,
    takes direct writes after its headers, ends with Twisted's last chunk, and a paused
    HTTPChannel does not keep close_when_flushed() from closing the connection."""
    seen: dict[str, Any] = {}
    big = b"event: next\ndata: " + b"x" * 70_000 + b"\n\n"

    async def application(scope, receive, send):
        await receive()
        direct = transport.DirectStream(send)
        seen["request"] = direct.request
        direct.start(200, [(b"content-type", b"text/event-stream")], b": open\n\n")
        seen["chunked"] = direct.chunked
        seen["open"] = transport.http_response_open(direct.request)
        seen["unread"] = direct.write(chunk(big))  # more than Twisted's buffer: it pauses the HTTPChannel
        seen["paused"] = transport.http_transport(direct.request).producerPaused
        direct.finish(b": end\n\n", hang_up_after=30)
        seen["open_after"] = transport.http_response_open(direct.request)
        await receive()  # Daphne tells the application the response is over

    server = Server(application=application, endpoints=["tcp:port=0"])  # never run: only built
    server.connections = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    ours.setblocking(False)
    try:
        protocol = HTTPFactory(server).buildProtocol(("127.0.0.1", 1))
        reactor = _Reactor()
        connection = tcp.Server(ours, protocol, ("127.0.0.1", 1), None, 0, reactor)  # type: ignore[arg-type]
        protocol.makeConnection(connection)
        protocol.dataReceived(b"GET /graphql/ HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        [instance] = [details["application_instance"] for details in server.connections.values()]
        await asyncio.wait_for(instance, 5)
        assert isinstance(seen["request"], WebRequest)
        assert seen["chunked"] and seen["open"] and not seen["open_after"]
        assert seen["unread"] > len(big)  # behind the headers Twisted still holds: queued, never sent out of order
        assert seen["paused"]
        _flush(connection, reactor)
        theirs.settimeout(5)
        received = b""
        while data := theirs.recv(65536):
            received += data
        assert connection.disconnected
        head, body = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
        assert body == chunk(b": open\n\n") + chunk(big) + chunk(b": end\n\n") + b"0\r\n\r\n"
    finally:
        ours.close()
        theirs.close()


def test_graphene_django_hands_connection_resolver_what_api_schema_expects():
    """api/schema.py's ConnectionField replaces connection_resolver, which wrap_resolve calls with
    these leading arguments (then root, info and the field's arguments)."""
    from graphene_django import DjangoConnectionField

    from api.schema import ConnectionField

    expected = ["resolver", "connection", "default_manager", "queryset_resolver", "max_limit", "enforce_first_or_last"]
    assert list(inspect.signature(DjangoConnectionField.connection_resolver).parameters)[:6] == expected
    assert list(inspect.signature(ConnectionField.connection_resolver).parameters)[:6] == expected
    source = inspect.getsource(DjangoConnectionField.wrap_resolve)
    for passed in ("self.connection_resolver", "self.max_limit", "self.enforce_first_or_last"):
        assert passed in source, passed


def test_graphene_django_wraps_the_dispatch_the_view_calls_for_bearer_requests_in_ensure_csrf_cookie():
    """project/views.py calls graphene-django's dispatch without its ensure_csrf_cookie (the
    function that decorator wraps, `__wrapped__`) for a request signed in with a bearer token."""
    from graphene_django.views import GraphQLView as GrapheneView

    from project import views

    assert views._dispatch_without_csrf_cookie is GrapheneView.dispatch.__wrapped__
    assert GrapheneView.dispatch is not views._dispatch_without_csrf_cookie
    assert "@method_decorator(ensure_csrf_cookie)\n    def dispatch(" in inspect.getsource(GrapheneView)


def test_graphql_core_collect_fields_applies_fragments_and_directives_for_a_type():
    """api/selection.py walks a selection with graphql-core's collect_fields (not in graphql.execution's __all__)."""
    from graphql import FragmentDefinitionNode, GraphQLObjectType, parse
    from graphql.execution.collect_fields import collect_fields

    from core.schema import graphql_schema

    schema = graphql_schema()
    document = parse(
        "{ node(id: 1) { ...B ... on Author { username } title @skip(if: true) t: title } }"
        " fragment B on Blog { content }"
    )
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    node = document.definitions[0].selection_set.selections[0]  # type: ignore[attr-defined]
    blog = schema.get_type("Blog")
    assert isinstance(blog, GraphQLObjectType)
    fields = collect_fields(schema, fragments, {}, blog, node.selection_set)
    assert list(fields) == ["content", "t"]


class FakeWorker:
    """What xdist's scheduler calls on a worker: the test indices it is sent."""

    shutting_down = False

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def test_xdist_hands_out_whole_work_units_as_tests_scheduling_names_them():
    """tests/scheduling.py groups modules by overriding xdist's LoadScopeScheduling._split_scope: if xdist
    stops asking it, every module of the shared PostgreSQL stack would start a stack of its own."""
    collection = [
        "tests/test_stack.py::test_a",
        "tests/test_hub.py::test_b",
        "tests/test_faults.py::test_c",
        "tests/test_hub.py::test_d",
        "tests/test_http_streams_stack.py::test_e",
    ]
    config = SimpleNamespace(getvalue={"tx": ["2*popen"]}.get, option=SimpleNamespace(loadscopereorder=False))
    scheduler = SharedFixtureScheduling(config)
    workers = [FakeWorker("gw0"), FakeWorker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    assert {frozenset(collection[i] for i in worker.sent) for worker in workers} == {
        frozenset(collection[i] for i in (0, 2, 4)),  # one unit: the modules of the shared stack
        frozenset(collection[i] for i in (1, 3)),  # one module
    }


def test_channels_consumer_loop_is_still_what_the_consumer_replaces():
    """GraphqlConsumer.__call__ replaces AsyncConsumer.__call__: no channel layer per socket, and
    no dispatch(), whose aclose_old_connections hops to a thread before every message."""
    loop = inspect.getsource(AsyncConsumer.__call__)
    assert "self.scope = scope" in loop and "self.base_send = send" in loop
    assert "self.channel_layer = get_channel_layer(" in loop and "await_many_dispatch(" in loop
    assert "aclose_old_connections()" in inspect.getsource(AsyncConsumer.dispatch)
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"
    assert GraphqlConsumer.__call__ is not AsyncConsumer.__call__


def test_channels_redis_builds_its_pools_where_the_layer_overrides_it():
    assert list(inspect.signature(ChannelsRedisLayer.create_pool).parameters) == ["self", "index"]
    assert "create_pool(index)" in inspect.getsource(channels_redis.core)
    assert layers.RedisChannelLayer.create_pool is not ChannelsRedisLayer.create_pool
    layer = layers.RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    assert isinstance(layer.hosts[0], dict) and "address" in layer.hosts[0]
    assert isinstance(layer.brpop_timeout, int | float)


async def test_channels_redis_connection_is_the_client_readyz_pings(redis_server):
    assert list(inspect.signature(ChannelsRedisLayer.connection).parameters) == ["self", "index"]
    layer = layers.RedisChannelLayer(hosts=[redis_server.url])
    assert isinstance(layer.connection(0), Redis)
    await layers.ping(layer)  # answers
    await layer.close_pools()
    nobody = layers.RedisChannelLayer(hosts=["redis://127.0.0.1:1"])  # nothing listens there
    with pytest.raises(RedisConnectionError):
        await layers.ping(nobody)
    await nobody.close_pools()


def test_django_asgi_handler_still_takes_the_hops_the_one_hop_handler_removes():
    assert "is_async" in inspect.signature(BaseHandler.load_middleware).parameters
    assert "self.get_response_async(" in inspect.getsource(ASGIHandler.run_get_response)
    assert OneHopASGIHandler.get_response_async is not BaseHandler.get_response_async
    # Django connects these two to request_started itself; the handler takes them off.
    source = inspect.getsource(django.db)
    assert "signals.request_started.connect(reset_queries)" in source
    assert "signals.request_started.connect(close_old_connections)" in source
    OneHopASGIHandler()
    try:
        assert not signals.request_started.disconnect(reset_queries)
        assert not signals.request_started.disconnect(close_old_connections)
    finally:
        signals.request_started.connect(reset_queries)
        signals.request_started.connect(close_old_connections)


def test_django_redis_cache_hands_out_the_pool_the_rate_limit_counts_with(redis_server):
    """api/ratelimit.py counts with a client of RedisCache's own pool (`_cache._get_connection_pool`),
    one per pool; what it writes is what the cache API reads back (integers are stored as such,
    under the cache's full key), and the window's key expires."""
    import redis
    from django.core.cache.backends.redis import RedisCache

    from api import ratelimit

    backend = RedisCache(redis_server.url, {"KEY_PREFIX": "internals"})
    get_pool = backend._cache._get_connection_pool  # type: ignore[attr-defined]
    pool = get_pool(write=True)
    assert isinstance(pool, redis.ConnectionPool)
    assert get_pool(write=True) is pool
    full_key = backend.make_and_validate_key("k")
    backend.delete("k")
    script = ratelimit._script(backend, ratelimit._COUNT_SCRIPT)
    assert script is ratelimit._script(backend, ratelimit._COUNT_SCRIPT)
    assert int(script(keys=[full_key], args=[60])) == 1
    assert int(script(keys=[full_key], args=[60])) == 2
    assert backend.get("k") == 2 and 0 < redis.Redis(connection_pool=pool).ttl(full_key) <= 60
    assert "_cache._get_connection_pool" in inspect.getsource(ratelimit)


async def test_django_defers_to_an_outer_thread_sensitive_context_with_an_executor():
    """project/handlers.py leases a reused thread by entering ThreadSensitiveContext(executor=...)
    around Django's ASGIHandler, which enters a ThreadSensitiveContext() of its own: asgiref lets
    the outer one decide, so a request's sync code runs on the leased thread."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import ThreadSensitiveContext, sync_to_async

    assert "ThreadSensitiveContext()" in inspect.getsource(ASGIHandler.__call__)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="leased") as executor:
        async with ThreadSensitiveContext(executor=executor), ThreadSensitiveContext():
            name = await sync_to_async(lambda: threading.current_thread().name, thread_sensitive=True)()
    assert name.startswith("leased")


def test_django_cors_headers_decides_whether_an_origin_is_listed_as_origins_py_asks(settings):
    """notifications/transports/origins.py asks the library's middleware whether a page's origin is
    listed, so websockets and HTTP streams admit exactly the pages the HTTP answers admit."""
    assert list(inspect.signature(CorsMiddleware.origin_found_in_white_lists).parameters) == ["self", "origin", "url"]
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com", "http://127.0.0.1:5173"]
    settings.CORS_ALLOWED_ORIGIN_REGEXES = [r"^http://localhost(:[0-9]{1,5})?$"]
    assert origins.listed("https://app.example.com") and origins.listed("http://127.0.0.1:5173")
    assert origins.listed("http://localhost:3000")
    for other in ("http://127.0.0.1:5174", "http://app.example.com", "https://app.example.com.evil", "null"):
        assert not origins.listed(other), other


def test_channels_redis_receives_through_the_pop_and_cleaner_the_layer_replaces():
    """notifications/runtime/layers.py replaces the pop and the backup's cleaner; the library's
    receive must still call both, with these arguments, and nothing else that backs up."""
    source = inspect.getsource(ChannelsRedisLayer.receive_single)
    assert "self._brpop_with_clean(\n                    index, channel_key, timeout=self.brpop_timeout\n" in source
    assert "self._clean_receive_backup(index, channel_key)" in source
    for name, parameters in (
        ("_brpop_with_clean", ["self", "index", "channel", "timeout"]),
        ("_clean_receive_backup", ["self", "index", "channel"]),
    ):
        assert list(inspect.signature(getattr(ChannelsRedisLayer, name)).parameters) == parameters, name
        assert getattr(layers.RedisChannelLayer, name) is not getattr(ChannelsRedisLayer, name), name
    backups = [line for line in inspect.getsource(channels_redis.core).splitlines() if "_backup_channel_name(" in line]
    assert len(backups) == 3, backups  # defined once, used by the pop and by the cleaner only


def test_channels_redis_group_send_is_what_the_layer_pipelines(redis_server):
    """notifications/runtime/layers.py sends to a group with channels-redis's own script, keys,
    serialisation and host count (`ring_size`): the library's group_send must still be made of them."""
    source = inspect.getsource(ChannelsRedisLayer.group_send)
    library_script = source.split('"""')[3] if source.count('"""') >= 4 else ""
    assert " ".join(library_script.split()) == " ".join(layers.GROUP_SEND_LUA.split())
    for part in ("self._group_key(group)", "self._map_channel_keys_to_connection(", "self.consistent_hash(group)"):
        assert part in source, part

    assert layers.RedisChannelLayer(hosts=[redis_server.url]).ring_size == 1  # one host: one-round-trip sends
    assert layers.RedisChannelLayer(hosts=[redis_server.url] * 2).ring_size == 2

    async def roundtrip() -> list[dict[str, Any]]:
        layer = layers.RedisChannelLayer(hosts=[redis_server.url], capacity=2)
        try:
            first, second = await layer.new_channel(), await layer.new_channel()
            for channel in (first, second):
                await layer.group_add("internals-group", channel)
            await layer.group_send("internals-group", {"type": "t", "n": 1})
            return [await layer.receive(first), await layer.receive(second)]
        finally:
            await layer.close_pools()

    assert asyncio.run(roundtrip()) == [{"type": "t", "n": 1}] * 2


def test_django_builds_the_psycopg_pool_with_its_own_check_which_the_backend_replaces():
    """core/postgresql/base.py sets the pool's `_check` after Django built it (Django passes `check`
    itself, so OPTIONS cannot): the pool must still keep the check there and call it on checkout."""
    from django.db.backends.postgresql.base import DatabaseWrapper
    from psycopg_pool import ConnectionPool

    source = inspect.getsource(vars(DatabaseWrapper)["pool"].fget)
    assert "check=ConnectionPool.check_connection if enable_checks else None" in source

    def check(connection: object) -> None:
        raise AssertionError("only stored here")

    pool = ConnectionPool("", open=False, check=check)
    assert pool._check is check
    assert "self._check(conn)" in inspect.getsource(ConnectionPool._check_connection)
