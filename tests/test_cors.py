"""Browsers on other origins, over plain HTTP: preflights, the headers on every answer, one list of
origins from the environment, and credentials only when asked for (CSRF still guarding cookies).

The same from inside a real Chromium: tests/test_browser_cors.py.
"""

import asyncio
import json
import os
import sys

import httpx
import pytest
import websockets

from stack import forkserver
from stack.services import REPO_ROOT, DaphneInstance
from tests.fixtures_web import ALSO_LISTED
from tests.live import CREATE_BLOG, LiveApi, assert_no_errors
from tests.streamclient import APOLLO_ACCEPT, SSE_ACCEPT, StreamClient
from tests.wsclient import GraphQLWSClient

VIEWER = "query { viewer { username } }"
SIGN_UP_FORM = 'mutation { createAuthor(input: {username: "forged_cross_site", password: "correct horse"}) { token } }'
# What each transport's client asks for (docs/http.md): fetch and Apollo's queries, graphql-sse,
# Apollo's multipart subscriptions.
ACCEPTS = {
    "json": "application/graphql-response+json, application/json;q=0.9",
    "sse": "text/event-stream",
    "multipart": 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json',
}


def another_port(port: int) -> int:
    return port + 1 if port < 65535 else port - 1


# Origins the instances do not list, from the `listed` front end's (tests/fixtures_web.py).
UNLISTED = {
    "foreign": lambda listed: "https://evil.example",
    "another port": lambda listed: f"http://127.0.0.1:{another_port(listed.port)}",
    "another scheme": lambda listed: f"https://127.0.0.1:{listed.port}",
    "another host name": lambda listed: f"http://localhost:{listed.port}",
    "a suffix": lambda listed: f"{ALSO_LISTED}.evil.example",
    "null": lambda listed: "null",
}


@pytest.fixture(scope="module")
def listed(front_ends) -> str:
    return front_ends[0].origin


@pytest.fixture(params=UNLISTED)
def unlisted(request, front_ends) -> str:
    return UNLISTED[request.param](front_ends[0])


@pytest.fixture(scope="module")
def cors_server(cors_servers) -> DaphneInstance:
    return cors_servers[0]


def preflight(server: DaphneInstance, origin: str, method: str = "POST", headers: str = "") -> httpx.Response:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    return httpx.options(f"{server.url}/graphql/", headers=request_headers, timeout=30)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


@pytest.mark.parametrize(
    "method, headers",
    [
        ("POST", "authorization,content-type"),  # fetch / Apollo's HttpLink, query or mutation
        ("POST", "accept,authorization,content-type"),  # Apollo's multipart Accept is not safelisted
        ("POST", "accept,content-type,last-event-id"),  # graphql-sse's client resuming
        ("GET", "last-event-id"),  # a GET stream resuming with its last cursor
    ],
)
@pytest.mark.parametrize("which", ["front end", "also listed"])
def test_preflights_from_a_listed_origin_are_answered(cors_server, listed, which, method, headers):
    origin = listed if which == "front end" else ALSO_LISTED
    response = preflight(cors_server, origin, method, headers)
    assert response.status_code == 200
    allowed = cors_headers(response)
    assert allowed["access-control-allow-origin"] == origin
    assert method in allowed["access-control-allow-methods"].split(", ")
    assert set(headers.split(",")) <= set(allowed["access-control-allow-headers"].split(", "))
    assert int(allowed["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in allowed


def test_preflights_from_an_unlisted_origin_get_no_cors_headers(cors_server, unlisted):
    response = preflight(cors_server, unlisted, "POST", "authorization,content-type")
    assert cors_headers(response) == {}


def test_queries_and_mutations_with_a_bearer_token_from_a_listed_origin_can_be_read(cors_server, listed, api: LiveApi):
    username, token = api.sign_up()
    with httpx.Client(base_url=cors_server.url, timeout=30) as client:
        headers = {"Origin": listed, "Authorization": f"Bearer {token}", "Accept": ACCEPTS["json"]}
        query = client.post("/graphql/", json={"query": VIEWER}, headers=headers)
        variables = {"title": "Cross-origin", "content": "From another origin."}
        mutation = client.post("/graphql/", json={"query": CREATE_BLOG, "variables": variables}, headers=headers)
        get = client.get("/graphql/", params={"query": VIEWER}, headers=headers)
    assert query.json() == {"data": {"viewer": {"username": username}}}
    assert assert_no_errors(mutation.json())["createBlog"]["blog"]["title"] == "Cross-origin"
    assert get.json() == query.json()
    for response in (query, mutation, get):
        allowed = cors_headers(response)
        assert allowed["access-control-allow-origin"] == listed
        assert "access-control-allow-credentials" not in allowed
        assert {"X-Request-ID", "Retry-After", "WWW-Authenticate"} <= set(
            allowed["access-control-expose-headers"].split(", ")
        )
        assert "origin" in response.headers["vary"].lower()


def test_refusals_from_a_listed_origin_can_be_read_too(cors_server, listed):
    """A parse error, a token that does not authenticate, a mutation over GET: the script reads why."""
    with httpx.Client(base_url=cors_server.url, timeout=30) as client:
        bad = client.post("/graphql/", json={"query": "{"}, headers={"Origin": listed})
        revoked = client.post(
            "/graphql/", json={"query": VIEWER}, headers={"Origin": listed, "Authorization": "Bearer x"}
        )
        get_mutation = client.get("/graphql/", params={"query": SIGN_UP_FORM}, headers={"Origin": listed})
    assert (bad.status_code, get_mutation.status_code) == (400, 405)
    for response in (bad, revoked, get_mutation):
        assert response.headers["access-control-allow-origin"] == listed


def test_answers_to_an_unlisted_origin_carry_no_cors_headers(cors_server, unlisted):
    response = httpx.post(
        f"{cors_server.url}/graphql/", json={"query": VIEWER}, headers={"Origin": unlisted}, timeout=30
    )
    assert response.status_code == 200  # the browser withholds it from the page
    assert cors_headers(response) == {}


def test_only_the_graphql_endpoint_answers_other_origins(cors_server, listed):
    for path in ("/healthz", "/metrics", "/admin/login/"):
        response = httpx.get(f"{cors_server.url}{path}", headers={"Origin": listed}, timeout=30)
        assert cors_headers(response) == {}, path


# Cookies: off by default, and when on, CSRF still guards them.


def csrf_token(server: DaphneInstance) -> str:
    return httpx.get(f"{server.url}/graphql/", params={"query": "{ __typename }"}, timeout=30).cookies["csrftoken"]


def test_with_credentials_on_a_listed_origin_may_send_its_session_with_the_csrf_token(
    cors_servers, listed, browser_session
):
    _, cookies = cors_servers
    username, session = browser_session
    csrf = csrf_token(cookies)
    headers = {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf, "Origin": listed}
    response = httpx.post(f"{cookies.url}/graphql/", json={"query": VIEWER}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"data": {"viewer": {"username": username}}}
    assert response.headers["access-control-allow-origin"] == listed
    assert response.headers["access-control-allow-credentials"] == "true"
    assert preflight(cookies, listed).headers["access-control-allow-credentials"] == "true"


def test_without_credentials_on_the_same_request_is_refused_by_csrf(cors_server, listed, browser_session):
    """Cookies are not for other origins unless CORS_ALLOW_CREDENTIALS: CSRF does not trust a listed origin."""
    _, session = browser_session
    csrf = csrf_token(cors_server)
    headers = {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf, "Origin": listed}
    response = httpx.post(f"{cors_server.url}/graphql/", json={"query": VIEWER}, headers=headers, timeout=30)
    assert response.status_code == 403
    assert "CSRF" in response.text


@pytest.mark.parametrize("which", ["listed", "another port", "foreign"])
@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_with_credentials_on_a_cross_site_form_still_cannot_write(
    cors_servers, front_ends, browser_session, which, encoding
):
    """A form sends cookies but no CSRF token: refused from a listed origin and from any other."""
    origin = front_ends[0].origin if which == "listed" else UNLISTED[which](front_ends[0])
    _, cookies = cors_servers
    _, session = browser_session
    form = {"query": SIGN_UP_FORM}
    body = {"data": form} if encoding == "form" else {"files": {"query": (None, SIGN_UP_FORM)}}
    response = httpx.post(
        f"{cookies.url}/graphql/", headers={"Origin": origin, "Cookie": f"sessionid={session}"}, timeout=30, **body
    )
    assert response.status_code == 403
    assert "CSRF" in response.text


def test_with_credentials_on_an_unlisted_origin_is_not_trusted_even_with_the_csrf_token(
    cors_servers, unlisted, browser_session
):
    _, cookies = cors_servers
    _, session = browser_session
    csrf = csrf_token(cookies)
    headers = {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf, "Origin": unlisted}
    response = httpx.post(f"{cookies.url}/graphql/", json={"query": VIEWER}, headers=headers, timeout=30)
    assert response.status_code == 403
    assert cors_headers(response) == {}


# The settings as `make run` and production read them, each in a fresh process (settings are read once).

PREFLIGHTS = """
import json, sys
import django
django.setup()
from django.test import Client
client = Client()
answers = {}
for origin in json.loads(sys.argv[1]):
    response = client.options("/graphql/", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    answers[origin] = response.headers.get("Access-Control-Allow-Origin")
print(json.dumps(answers))
"""


def allowed_under(environment: dict[str, str], origins: list[str]) -> dict[str, str | None]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CORS_"))}
    env |= {"DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_SECRET_KEY": "x" * 50, **environment}
    result = forkserver.run([sys.executable, "-c", PREFLIGHTS, json.dumps(origins)], cwd=REPO_ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


DEV_SERVERS = ["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:5173", "http://localhost"]
NOT_THIS_MACHINE = ["http://192.168.1.20:5173", "http://localhost.evil.example:5173", "https://app.example.com"]


def test_while_developing_a_dev_server_on_any_local_port_is_allowed_with_no_setting():
    answers = allowed_under({"DJANGO_DEBUG": "1"}, DEV_SERVERS + NOT_THIS_MACHINE)
    assert answers == {origin: origin if origin in DEV_SERVERS else None for origin in answers}


def test_while_developing_a_list_replaces_the_local_default():
    answers = allowed_under({"DJANGO_DEBUG": "1", "CORS_ALLOWED_ORIGINS": "http://localhost:5173"}, DEV_SERVERS)
    assert answers == {origin: origin if origin == "http://localhost:5173" else None for origin in answers}
    assert set(allowed_under({"DJANGO_DEBUG": "1", "CORS_ALLOWED_ORIGINS": ""}, DEV_SERVERS).values()) == {None}


def test_in_production_nothing_cross_origin_is_allowed_until_listed():
    assert set(allowed_under({"DJANGO_DEBUG": "0"}, DEV_SERVERS + NOT_THIS_MACHINE).values()) == {None}


@pytest.mark.parametrize(
    "value", ["*", "null", "app.example.com", "https://app.example.com/spa", "https://*.example.com", "http://x:99999"]
)
def test_a_value_that_is_not_an_origin_stops_the_process_naming_the_variable(value):
    env = {key: val for key, val in os.environ.items() if not key.startswith("CORS_")}
    result = forkserver.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        env={**env, "CORS_ALLOWED_ORIGINS": f"https://ok.example,{value}"},
        timeout=60,
    )
    assert result.returncode != 0
    assert f"CORS_ALLOWED_ORIGINS: {value!r} is not an origin" in result.stderr


# HTTP streams and websockets: the same list, and the headers a browser needs on a stream.

FOLLOW = "subscription ($author: String) { blogPublished(author: $author) { cursor blog { title } } }"
STREAM_ACCEPTS = {"sse": SSE_ACCEPT, "multipart": APOLLO_ACCEPT}


def subscribe(server: DaphneInstance, transport: str, author: str, **headers: str) -> StreamClient:
    return StreamClient(server.url, FOLLOW, {"author": author}, accept=STREAM_ACCEPTS[transport], headers=headers)


@pytest.mark.parametrize("transport", STREAM_ACCEPTS)
async def test_a_stream_to_a_listed_origin_streams_with_the_headers_of_any_other_answer(
    cors_servers, listed, api: LiveApi, transport
):
    for server in cors_servers:  # cookies off, then on
        username, token = api.sign_up()
        async with subscribe(server, transport, username, Origin=listed, Authorization=f"Bearer {token}") as client:
            assert client.response is not None and client.streaming
            plain = httpx.post(f"{server.url}/graphql/", json={"query": VIEWER}, headers={"Origin": listed}, timeout=30)
            assert cors_headers(client.response) == cors_headers(plain)
            assert cors_headers(client.response)["access-control-allow-origin"] == listed
            assert ("access-control-allow-credentials" in cors_headers(client.response)) is (server is cors_servers[1])
            assert "origin" in client.response.headers["vary"].lower()
            await asyncio.to_thread(LiveApi(server.url).create_blog, token, "Streamed cross-origin")
            (result,) = await client.results(1)
            assert result["data"]["blogPublished"]["blog"]["title"] == "Streamed cross-origin"


@pytest.mark.parametrize("transport", STREAM_ACCEPTS)
async def test_a_stream_refused_for_a_listed_origin_can_be_read(cors_server, listed, transport):
    async with subscribe(cors_server, transport, "anyone", Origin=listed, Authorization="Bearer revoked") as client:
        assert client.response is not None and client.response.status_code in (200, 401)
        assert client.response.headers["access-control-allow-origin"] == listed
        assert "WWW-Authenticate" in client.response.headers["access-control-expose-headers"]


async def ws_accepts(server: DaphneInstance, origin: str) -> bool:
    try:
        client = await GraphQLWSClient(server.ws_url).connect(additional_headers={"Origin": origin})
    except websockets.InvalidStatus as refused:
        assert refused.response.status_code == 403
        return False
    await client.close()
    return True


async def stream_accepts(server: DaphneInstance, origin: str) -> bool:
    async with subscribe(server, "sse", "anyone", Origin=origin) as client:
        assert client.response is not None
        if client.response.status_code == 403:
            assert json.loads(await client.body())["errors"][0]["extensions"]["code"] == "FORBIDDEN"
            return False
        return client.streaming


async def test_one_list_of_origins_for_every_transport(cors_server, front_ends):
    """Websockets and HTTP streams admit exactly the pages HTTP answers admit, plus the site's own;
    another port or scheme of a listed origin is refused (403) like a foreign site."""
    listed_front_end = front_ends[0]
    origins = {
        "listed": listed_front_end.origin,
        "also listed": ALSO_LISTED,
        "the site's own": cors_server.url,
        **{name: make(listed_front_end) for name, make in UNLISTED.items()},
        "a port of the site's host": f"http://127.0.0.1:{another_port(cors_server.port)}",
    }
    verdicts = {}
    for name, origin in origins.items():
        answer = httpx.post(f"{cors_server.url}/graphql/", json={"query": VIEWER}, headers={"Origin": origin})
        verdicts[name] = (
            "access-control-allow-origin" in answer.headers,
            await ws_accepts(cors_server, origin),
            await stream_accepts(cors_server, origin),
        )
    expected = dict.fromkeys(("listed", "also listed"), (True, True, True))
    expected["the site's own"] = (False, True, True)  # same-origin: no CORS needed
    expected |= {name: (False, False, False) for name in origins if name not in expected}
    assert verdicts == expected


def test_websocket_allowed_origins_is_refused_with_a_pointer_to_the_one_list():
    env = {key: val for key, val in os.environ.items() if not key.startswith("CORS_")}
    result = forkserver.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        env={**env, "WEBSOCKET_ALLOWED_ORIGINS": "https://app.example.com"},
        timeout=60,
    )
    assert result.returncode != 0
    assert "CORS_ALLOWED_ORIGINS" in result.stderr and "WEBSOCKET_ALLOWED_ORIGINS" in result.stderr
