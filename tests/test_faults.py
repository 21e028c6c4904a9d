"""Faults the server survives, on a real PostgreSQL + Redis + three Daphne instances behind HAProxy."""

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import websockets

from notifications.publishing.log import seq_from_cursor
from stack import forkserver
from stack.deployment import Stack
from stack.services import REPO_ROOT
from tests.fixtures_stack import GROUP_EXPIRY
from tests.live import BLOG_PUBLISHED, LATEST_CURSOR, LiveApi, assert_no_errors
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, GraphQLWSClient


@pytest.fixture
def stack(pg_stack: Stack) -> Stack:
    """The shared PostgreSQL stack (tests/fixtures_stack.py), whole at the start of each test."""
    return pg_stack


@pytest.fixture(scope="module")
def writer(shared_stack: Stack) -> tuple[LiveApi, str, str]:
    api = LiveApi(shared_stack.url)
    username, token = api.sign_up()
    return api, username, token


async def titles_of(client: GraphQLWSClient, count: int, timeout: float = 15) -> list[str]:
    received = []
    for _ in range(count):
        message = await client.next_data(timeout)
        assert "errors" not in message["payload"], message
        received.append(message["payload"]["data"]["blogPublished"]["blog"]["title"])
    return received


async def test_subscribers_outlive_the_channel_layer_group_expiry(stack: Stack, writer):
    api, username, token = writer
    client = await GraphQLWSClient(stack.instances[0].ws_url).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED, {"author": username})
        await asyncio.sleep(GROUP_EXPIRY * 2)
        api.create_blog(token, "after the group expiry")
        assert await titles_of(client, 1) == ["after the group expiry"]
    finally:
        await client.close()


async def test_redis_restart_with_data_loss_does_not_silence_subscribers(stack: Stack, writer):
    api, username, token = writer
    clients = [
        await GraphQLWSClient(instance.ws_url, protocol).connect()
        for instance, protocol in zip(stack.instances, [TRANSPORT_WS, LEGACY_WS, TRANSPORT_WS], strict=True)
    ]
    try:
        for client in clients:
            await client.subscribe(BLOG_PUBLISHED, {"author": username})
        assert stack.redis is not None
        stack.redis.restart()  # same port, empty: every group membership is gone
        api.create_blog(token, "after the Redis restart")
        for client in clients:
            assert await titles_of(client, 1, timeout=20) == ["after the Redis restart"]
    finally:
        for client in clients:
            await client.close()


async def test_blog_created_while_redis_is_down_is_kept_and_delivered_when_it_returns(stack: Stack, writer):
    api, username, token = writer
    client = await GraphQLWSClient(stack.instances[1].ws_url).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED, {"author": username})
        assert stack.redis is not None
        stack.redis.kill()
        try:
            created = api.create_blog(token, "written during the outage")  # the mutation still succeeds
        finally:
            stack.redis.start()
        assert created["title"] == "written during the outage"
        assert await titles_of(client, 1, timeout=30) == ["written during the outage"]
        logs = "".join(Path(instance.log_path).read_text() for instance in stack.instances)
        assert "failed after commit" in logs
    finally:
        await client.close()


def test_cursor_order_is_commit_order_under_concurrent_publishers_on_postgres(stack: Stack, writer):
    _, username, _ = writer
    result = forkserver.run(
        [sys.executable, "tests/scripts/concurrent_publishers.py", "8", "20"],
        cwd=REPO_ROOT,
        env={**os.environ, **stack.env, "PUBLISHER_USERNAME": username},
        timeout=120,
    )
    result.check_returncode()
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["published"] == 160
    assert seen["checks"] > 0
    assert seen["seq_holes_seen"] == 0, seen


async def test_concurrent_publishers_reach_subscribers_in_cursor_order(stack: Stack, writer):
    api, username, _ = writer
    start = assert_no_errors(api.post(LATEST_CURSOR))["latestCursor"]
    clients = [await GraphQLWSClient(instance.ws_url).connect() for instance in stack.instances]
    try:
        for client in clients:
            await client.subscribe(BLOG_PUBLISHED, {"author": username, "after": start})
        published = await asyncio.to_thread(
            forkserver.run,
            [sys.executable, "tests/scripts/concurrent_publishers.py", "6", "10"],
            cwd=REPO_ROOT,
            env={**os.environ, **stack.env, "PUBLISHER_USERNAME": username},
            timeout=120,
        )
        published.check_returncode()
        first = seq_from_cursor(start) + 1
        for client in clients:
            seqs = []
            for _ in range(60):
                message = await client.next_data(20)
                seqs.append(seq_from_cursor(message["payload"]["data"]["blogPublished"]["cursor"]))
            assert seqs == list(range(first, first + 60))
    finally:
        for client in clients:
            await client.close()


BLOG_CHANGED = """subscription Changes($author: String, $after: String) {
  blogChanged(author: $author, after: $after) { cursor kind blogId }
}"""


async def test_concurrent_creations_edits_and_deletions_reach_subscribers_once_in_commit_order(stack: Stack, writer):
    """Six writers on PostgreSQL, each creating, editing and deleting at once: every instance's
    subscriber gets the changes once each, in number order, each blog's in the order they were
    made, and every surviving blog's creation and edit and every deletion.

    A change whose broadcast comes later than the reorder window is read from the log, where a
    blog deleted meanwhile has left only its tombstone: its creation or edit may then be missing
    (deleted means deleted), never its deletion, never a surviving blog's change.
    """
    api, username, _ = writer
    start = assert_no_errors(api.post(LATEST_CURSOR))["latestCursor"]
    clients = [await GraphQLWSClient(instance.ws_url).connect() for instance in stack.instances]
    try:
        for client in clients:
            await client.subscribe(BLOG_CHANGED, {"author": username, "after": start})
        published = await asyncio.to_thread(
            forkserver.run,
            [sys.executable, "tests/scripts/concurrent_publishers.py", "6", "10", "mixed"],
            cwd=REPO_ROOT,
            env={**os.environ, **stack.env, "PUBLISHER_USERNAME": username},
            timeout=120,
        )
        published.check_returncode()
        last = seq_from_cursor(start) + 6 * (10 + 10 + 5)  # every writer's last change is a deletion
        for client in clients:
            changes: list[dict] = []
            while not changes or seq_from_cursor(changes[-1]["cursor"]) < last:
                changes.append((await client.next_data(20))["payload"]["data"]["blogChanged"])
            seqs = [seq_from_cursor(c["cursor"]) for c in changes]
            assert seqs == sorted(set(seqs)) and seqs[-1] == last, seqs
            by_blog: dict[str, list[str]] = {}
            for change in changes:
                by_blog.setdefault(change["blogId"], []).append(change["kind"])
            kept = [kinds for kinds in by_blog.values() if kinds[-1] != "DELETED"]
            deleted = [kinds for kinds in by_blog.values() if kinds[-1] == "DELETED"]
            assert len(kept) == 30 and all(kinds == ["CREATED", "UPDATED"] for kinds in kept), by_blog
            allowed = (["CREATED", "UPDATED", "DELETED"], ["UPDATED", "DELETED"], ["CREATED", "DELETED"], ["DELETED"])
            assert len(deleted) == 30 and all(kinds in allowed for kinds in deleted), by_blog
    finally:
        for client in clients:
            await client.close()


class StalledReader:
    """A websocket client on a plain socket that subscribes and then reads nothing until told to.

    Built on websockets' sans-I/O protocol, so nothing reads behind the test's back.
    """

    def __init__(self, ws_url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.protocol = ClientProtocol(parse_uri(ws_url), subprotocols=[TRANSPORT_WS], max_size=None)
        uri = parse_uri(ws_url)
        self.sock = socket.create_connection((uri.host, uri.port))
        self.request = self.protocol.connect()
        self.protocol.send_request(self.request)
        self._flush()

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _read_events(self) -> list:
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._flush()
        return self.protocol.events_received()

    def send_json(self, message: dict) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def handshake_and_subscribe(self, variables: dict) -> None:
        while not self._read_events():
            pass  # the handshake response
        self.send_json({"type": "connection_init"})
        while not self._read_events():
            pass  # connection_ack
        self.send_json({"type": "subscribe", "id": "s", "payload": {"query": BLOG_PUBLISHED, "variables": variables}})

    def read_until_closed(self) -> tuple[int, str] | None:
        """Drain everything buffered for us; the close code and reason the server sent, if any."""
        self.sock.settimeout(30)
        try:
            while self.protocol.close_rcvd is None:
                self._read_events()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self.sock.close()
        close = self.protocol.close_rcvd
        return (close.code, close.reason) if close else None


async def test_a_stalled_reader_is_closed_and_others_are_not_held_up(stack: Stack, writer):
    api, username, token = writer
    good = await GraphQLWSClient(stack.instances[2].ws_url).connect()
    stalled = StalledReader(stack.instances[2].ws_url)
    try:
        await asyncio.to_thread(stalled.handshake_and_subscribe, {"author": username})
        await good.subscribe(BLOG_PUBLISHED, {"author": username})
        big = "x" * 90_000
        count = 100  # 100 x 90 KB is far more than loopback socket buffers plus MAX_BUFFERED
        # Published from a thread, so this test's event loop keeps reading for the good client.
        publishing = asyncio.create_task(
            asyncio.to_thread(lambda: [api.create_blog(token, f"big {i}", big) for i in range(count)])
        )
        assert await titles_of(good, count) == [f"big {i}" for i in range(count)]
        await publishing
        code, reason = await asyncio.to_thread(stalled.read_until_closed) or (None, "")
        assert code == 1013
        assert "resume" in reason
    finally:
        await good.close()


async def test_sigterm_finishes_the_mutation_in_flight_and_closes_sockets_with_1001(stack: Stack, writer):
    import psycopg

    api_writer, username, token = writer
    start = assert_no_errors(api_writer.post(LATEST_CURSOR))["latestCursor"]
    instance = stack.instances[0]
    api = LiveApi(instance.url)
    client = await GraphQLWSClient(instance.ws_url).connect()
    await client.subscribe(BLOG_PUBLISHED, {"author": username})
    assert stack.postgres is not None
    # Hold the publication counter's lock, so the mutation is still in flight when SIGTERM lands.
    with psycopg.connect(stack.postgres.url) as blocker:
        blocker.execute("SELECT last_seq FROM notifications_publicationcounter WHERE id = 1 FOR UPDATE")
        mutation = asyncio.create_task(asyncio.to_thread(api.create_blog, token, "in flight during shutdown"))
        with psycopg.connect(stack.postgres.url, autocommit=True) as watcher:
            async with asyncio.timeout(15):  # until the mutation waits on that lock
                while watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone() == (0,):
                    await asyncio.sleep(0.05)
        instance.terminate()
        await asyncio.sleep(1)  # shutting down meanwhile, the instance keeps the mutation in flight
        assert not mutation.done()
        blocker.rollback()
    created = await asyncio.wait_for(mutation, 15)  # answered, not cancelled
    assert created["title"] == "in flight during shutdown"
    received = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            received.append((await client.next_data(15))["payload"]["data"]["blogPublished"])
    assert client.ws is not None and client.ws.close_code == 1001
    # The client resumes on another instance with its last cursor and misses nothing.
    resumed = await GraphQLWSClient(stack.instances[1].ws_url).connect()
    try:
        after = received[-1]["cursor"] if received else start
        await resumed.subscribe(BLOG_PUBLISHED, {"author": username, "after": after})
        if not received:
            received.append((await resumed.next_data(15))["payload"]["data"]["blogPublished"])
        with pytest.raises(TimeoutError):
            await resumed.receive(timeout=0.5)
    finally:
        await resumed.close()
    assert [event["blog"]["title"] for event in received] == ["in flight during shutdown"]
    assert await asyncio.to_thread(instance.wait, 15) is not None
    instance.restart()


async def test_killed_instance_mid_stream_its_subscribers_resume_and_miss_nothing(stack: Stack, writer):
    """Three instances behind HAProxy, 200 publications, one instance SIGKILLed a third of the way in."""
    from blogclient import BlogListener

    _, username, token = writer
    publisher = LiveApi(stack.instances[0].url)  # the instance that survives
    victim = stack.instances[2]
    total, subscribers = 200, 12
    received: list[list[str]] = [[] for _ in range(subscribers)]
    listening = [asyncio.Event() for _ in range(subscribers)]
    instances_seen: set[str] = set()

    async def listen(index: int) -> None:
        listener = BlogListener(stack.ws_url, author=username, backoff_first=0.1, backoff_max=1)

        def status(message: str) -> None:
            if message.startswith("listening"):
                instances_seen.add(listener.instance or "")
                listening[index].set()

        listener.on_status = status
        async for event in listener.events():
            received[index].append(event["blog"]["title"])

    tasks = [asyncio.create_task(listen(i)) for i in range(subscribers)]
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in listening)), 30)
        assert victim.name in instances_seen, instances_seen

        def publish_all() -> None:
            for i in range(total):
                publisher.create_blog(token, f"stream {i}")
                if i == total // 3:
                    victim.kill()

        await asyncio.to_thread(publish_all)
        expected = [f"stream {i}" for i in range(total)]
        deadline = asyncio.get_running_loop().time() + 60
        while any(len(titles) < total for titles in received) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        for titles in received:
            assert titles == expected  # all 200, in publish order, none twice
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        victim.restart()
