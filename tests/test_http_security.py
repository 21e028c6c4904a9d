"""GraphQL over HTTP: CSRF, batching, GET, GraphiQL, error masking, production settings."""

import json
import os
import re
import secrets
import sys

import httpx
import pytest

from stack import forkserver
from stack.services import REPO_ROOT, DaphneInstance, manage, migrate
from tests.graphql_http import post_graphql
from tests.live import LiveApi, assert_no_errors, error_codes
from tests.wsclient import TRANSPORT_WS, GraphQLWSClient

VIEWER = "query { viewer { username } }"
BLOGS = "query { blogs(first: 1) { edges { node { publishedAt } } } }"
SIGN_UP_FORM = 'mutation { createAuthor(input: {username: "forged_by_evil", password: "correct horse"}) { token } }'
EVIL_ORIGIN = "https://evil.example"


def http(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_cross_site_form_posts_with_the_session_cookie_are_refused_by_csrf(daphne_server, browser_session, encoding):
    _, session = browser_session
    form = {"query": SIGN_UP_FORM}
    body = {"data": form} if encoding == "form" else {"files": {"query": (None, SIGN_UP_FORM)}}
    with http(daphne_server) as client:
        response = client.post("/graphql/", headers={"Origin": EVIL_ORIGIN, "Cookie": f"sessionid={session}"}, **body)
    assert response.status_code == 403
    assert "CSRF" in response.text


def test_a_session_cookie_needs_the_csrf_token_even_for_json(daphne_server, browser_session):
    _, session = browser_session
    with http(daphne_server) as client:
        response = client.post("/graphql/", json={"query": VIEWER}, headers={"Cookie": f"sessionid={session}"})
    assert response.status_code == 403


def test_answers_carry_the_csrf_cookie_for_session_pages_but_not_to_bearer_requests(daphne_server, api):
    """A page that signs in with the session gets its CSRF token from any answer; a request
    signed in with a bearer token has no use for one, and gets none."""
    _, token = api.sign_up()
    with http(daphne_server) as client:
        anonymous = client.post("/graphql/", json={"query": "{ __typename }"})
        query = client.get("/graphql/", params={"query": "{ __typename }"})
    with http(daphne_server) as client:
        bearer = client.post("/graphql/", json={"query": VIEWER}, headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == query.status_code == bearer.status_code == 200
    assert "csrftoken" in anonymous.cookies and "csrftoken" in query.cookies
    assert bearer.json()["data"]["viewer"] is not None
    assert "set-cookie" not in bearer.headers, bearer.headers


def test_a_same_origin_request_with_session_and_csrf_token_sees_the_user(daphne_server, browser_session):
    username, session = browser_session
    with http(daphne_server) as client:
        csrf = client.get("/graphql/", params={"query": "{ __typename }"}).cookies["csrftoken"]
        response = client.post(
            "/graphql/",
            json={"query": VIEWER},
            headers={
                "Cookie": f"sessionid={session}; csrftoken={csrf}",
                "X-CSRFToken": csrf,
                "Origin": daphne_server.url,
            },
        )
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"data": {"viewer": {"username": username}}}


def test_bearer_token_requests_need_no_csrf_token(daphne_server, api: LiveApi, browser_session):
    """No site can make a browser send a bearer token, so even alongside a session cookie, from a
    foreign origin, the token authenticates and no CSRF token is asked for."""
    username, token = api.sign_up()
    _, session = browser_session
    with http(daphne_server) as client:
        response = client.post(
            "/graphql/",
            json={"query": VIEWER},
            headers={"Authorization": f"Bearer {token}", "Origin": EVIL_ORIGIN, "Cookie": f"sessionid={session}"},
        )
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"username": username}}}


def test_batched_bodies_are_refused_unless_batching_is_enabled(daphne_server):
    with http(daphne_server) as client:
        response = client.post("/graphql/", json=[{"query": VIEWER}, {"query": VIEWER}])
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]


def test_mutations_over_get_are_refused(daphne_server):
    with http(daphne_server) as client:
        refused = client.get("/graphql/", params={"query": SIGN_UP_FORM})
        query = client.get("/graphql/", params={"query": VIEWER})
    assert refused.status_code == 405
    assert error_codes(refused.json()) == ["METHOD_NOT_ALLOWED"]
    assert query.json() == {"data": {"viewer": None}}


def test_graphiql_is_off_without_debug(daphne_server):
    """Without GraphiQL, an Accept of only text/html names nothing the endpoint serves (docs/http.md)."""
    with http(daphne_server) as client:
        response = client.get("/graphql/", headers={"Accept": "text/html"})
    assert response.status_code == 406
    assert response.headers["content-type"].startswith("application/json")
    assert error_codes(response.json()) == ["NOT_ACCEPTABLE"]
    assert "graphiql" not in response.text.lower()


def test_subscriptions_over_http_are_refused_with_a_pointer_to_the_websocket(api: LiveApi):
    result = api.post("subscription { blogPublished { cursor } }")
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert "websocket" in result["errors"][0]["message"]


# A blog whose stored date no longer parses (a bad restore, a hand edit): reading it raises
# in Django's converter, a fault of this server's data, not a database that is away (which is
# DATABASE_UNAVAILABLE, retryable).
CORRUPT_A_BLOG = """
from django.db import connection
from api.models import Author, Blog
author = Author.objects.create_user(username="corrupt", password="a long enough password")
blog = Blog.objects.create(author=author, title="t", content="c")
with connection.cursor() as cursor:
    cursor.execute("UPDATE api_blog SET published_at = 'not a date' WHERE id = %s", [blog.pk])
"""


@pytest.fixture(scope="module")
def broken_database_server(live_env, tmp_path_factory):
    """An instance whose one blog cannot be read: every query that reads it fails unexpectedly."""
    env = {**live_env, "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('corrupt') / 'db.sqlite3'}"}
    migrate(env)
    manage(env, "shell", "-c", CORRUPT_A_BLOG)
    with DaphneInstance("broken-db", env) as server:
        yield server


def assert_masked(error: dict, request_id: str) -> None:
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    assert error["message"] == f"Internal server error (request {request_id})."


def logged_with(server, request_id: str) -> str:
    """The server log's text from the line naming `request_id` on (its traceback)."""
    log = server.log_path.read_text(errors="replace")
    assert f"Unexpected error in GraphQL resolver (request {request_id})" in log
    return log[log.index(request_id) :]


def test_unexpected_errors_reach_http_clients_masked_with_the_request_id_of_the_log_line(broken_database_server):
    with http(broken_database_server) as client:
        response = client.post("/graphql/", json={"query": BLOGS})
    request_id = response.headers["X-Request-ID"]
    assert_masked(response.json()["errors"][0], request_id)
    assert "Traceback" not in response.text and "not a date" not in response.text
    assert "Traceback" in logged_with(broken_database_server, request_id)


async def test_unexpected_errors_reach_websocket_clients_masked_with_the_request_id_of_the_log_line(
    broken_database_server,
):
    client = await GraphQLWSClient(broken_database_server.ws_url, TRANSPORT_WS).connect()
    try:
        result = await client.execute(BLOGS)
    finally:
        await client.close()
    error = result["payload"]["errors"][0]
    request_id = error["extensions"]["requestId"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert_masked(error, request_id)
    assert "Traceback" in logged_with(broken_database_server, request_id)


def test_a_well_formed_proxy_request_id_is_kept_and_anything_else_replaced(daphne_server):
    with http(daphne_server) as client:
        kept = client.post(
            "/graphql/", json={"query": VIEWER}, headers={"X-Request-ID": "0123456789abcdef0123456789abcdef"}
        )
        replaced = client.post(
            "/graphql/", json={"query": VIEWER}, headers={"X-Request-ID": "evil; INFO forged log line"}
        )
    assert kept.headers["X-Request-ID"] == "0123456789abcdef0123456789abcdef"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-ID"])


def test_production_settings_pass_check_deploy_without_warnings():
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "GRAPHQL_", "RATE_LIMIT_"))
    }
    environment |= {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "blog.example.com",
    }
    result = forkserver.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=environment,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


# In-process (Django's test client through the real view and middleware): the switches an
# operator can turn on, and request bodies no client library would send.

BAD_BODIES = {
    "array": ("[1, 2]", "BAD_REQUEST"),
    "null": ("null", "BAD_REQUEST"),
    "no query": ("{}", "BAD_REQUEST"),
    "query not a string": ('{"query": 42}', "BAD_USER_INPUT"),
    "variables not an object": ('{"query": "{ viewer { username } }", "variables": [1]}', "BAD_USER_INPUT"),
    "variables not JSON": ('{"query": "{ viewer { username } }", "variables": "{oops"}', "BAD_REQUEST"),
    "operationName not a string": ('{"query": "{ viewer { username } }", "operationName": 7}', "BAD_USER_INPUT"),
    "unknown operation": ('{"query": "query A { viewer { username } }", "operationName": "B"}', "BAD_USER_INPUT"),
    "nested too deeply": (
        '{"query": "{ viewer { username } }", "variables": ' + "[" * 50_000 + "]" * 50_000 + "}",
        "BAD_REQUEST",
    ),
    "not JSON": ("{query", "BAD_REQUEST"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_BODIES.keys())
def test_malformed_bodies_get_a_coded_400_never_an_internal_error(client, case):
    body, code = BAD_BODIES[case]
    response = client.post("/graphql/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert error_codes(response.json()) == [code]


@pytest.mark.django_db
def test_batching_when_enabled_limits_each_operation_and_the_batch_size(client, settings):
    settings.GRAPHQL_BATCH = True
    settings.GRAPHQL_BATCH_MAX = 2
    deep = (
        "{ blogs { edges { node { author { blogs { edges { node { author {"
        " blogs { edges { node { title } } } } } } } } } } } }"
    )
    response = client.post(
        "/graphql/", data=json.dumps([{"query": VIEWER}, {"query": deep}]), content_type="application/json"
    )
    first, second = response.json()
    assert first["data"] == {"viewer": None}
    assert error_codes(second) == ["BAD_USER_INPUT"]
    too_many = client.post("/graphql/", data=json.dumps([{"query": VIEWER}] * 3), content_type="application/json")
    assert too_many.status_code == 400
    assert error_codes(too_many.json()) == ["BAD_REQUEST"]


@pytest.mark.django_db
@pytest.mark.parametrize("enabled", [True, False])
def test_graphiql_follows_its_setting(client, settings, enabled):
    settings.GRAPHQL_GRAPHIQL = enabled
    response = client.get("/graphql/", headers={"Accept": "text/html"})
    assert ("graphiql" in response.content.decode().lower()) is enabled


@pytest.mark.django_db
def test_introspection_and_suggestions_follow_the_introspection_setting(client, settings):
    settings.GRAPHQL_INTROSPECTION = False
    assert set(error_codes(post_graphql(client, "{ __schema { queryType { name } } }"))) == {
        "GRAPHQL_VALIDATION_FAILED"
    }
    assert "Did you mean" not in post_graphql(client, "{ blgs { edges { cursor } } }")["errors"][0]["message"]
    settings.GRAPHQL_INTROSPECTION = True
    assert_no_errors(post_graphql(client, "{ __schema { queryType { name } } }"))
    assert "Did you mean 'blogs'" in post_graphql(client, "{ blgs { edges { cursor } } }")["errors"][0]["message"]
