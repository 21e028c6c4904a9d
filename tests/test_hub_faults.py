"""No subscriber is silently deaf: the hub's bad days, on real Redis and Daphne processes.

The tests that take Redis away start an instance of their own (with a Redis of their own); the
tests that only write from outside share one such instance. Its hub starts with the process.
"""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from stack import forkserver
from stack.services import REPO_ROOT, DaphneInstance, RedisServer
from tests.live import BLOG_PUBLISHED, DjangoShell, LiveApi, scrape, value, wait_readyz
from tests.wsclient import GraphQLWSClient


class Own:
    def __init__(self, redis: RedisServer, instance: DaphneInstance, env: dict[str, str]) -> None:
        self.redis, self.instance, self.env = redis, instance, env
        self.api = LiveApi(instance.url)

    def shell(self, code: str) -> subprocess.CompletedProcess[str]:
        # A process per block, not the session's DjangoShell: this instance has a Redis of its own,
        # and one block here kills its own process between the commit and the broadcast.
        return forkserver.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            timeout=60,
        )


def own_instance(live_env: dict[str, str], **settings: str) -> Iterator[Own]:
    with RedisServer() as redis:
        env = {**live_env, "REDIS_URL": redis.url, **settings}
        with DaphneInstance("hub-faults", env) as instance:
            yield Own(redis, instance, env)


SHORT_WAITS = {"HUB_START_WAIT_SECONDS": "1", "HUB_LOG_CHECK_SECONDS": "1"}


@pytest.fixture
def own(live_env: dict[str, str]) -> Iterator[Own]:
    yield from own_instance(live_env, **SHORT_WAITS)


@pytest.fixture(scope="module")
def steady(live_env: dict[str, str]) -> Iterator[Own]:
    """The same settings, for the tests that leave the instance and its Redis as they found them."""
    yield from own_instance(live_env, **SHORT_WAITS)


@pytest.fixture
def patient(live_env: dict[str, str]) -> Iterator[Own]:
    yield from own_instance(live_env, HUB_START_WAIT_SECONDS="20")


async def title_of_next(client: GraphQLWSClient, timeout: float = 10) -> str:
    message = await client.next_data(timeout)
    assert "errors" not in message["payload"], message
    return message["payload"]["data"]["blogPublished"]["blog"]["title"]


async def test_a_hub_that_could_not_start_refuses_with_1013_then_recovers_by_itself(own: Own):
    """Redis is down when the instance starts: its first subscriber is told to retry (close 1013),
    /readyz says 503, and once Redis is back the hub starts without anyone's help."""
    username, token = own.api.sign_up()
    own.redis.terminate()
    own.redis.wait(10)
    own.instance.restart()  # serves HTTP without Redis; its hub cannot start
    client = await GraphQLWSClient(own.instance.ws_url).connect()  # the handshake needs no Redis
    await client.start(BLOG_PUBLISHED, {"author": username})
    assert client.ws is not None
    with pytest.raises(websockets.ConnectionClosed):
        await client.receive(timeout=10)
    assert client.ws.close_code == 1013
    body = (await wait_readyz([own.instance.url], 503))[own.instance.url]
    assert "subscriptions" in body["problems"], body
    assert value(scrape(own.instance), "blogpush_hub_up") == 0

    own.redis.start()
    await wait_readyz([own.instance.url], 200)
    assert value(scrape(own.instance), "blogpush_hub_up") == 1
    again = await GraphQLWSClient(own.instance.ws_url).connect()
    try:
        await again.subscribe(BLOG_PUBLISHED, {"author": username})
        own.api.create_blog(token, "after the failed start")
        assert await title_of_next(again) == "after the failed start"
    finally:
        await again.close()


async def test_a_subscriber_arriving_during_a_short_outage_is_held_until_the_hub_is_up(patient: Own):
    username, token = patient.api.sign_up()
    patient.redis.terminate()
    patient.redis.wait(10)
    client = await GraphQLWSClient(patient.instance.ws_url).connect()
    try:
        await client.start(BLOG_PUBLISHED, {"author": username})
        await asyncio.sleep(1.5)  # the hub is retrying; the subscription waits for it
        patient.redis.start()
        await wait_readyz([patient.instance.url], 200)
        # The held subscription is registered before the socket's next message is read.
        await client.execute("query { __typename }")
        patient.api.create_blog(token, "held, not dropped")
        assert await title_of_next(client) == "held, not dropped"
    finally:
        await client.close()


KILLED_WRITER = """
import os
from api.models import Author, Blog
from notifications.publishing import broadcast
# The process dies after the commit and before the broadcast, as a killed worker would.
broadcast.broadcast = lambda publication: os._exit(9)
Blog.objects.create(author=Author.objects.get(username={username!r}), title={title!r}, content="c")
"""


async def test_a_publication_whose_writer_died_before_the_broadcast_arrives_within_the_log_check(steady: Own):
    username, _ = steady.api.sign_up()
    client = await GraphQLWSClient(steady.instance.ws_url).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED, {"author": username})
        read_before = value(scrape(steady.instance), "blogpush_publications_read_from_log_total")
        died = steady.shell(KILLED_WRITER.format(username=username, title="committed, never broadcast"))
        assert died.returncode == 9, died.stderr
        # No other publication follows: only the hub's log check (every 1 s here) can find it.
        assert await title_of_next(client, timeout=10) == "committed, never broadcast"
        assert value(scrape(steady.instance), "blogpush_publications_read_from_log_total") >= read_before + 1
    finally:
        await client.close()


BULK_CREATE = """
from api.models import Author, Blog
author = Author.objects.get(username={username!r})
Blog.objects.bulk_create([Blog(author=author, title=f"bulk {{i}}", content="c") for i in range(3)])
"""


async def test_bulk_created_blogs_are_announced_in_order(steady: Own):
    username, _ = steady.api.sign_up()
    client = await GraphQLWSClient(steady.instance.ws_url).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED, {"author": username})
        created = steady.shell(BULK_CREATE.format(username=username))
        assert created.returncode == 0, created.stderr
        assert [await title_of_next(client) for _ in range(3)] == ["bulk 0", "bulk 1", "bulk 2"]
    finally:
        await client.close()


def test_blogs_in_a_fixture_are_refused_with_a_clear_error(
    live_env: dict[str, str], django_shell: DjangoShell, tmp_path: Path
):
    author_id = django_shell.run(
        "from api.models import Author; print(Author.objects.create_user(username='fixture-loader').pk)"
    )
    fixture = tmp_path / "blogs.json"
    fields = {"author": int(author_id.split()[-1]), "title": "from a fixture", "content": "c"}
    fixture.write_text(json.dumps([{"model": "api.blog", "pk": 900_000_001, "fields": fields}]))
    loaded = forkserver.run(
        [sys.executable, "manage.py", "loaddata", str(fixture)],
        cwd=REPO_ROOT,
        env={**os.environ, **live_env},
        timeout=60,
    )
    assert loaded.returncode != 0
    assert "Blogs are not loaded from fixtures" in loaded.stderr
    exists = django_shell.run("from api.models import Blog; print(Blog.objects.filter(pk=900_000_001).exists())")
    assert exists.split()[-1] == "False"
