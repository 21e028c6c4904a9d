"""Browsers on other origins, over plain HTTP: preflights, the headers on every answer, one list of
origins from the environment, and credentials only when asked for (CSRF still guarding cookies).

The same from inside a real Chromium: tests/test_browser_cors.py.
"""

import json
import os
import subprocess
import sys

import httpx
import pytest

from stack.services import REPO_ROOT, DaphneInstance, free_port, running
from tests.live import CREATE_BLOG, LiveApi, assert_no_errors

VIEWER = "query { viewer { username } }"
SIGN_UP_FORM = 'mutation { createAuthor(input: {username: "forged_cross_site", password: "correct horse"}) { token } }'
# What each transport's client asks for (docs/http.md): fetch and Apollo's queries, graphql-sse,
# Apollo's multipart subscriptions.
ACCEPTS = {
    "json": "application/graphql-response+json, application/json;q=0.9",
    "sse": "text/event-stream",
    "multipart": 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json',
}
FRONT_END_PORT = free_port()
LISTED = f"http://127.0.0.1:{FRONT_END_PORT}"
ALSO_LISTED = "https://app.example.com"
UNLISTED = [
    "https://evil.example",
    f"http://127.0.0.1:{FRONT_END_PORT + 1}",  # another port of a listed host
    f"https://127.0.0.1:{FRONT_END_PORT}",  # another scheme
    f"http://localhost:{FRONT_END_PORT}",  # another host name for the same machine
    "https://app.example.com.evil.example",
    "null",
]


def origin_id(origin: str) -> str:
    """The test id of an origin: the same in every process (xdist workers compare them), whatever the port."""
    return origin.replace(str(FRONT_END_PORT + 1), "another-port").replace(str(FRONT_END_PORT), "front-end-port")


@pytest.fixture(scope="module")
def cors_servers(live_env: dict[str, str]):
    """One instance listing two origins (bearer tokens only), one letting their cookies through too."""
    env = {**live_env, "CORS_ALLOWED_ORIGINS": f"{LISTED}, {ALSO_LISTED}/"}
    instances = [
        DaphneInstance("cors-bearer", env),
        DaphneInstance("cors-cookies", {**env, "CORS_ALLOW_CREDENTIALS": "1"}),
    ]
    with running(instances):
        yield instances


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
@pytest.mark.parametrize("origin", [LISTED, ALSO_LISTED], ids=origin_id)
def test_preflights_from_a_listed_origin_are_answered(cors_server, origin, method, headers):
    response = preflight(cors_server, origin, method, headers)
    assert response.status_code == 200
    allowed = cors_headers(response)
    assert allowed["access-control-allow-origin"] == origin
    assert method in allowed["access-control-allow-methods"].split(", ")
    assert set(headers.split(",")) <= set(allowed["access-control-allow-headers"].split(", "))
    assert int(allowed["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in allowed


@pytest.mark.parametrize("origin", UNLISTED, ids=origin_id)
def test_preflights_from_an_unlisted_origin_get_no_cors_headers(cors_server, origin):
    response = preflight(cors_server, origin, "POST", "authorization,content-type")
    assert cors_headers(response) == {}


def test_queries_and_mutations_with_a_bearer_token_from_a_listed_origin_can_be_read(cors_server, api: LiveApi):
    username, token = api.sign_up()
    with httpx.Client(base_url=cors_server.url, timeout=30) as client:
        headers = {"Origin": LISTED, "Authorization": f"Bearer {token}", "Accept": ACCEPTS["json"]}
        query = client.post("/graphql/", json={"query": VIEWER}, headers=headers)
        variables = {"title": "Cross-origin", "content": "From another origin."}
        mutation = client.post("/graphql/", json={"query": CREATE_BLOG, "variables": variables}, headers=headers)
        get = client.get("/graphql/", params={"query": VIEWER}, headers=headers)
    assert query.json() == {"data": {"viewer": {"username": username}}}
    assert assert_no_errors(mutation.json())["createBlog"]["blog"]["title"] == "Cross-origin"
    assert get.json() == query.json()
    for response in (query, mutation, get):
        allowed = cors_headers(response)
        assert allowed["access-control-allow-origin"] == LISTED
        assert "access-control-allow-credentials" not in allowed
        assert {"X-Request-ID", "Retry-After", "WWW-Authenticate"} <= set(
            allowed["access-control-expose-headers"].split(", ")
        )
        assert "origin" in response.headers["vary"].lower()


def test_refusals_from_a_listed_origin_can_be_read_too(cors_server):
    """A parse error, a token that does not authenticate, a mutation over GET: the script reads why."""
    with httpx.Client(base_url=cors_server.url, timeout=30) as client:
        bad = client.post("/graphql/", json={"query": "{"}, headers={"Origin": LISTED})
        revoked = client.post(
            "/graphql/", json={"query": VIEWER}, headers={"Origin": LISTED, "Authorization": "Bearer x"}
        )
        get_mutation = client.get("/graphql/", params={"query": SIGN_UP_FORM}, headers={"Origin": LISTED})
    assert (bad.status_code, get_mutation.status_code) == (400, 405)
    for response in (bad, revoked, get_mutation):
        assert response.headers["access-control-allow-origin"] == LISTED


@pytest.mark.parametrize("origin", UNLISTED, ids=origin_id)
def test_answers_to_an_unlisted_origin_carry_no_cors_headers(cors_server, origin):
    response = httpx.post(f"{cors_server.url}/graphql/", json={"query": VIEWER}, headers={"Origin": origin}, timeout=30)
    assert response.status_code == 200  # the browser withholds it from the page
    assert cors_headers(response) == {}


def test_only_the_graphql_endpoint_answers_other_origins(cors_server):
    for path in ("/healthz", "/metrics", "/admin/login/"):
        response = httpx.get(f"{cors_server.url}{path}", headers={"Origin": LISTED}, timeout=30)
        assert cors_headers(response) == {}, path


# Cookies: off by default, and when on, CSRF still guards them.


def csrf_token(server: DaphneInstance) -> str:
    return httpx.get(f"{server.url}/graphql/", params={"query": "{ __typename }"}, timeout=30).cookies["csrftoken"]


def test_with_credentials_on_a_listed_origin_may_send_its_session_with_the_csrf_token(cors_servers, browser_session):
    _, cookies = cors_servers
    username, session = browser_session
    csrf = csrf_token(cookies)
    headers = {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf, "Origin": LISTED}
    response = httpx.post(f"{cookies.url}/graphql/", json={"query": VIEWER}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"data": {"viewer": {"username": username}}}
    assert response.headers["access-control-allow-origin"] == LISTED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert preflight(cookies, LISTED).headers["access-control-allow-credentials"] == "true"


def test_without_credentials_on_the_same_request_is_refused_by_csrf(cors_server, browser_session):
    """Cookies are not for other origins unless CORS_ALLOW_CREDENTIALS: CSRF does not trust a listed origin."""
    _, session = browser_session
    csrf = csrf_token(cors_server)
    headers = {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf, "Origin": LISTED}
    response = httpx.post(f"{cors_server.url}/graphql/", json={"query": VIEWER}, headers=headers, timeout=30)
    assert response.status_code == 403
    assert "CSRF" in response.text


@pytest.mark.parametrize("origin", [LISTED, *UNLISTED[:2]], ids=origin_id)
@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_with_credentials_on_a_cross_site_form_still_cannot_write(cors_servers, browser_session, origin, encoding):
    """A form sends cookies but no CSRF token: refused from a listed origin and from any other."""
    _, cookies = cors_servers
    _, session = browser_session
    form = {"query": SIGN_UP_FORM}
    body = {"data": form} if encoding == "form" else {"files": {"query": (None, SIGN_UP_FORM)}}
    response = httpx.post(
        f"{cookies.url}/graphql/", headers={"Origin": origin, "Cookie": f"sessionid={session}"}, timeout=30, **body
    )
    assert response.status_code == 403
    assert "CSRF" in response.text


def test_with_credentials_on_an_unlisted_origin_is_not_trusted_even_with_the_csrf_token(cors_servers, browser_session):
    _, cookies = cors_servers
    _, session = browser_session
    csrf = csrf_token(cookies)
    headers = {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf, "Origin": UNLISTED[0]}
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
    result = subprocess.run(
        [sys.executable, "-c", PREFLIGHTS, json.dumps(origins)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
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
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        env={**env, "CORS_ALLOWED_ORIGINS": f"https://ok.example,{value}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"CORS_ALLOWED_ORIGINS: {value!r} is not an origin" in result.stderr
