"""Authority follows the connection, on real processes: Daphne instances sharing Redis and a database.

The socket lives on one instance, the revocation happens on another (the admin, a sign-out, a
deactivation, a deletion), or in a separate process (`manage.py shell`); the socket is closed with
4403 and a readable reason within about a second, and a write it sends is refused. A token's
expiry closes its socket when it expires. A client that reconnects without a token keeps its
stream.
"""

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from stack.services import DaphneInstance, running
from tests.live import BLOG_PUBLISHED, CREATE_BLOG, DjangoShell, LiveApi, unique_name
from tests.wsclient import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, GraphQLWSClient

# Within "about a second" of the commit, with room for a loaded 2-core machine.
CLOSE_BOUND_SECONDS = 3.0
SIGN_OUT = "mutation { signOut(input: {}) { signedOut } }"
SIGN_OUT_EVERYWHERE = "mutation { signOutEverywhere(input: {}) { revokedTokens } }"
LOG_IN = """
mutation LogIn($username: String!, $password: String!) {
  createToken(input: {username: $username, password: $password}) { token expiresAt }
}
"""
PASSWORD = "correct horse"
LATENCIES: list[tuple[str, float]] = []


def record(what: str, seconds: float, request_seconds: float | None = None) -> None:
    """Printed for the report: from sending the revoking request to the close frame's arrival (an upper
    bound of commit-to-close), and how long the revoking request itself took to answer."""
    LATENCIES.append((what, seconds))
    answered = f" (the request was answered after {request_seconds * 1000:.0f} ms)" if request_seconds else ""
    print(f"\n[revocation latency] {what}: {seconds * 1000:.0f} ms from the revoking request to the close{answered}")


async def timed(function, *args, **kwargs):
    """Run a blocking call in a thread (the socket keeps being read meanwhile): (result, seconds it took)."""
    began = time.monotonic()
    result = await asyncio.to_thread(function, *args, **kwargs)
    return result, time.monotonic() - began


async def signed_in(url: str, token: str, protocol: str = TRANSPORT_WS, **kwargs) -> GraphQLWSClient:
    return await GraphQLWSClient(url, protocol).connect({"authorization": f"Bearer {token}"}, **kwargs)


async def closed_with(client: GraphQLWSClient, timeout: float = 10) -> tuple[int | None, str, float]:
    """(close code, reason, monotonic time it arrived), skipping whatever came before it."""
    assert client.ws is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the socket is still open {timeout:g}s later")
        try:
            await asyncio.wait_for(client.ws.recv(), remaining)
        except TimeoutError:
            continue
        except websockets.ConnectionClosed as closed:
            arrived = time.monotonic()
            frame = closed.rcvd
            return (frame.code if frame else None), (frame.reason if frame else ""), arrived


async def in_thread(function, *args):
    return await asyncio.to_thread(function, *args)


def signed_out_count(server: DaphneInstance, reason: str, protocol: str) -> float:
    """blogpush_connections_signed_out_total for one reason and protocol, as an operator scrapes it."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "blogpush_connections_signed_out_total"
        and sample.labels.get("reason") == reason
        and sample.labels.get("protocol") == protocol
    )


class Admin:
    """A staff member using /admin/ on one instance, as a browser does (session cookie, CSRF token)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
        login = self.client.get("/admin/login/")
        signed_in = self.client.post(
            "/admin/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self._csrf(login.text),
                "next": "/admin/",
            },
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        assert "sessionid" in self.client.cookies, "the admin did not sign in"

    @staticmethod
    def _csrf(html: str) -> str:
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert match, html[:500]
        return match.group(1)

    def action(self, changelist: str, action: str, ids: list[int]) -> httpx.Response:
        page = self.client.get(changelist)
        assert page.status_code == 200, page.text[:500]
        return self.post_action(changelist, page.text, action, ids)

    def post_action(self, changelist: str, page: str, action: str, ids: list[int]) -> httpx.Response:
        data = {"action": action, "_selected_action": [str(i) for i in ids], "csrfmiddlewaretoken": self._csrf(page)}
        response = self.client.post(changelist, data=data)
        assert response.status_code == 302, response.text[:500]
        return response

    def log_out(self) -> None:
        page = self.client.get("/admin/")
        response = self.client.post("/admin/logout/", data={"csrfmiddlewaretoken": self._csrf(page.text)})
        assert response.status_code in (200, 302), response.text[:500]


@pytest.fixture(scope="module")
def staff(daphne_servers, django_shell: DjangoShell) -> tuple[str, str]:
    username = unique_name("staff")
    django_shell.run(
        f"from api.models import Author; Author.objects.create_superuser({username!r}, password={PASSWORD!r})",
    )
    return username, PASSWORD


def token_ids(django_shell: DjangoShell, username: str) -> list[int]:
    out = django_shell.run(
        f"from api.models import ApiToken; print(list(ApiToken.objects.filter(author__username={username!r})"
        ".order_by('pk').values_list('pk', flat=True)))",
    )
    return [int(i) for i in re.findall(r"\d+", out.strip().splitlines()[-1])]


def author_id(django_shell: DjangoShell, username: str) -> int:
    out = django_shell.run(f"from api.models import Author; print(Author.objects.get(username={username!r}).pk)")
    return int(out.split()[-1])


def blog_titles(django_shell: DjangoShell, username: str) -> list[str]:
    out = django_shell.run(
        f"from api.models import Blog; print(list(Blog.objects.filter(author__username={username!r})"
        ".values_list('title', flat=True)))",
    )
    return re.findall(r"'([^']*)'", out.strip().splitlines()[-1])


@pytest.fixture
def instances(daphne_servers) -> tuple[DaphneInstance, DaphneInstance]:
    """(where the socket lives, where the revocation happens)."""
    return daphne_servers[0], daphne_servers[1]


# ---------------------------------------------------------------------------- revoked in the admin


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_revoking_a_token_in_the_admin_closes_its_socket_on_another_instance(
    instances, staff, django_shell, protocol
):
    here, there = instances
    api = LiveApi(here.url)
    username, token = api.sign_up()
    client = await signed_in(here.ws_url, token, protocol)
    await client.subscribe(BLOG_PUBLISHED)
    admin = await in_thread(Admin, there.url, *staff)
    (token_id,) = await in_thread(token_ids, django_shell, username)

    page = await in_thread(admin.client.get, "/admin/api/apitoken/")
    counted = await in_thread(signed_out_count, here, "revoked", protocol)
    sent = time.monotonic()
    closing = asyncio.ensure_future(closed_with(client))
    _, took = await timed(admin.post_action, "/admin/api/apitoken/", page.text, "revoke", [token_id])
    code, reason, arrived = await closing
    assert code == 4403, (code, reason)
    assert "revoked" in reason.lower()
    record(f"admin revoke ({protocol})", arrived - sent, took)
    assert arrived - sent < CLOSE_BOUND_SECONDS
    # The operator sees why it closed: the instance that held the socket counts it, by reason.
    assert await in_thread(signed_out_count, here, "revoked", protocol) == counted + 1


async def test_ending_an_authors_access_in_the_admin_closes_all_their_sockets(
    instances, daphne_servers, staff, django_shell
):
    here, there = instances
    api = LiveApi(here.url)
    username, first = api.sign_up()
    second = api.post(LOG_IN, {"username": username, "password": PASSWORD})["data"]["createToken"]["token"]
    sockets = [await signed_in(here.ws_url, first), await signed_in(daphne_servers[2].ws_url, second, LEGACY_WS)]
    admin = await in_thread(Admin, there.url, *staff)
    pk = await in_thread(author_id, django_shell, username)
    await in_thread(admin.action, "/admin/api/author/", "end_access", [pk])
    for client in sockets:
        code, reason, _ = await closed_with(client)
        assert (code, "revoked" in reason.lower()) == (4403, True), reason
    assert (
        LiveApi(there.url).post(CREATE_BLOG, {"title": "t", "content": "c"}, second)["errors"][0]["extensions"]["code"]
        == "UNAUTHENTICATED"
    )


# ---------------------------------------------------------------------------- the per-write check


@pytest.fixture(scope="module")
def not_rechecking(live_env) -> Iterator[DaphneInstance]:
    """An instance whose periodic recheck (which would close the socket on its own, at a moment the
    test does not choose) does not come round during the module."""
    with running([DaphneInstance("no-recheck", {**live_env, "AUTH_RECHECK_SECONDS": "3600"})]) as (server,):
        yield server


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_write_on_a_socket_whose_token_was_revoked_unannounced_is_refused(
    not_rechecking, live_env, django_shell, protocol
):
    """Raw SQL bypasses every announcement, as a lost broadcast would: the write itself is still refused."""
    api = LiveApi(not_rechecking.url)
    username, token = api.sign_up()
    client = await signed_in(not_rechecking.ws_url, token, protocol)
    assert (await client.execute(CREATE_BLOG, {"title": "before", "content": "c"}))["payload"]["data"]
    database = live_env["DATABASE_URL"].removeprefix("sqlite:///")
    (token_id,) = await in_thread(token_ids, django_shell, username)
    with sqlite3.connect(database) as db:
        db.execute("UPDATE api_apitoken SET revoked = 1 WHERE id = ?", (token_id,))

    refused = await client.execute(CREATE_BLOG, {"title": "after", "content": "c"})
    assert refused["type"] == "error", refused
    errors = refused["payload"] if protocol == TRANSPORT_WS else refused["payload"]["errors"]
    assert [error["extensions"]["code"] for error in errors] == ["UNAUTHENTICATED"]
    assert "revoked" in errors[0]["message"].lower()
    code, _, _ = await closed_with(client)
    assert code == 4403
    assert await in_thread(blog_titles, django_shell, username) == ["before"]


# ---------------------------------------------------------------------------- signing out


async def test_sign_out_on_another_instance_closes_the_socket_and_a_fresh_token_signs_in_again(instances):
    here, there = instances
    api = LiveApi(here.url)
    username, token = api.sign_up()
    client = await signed_in(here.ws_url, token)
    other = LiveApi(there.url)
    sent = time.monotonic()
    closing = asyncio.ensure_future(closed_with(client))
    answer, took = await timed(other.post, SIGN_OUT, token=token)
    assert answer == {"data": {"signOut": {"signedOut": True}}}
    code, reason, arrived = await closing
    assert (code, reason.startswith("Forbidden: Signed out")) == (4403, True), reason
    record("signOut over HTTP", arrived - sent, took)
    assert arrived - sent < CLOSE_BOUND_SECONDS

    with pytest.raises(websockets.ConnectionClosed) as refused:  # the old token no longer signs in
        await signed_in(here.ws_url, token)
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 4403
    fresh = api.post(LOG_IN, {"username": username, "password": PASSWORD})["data"]["createToken"]["token"]
    client = await signed_in(here.ws_url, fresh)
    try:
        blog = (await client.execute(CREATE_BLOG, {"title": "again", "content": "c"}))["payload"]["data"]
        assert blog["createBlog"]["blog"]["author"]["username"] == username
    finally:
        await client.close()


async def test_sign_out_sent_over_the_socket_itself_closes_it(daphne_server):
    _, token = LiveApi(daphne_server.url).sign_up()
    client = await signed_in(daphne_server.ws_url, token)
    result = await client.execute(SIGN_OUT)
    assert result["payload"] == {"data": {"signOut": {"signedOut": True}}}
    code, reason, _ = await closed_with(client)
    assert code == 4403 and "Signed out" in reason


async def test_sign_out_everywhere_closes_every_socket_of_the_author_on_every_instance(daphne_servers):
    api = LiveApi(daphne_servers[0].url)
    username, first = api.sign_up()
    second = api.post(LOG_IN, {"username": username, "password": PASSWORD})["data"]["createToken"]["token"]
    _, bystander_token = api.sign_up()
    sockets = [
        await signed_in(daphne_servers[0].ws_url, first),
        await signed_in(daphne_servers[2].ws_url, second, LEGACY_WS),
    ]
    bystander = await signed_in(daphne_servers[0].ws_url, bystander_token)
    other = LiveApi(daphne_servers[1].url)
    sent = time.monotonic()
    closing = [asyncio.ensure_future(closed_with(client)) for client in sockets]
    result, took = await timed(other.post, SIGN_OUT_EVERYWHERE, token=first)
    assert result == {"data": {"signOutEverywhere": {"revokedTokens": 2}}}
    for done in closing:
        code, reason, arrived = await done
        assert code == 4403 and "Signed out" in reason
        record("signOutEverywhere", arrived - sent, took)
    try:  # another author's socket is untouched
        assert (await bystander.execute(CREATE_BLOG, {"title": "still here", "content": "c"}))["payload"]["data"]
    finally:
        await bystander.close()


# ---------------------------------------------------------------------------- deactivation and deletion


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("a = Author.objects.get(username={u!r}); a.is_active = False; a.save()", "deactivated"),
        ("Author.objects.filter(username={u!r}).update(is_active=False)", "deactivated"),
        ("Author.objects.get(username={u!r}).delete()", "deleted"),
    ],
    ids=["save", "queryset-update", "delete"],
)
async def test_deactivating_or_deleting_an_author_closes_their_sockets(daphne_servers, django_shell, how, reason):
    api = LiveApi(daphne_servers[0].url)
    username, token = api.sign_up()
    clients = [await signed_in(daphne_servers[0].ws_url, token), await signed_in(daphne_servers[1].ws_url, token)]
    sent = time.monotonic()
    await in_thread(django_shell.run, "from api.models import Author; " + how.format(u=username))
    for client in clients:
        code, text, arrived = await closed_with(client)
        assert code == 4403 and reason in text.lower(), text
    record(f"{reason} in a manage.py shell (includes its start-up)", arrived - sent)


# ---------------------------------------------------------------------------- browser sessions


async def test_logging_out_a_browser_session_closes_the_sockets_it_signed_in(instances, daphne_servers, staff):
    here, there = instances
    admin = await in_thread(Admin, there.url, *staff)
    cookie = f"sessionid={admin.client.cookies['sessionid']}"
    clients = [
        await GraphQLWSClient(server.ws_url, protocol).connect(
            additional_headers={"Origin": server.url, "Cookie": cookie}
        )
        for server, protocol in ((here, TRANSPORT_WS), (daphne_servers[2], LEGACY_WS))
    ]
    viewer = await clients[0].execute("query { viewer { username } }")
    assert viewer["payload"]["data"]["viewer"]["username"] == staff[0]
    await in_thread(admin.log_out)
    for client in clients:
        code, reason, _ = await closed_with(client)
        assert code == 4403 and "Signed out" in reason


# ---------------------------------------------------------------------------- expiry


@pytest.fixture(scope="module")
def short_lived(live_env) -> Iterator[DaphneInstance]:
    """An instance issuing tokens that live 4 seconds."""
    with running([DaphneInstance("short-ttl", {**live_env, "API_TOKEN_TTL_SECONDS": "4"})]) as (server,):
        yield server


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_is_closed_when_its_token_expires_not_at_its_next_write(short_lived, protocol):
    api = LiveApi(short_lived.url)
    username, _ = api.sign_up()
    issued = api.post(LOG_IN, {"username": username, "password": PASSWORD})["data"]["createToken"]
    signed_at = time.monotonic()
    client = await signed_in(short_lived.ws_url, issued["token"], protocol)
    await client.subscribe(BLOG_PUBLISHED)
    code, reason, arrived = await closed_with(client, timeout=15)
    assert code == 4403 and "expired" in reason.lower(), reason
    assert 2.5 < arrived - signed_at < 4 + CLOSE_BOUND_SECONDS
    result = api.post(CREATE_BLOG, {"title": "late", "content": "c"}, issued["token"])
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "expired" in result["errors"][0]["message"]


@pytest.fixture(scope="module")
def rechecking(live_env) -> Iterator[DaphneInstance]:
    """An instance that rechecks its signed-in sockets every second."""
    with running([DaphneInstance("recheck", {**live_env, "AUTH_RECHECK_SECONDS": "1"})]) as (server,):
        yield server


async def test_a_revocation_whose_announcement_was_lost_still_closes_the_socket(rechecking, live_env, django_shell):
    """Raw SQL announces nothing, as a failed broadcast would: the periodic recheck closes the socket anyway."""
    api = LiveApi(rechecking.url)
    username, token = api.sign_up()
    client = await signed_in(rechecking.ws_url, token)
    await client.subscribe(BLOG_PUBLISHED)
    (token_id,) = await in_thread(token_ids, django_shell, username)
    with sqlite3.connect(live_env["DATABASE_URL"].removeprefix("sqlite:///")) as db:
        db.execute("UPDATE api_apitoken SET revoked = 1 WHERE id = ?", (token_id,))
    revoked_at = time.monotonic()
    code, reason, arrived = await closed_with(client, timeout=10)
    assert code == 4403 and "revoked" in reason.lower(), reason
    assert arrived - revoked_at < 1 + CLOSE_BOUND_SECONDS


# ---------------------------------------------------------------------------- subscriptions are public


async def test_a_client_that_reconnects_without_its_token_keeps_its_stream(instances):
    here, there = instances
    api = LiveApi(here.url)
    _, token = api.sign_up()
    _, writer = api.sign_up()
    client = await signed_in(here.ws_url, token)
    await client.subscribe(BLOG_PUBLISHED)
    first = api.create_blog(writer, "seen while signed in")
    event = (await client.next_data())["payload"]["data"]["blogPublished"]
    assert event["blog"]["title"] == "seen while signed in"
    LiveApi(there.url).post(SIGN_OUT, token=token)
    code, _, _ = await closed_with(client)
    assert code == 4403
    missed = api.create_blog(writer, "published while reconnecting")

    client = await GraphQLWSClient(here.ws_url).connect()
    try:
        await client.subscribe(BLOG_PUBLISHED, {"after": event["cursor"]})
        api.create_blog(writer, "after reconnecting")
        titles = [(await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] for _ in range(2)]
        assert titles == ["published while reconnecting", "after reconnecting"]
        assert first["id"] != missed["id"]
    finally:
        await client.close()


# ---------------------------------------------------------------------------- our own client retries


async def _next_title(events, timeout: float = 15) -> str:
    return (await asyncio.wait_for(anext(events), timeout))["blog"]["title"]


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-params", "fixed-params"])
async def test_blog_listener_signs_in_again_after_4403_and_misses_nothing(instances, fresh):
    """BlogListener (and so `manage.py listen`) treats 4403 as retryable: new connection params, same stream."""
    from blogclient import BlogListener

    here, there = instances
    api = LiveApi(here.url)
    username, first = api.sign_up()
    _, writer = api.sign_up()
    tokens = [first]
    statuses: list[str] = []

    def params() -> dict[str, str]:
        return {"authorization": f"Bearer {tokens[-1]}"}

    listener = BlogListener(
        here.ws_url,
        on_status=statuses.append,
        backoff_first=0.05,
        backoff_max=0.2,
        connection_params=params if fresh else params(),
    )
    events = listener.events()
    waiting = asyncio.ensure_future(_next_title(events))
    await asyncio.sleep(1)  # connected, subscribed after the latest cursor
    api.create_blog(writer, "before")
    assert await waiting == "before"

    tokens.append(api.post(LOG_IN, {"username": username, "password": PASSWORD})["data"]["createToken"]["token"])
    waiting = asyncio.ensure_future(_next_title(events))
    LiveApi(there.url).post(SIGN_OUT, token=first)
    await asyncio.sleep(1)
    api.create_blog(writer, "while signed out")
    api.create_blog(writer, "after")
    assert [await waiting, await _next_title(events)] == ["while signed out", "after"]
    signed_out = [status for status in statuses if status.startswith("signed out by the server")]
    assert len(signed_out) == 1, statuses
    assert ("signing in afresh" if fresh else "continuing without signing in") in signed_out[0]
    assert "Signed out" in signed_out[0]
    if fresh:  # it signed in with the new token: ending that one closes it again
        second = tokens[-1]
        tokens.append(api.post(LOG_IN, {"username": username, "password": PASSWORD})["data"]["createToken"]["token"])
        waiting = asyncio.ensure_future(_next_title(events))
        LiveApi(there.url).post(SIGN_OUT, token=second)
        api.create_blog(writer, "last")
        assert await waiting == "last"
        assert len([status for status in statuses if status.startswith("signed out by the server")]) == 2
    await events.aclose()


# ---------------------------------------------------------------------------- nothing per event


@pytest.fixture(scope="module")
def counted_instance(redis_server) -> Iterator[tuple[DaphneInstance, Any]]:
    """A Daphne instance on a PostgreSQL cluster that counts every statement (pg_stat_statements)."""
    import psycopg

    from bench.phases.reads import STATEMENTS, CountingPostgres
    from stack.services import migrate, production_env

    postgres = CountingPostgres()
    try:
        postgres.start()
        env = {
            **production_env(postgres.url, f"redis://127.0.0.1:{redis_server.port}/3"),
            "RATE_LIMIT_MUTATIONS": "off",
            "RATE_LIMIT_SIGN_UPS": "off",
            "HUB_LOG_CHECK_SECONDS": "3600",  # no periodic counter read in the middle of a count
        }
        migrate(env)
        with psycopg.connect(postgres.url, autocommit=True) as db:
            db.execute("CREATE EXTENSION pg_stat_statements")

            def statements() -> int:
                row = db.execute(STATEMENTS).fetchone()
                assert row is not None
                return int(row[0])

            with running([DaphneInstance("counted", env)]) as (server,):
                yield server, statements
    finally:
        postgres.stop()


async def test_signed_in_subscribers_cost_no_query_per_delivered_event(counted_instance):
    """The same statements for N publications whether 0 or 30 signed-in sockets receive each of them."""
    server, statements = counted_instance
    api = LiveApi(server.url)
    _, writer = api.sign_up()
    api.create_blog(writer, "warm-up")  # first-request work (sessions, caches) out of the way

    async def publish(count: int, clients: list[GraphQLWSClient]) -> int:
        await asyncio.sleep(0.5)
        before = statements()
        for i in range(count):
            await in_thread(api.create_blog, writer, f"counted {i}")
        for client in clients:  # every subscriber got every event before the count is read
            for _ in range(count):
                assert (await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"]
        await asyncio.sleep(0.5)
        return statements() - before

    alone = await publish(5, [])
    subscribers = []
    for _ in range(30):
        _, token = api.sign_up()
        client = await signed_in(server.ws_url, token, TRANSPORT_WS)
        await client.subscribe(BLOG_PUBLISHED)
        subscribers.append(client)
    try:
        with_subscribers = await publish(5, subscribers)
    finally:
        for client in subscribers:
            await client.close()
    print(f"\n[statements] 5 publications: {alone} with no subscriber, {with_subscribers} with 30 signed-in ones")
    assert with_subscribers == alone


# ---------------------------------------------------------------------------- HTTP streams


@pytest.mark.parametrize("accept", ["sse", "multipart"])
async def test_an_http_stream_signed_in_with_a_revoked_token_is_ended_unauthenticated(instances, accept):
    from tests.streamclient import APOLLO_ACCEPT, SSE_ACCEPT, StreamClient

    here, there = instances
    _, token = LiveApi(here.url).sign_up()
    stream = StreamClient(
        here.url,
        BLOG_PUBLISHED,
        accept=SSE_ACCEPT if accept == "sse" else APOLLO_ACCEPT,
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        assert (await stream.open()).status_code == 200
        await asyncio.sleep(0.3)
        LiveApi(there.url).post(SIGN_OUT, token=token)
        ending = [message for message in await stream.until_end(timeout=10) if message.kind != "end"]
        text = " ".join(message.raw for message in ending)
        assert "UNAUTHENTICATED" in text and "signed_out" in text, text
    finally:
        await stream.close()
