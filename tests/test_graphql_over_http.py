"""GraphQL over HTTP per the spec: media types, status codes, 406, and the same answer in every format.

The negotiation rules alone (core/graphql_over_http.py), then the view in-process through
Django's test client (the switches an operator can turn), then a real Daphne with small limits,
where every limit, error code and rate limit is asked for in each media type.
"""

import json
import secrets
from typing import Any

import httpx
import pytest

from core import graphql_over_http as spec
from tests.live import SIGN_UP, error_codes

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
RECOMMENDED = "application/graphql-response+json, application/json;q=0.9"  # the spec's advice to clients
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
GRAPHIQL_FETCHER = "application/json, multipart/mixed"  # @graphiql/toolkit's createFetcher


# --- Negotiation alone ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, spec.UNSPECIFIED),
        ("", spec.UNSPECIFIED),
        ("*/*", spec.UNSPECIFIED),
        ("application/*", spec.UNSPECIFIED),
        ("*", spec.UNSPECIFIED),  # old Java clients
        (BROWSER, spec.UNSPECIFIED),
        ("application/json", spec.APPLICATION_JSON),
        ("Application/JSON; charset=UTF-8", spec.APPLICATION_JSON),
        (GRAPHIQL_FETCHER, spec.APPLICATION_JSON),
        ("application/graphql-response+json", spec.GRAPHQL_RESPONSE),
        (RECOMMENDED, spec.GRAPHQL_RESPONSE),
        ("application/graphql-response+json;charset=utf-8, */*;q=0.1", spec.GRAPHQL_RESPONSE),
        # equal weights: the one listed first, as graphql-http's reference server decides
        ("application/json, application/graphql-response+json", spec.APPLICATION_JSON),
        ("application/graphql-response+json, application/json", spec.GRAPHQL_RESPONSE),
        # weights beat order
        ("application/json;q=0.5, application/graphql-response+json", spec.GRAPHQL_RESPONSE),
        ("application/graphql-response+json;q=0.2, application/json;q=0.8", spec.APPLICATION_JSON),
        # a named type refused outright leaves the other one
        ("application/graphql-response+json;q=0, application/json", spec.APPLICATION_JSON),
        ("application/json;q=0, */*", spec.GRAPHQL_RESPONSE),
        ("application/json;q=0, application/graphql-response+json;q=0, */*", None),
        # nothing this endpoint answers with
        ("text/html", None),
        ("application/xml, text/plain;q=0.5", None),
        ("application/json;q=0", None),
        ("*/*;q=0", None),
        ("application/json; charset=iso-8859-1", None),
        ("application/json;q=oops", None),
    ],
)
def test_the_response_format_follows_the_accept_header(accept, expected):
    assert spec.response_format(accept) is expected


def test_formats_label_and_code_as_documented():
    assert spec.GRAPHQL_RESPONSE.content_type == "application/graphql-response+json; charset=utf-8"
    assert spec.APPLICATION_JSON.content_type == "application/json; charset=utf-8"
    assert spec.UNSPECIFIED.content_type == "application/json"  # graphene-django's header, unchanged
    for response_format in (spec.GRAPHQL_RESPONSE, spec.APPLICATION_JSON, spec.UNSPECIFIED):
        assert response_format.status(has_data=True, well_formed=True) == 200
        assert response_format.status(has_data=False, well_formed=False) == 400
        assert response_format.content_type_for(well_formed=False) == "application/json"
    assert spec.GRAPHQL_RESPONSE.status(has_data=False, well_formed=True) == 400
    assert spec.APPLICATION_JSON.status(has_data=False, well_formed=True) == 200
    assert spec.UNSPECIFIED.status(has_data=False, well_formed=True) == 400


@pytest.mark.parametrize(
    ("accept", "html"),
    [(None, True), ("text/html", True), (BROWSER, True), ("*/*", True), ("text/*", True), ("text/html;q=0", False)],
)
def test_html_is_acceptable_when_the_header_allows_it(accept, html):
    assert spec.accepts(accept, spec.HTML) is html


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (("{ a }", None, None, None), True),
        (("{ a }", {"v": 1}, "A", {"persistedQuery": {}}), True),
        ((42, None, None, None), False),
        (("{ a }", [1], None, None), False),
        (("{ a }", None, 7, None), False),
        (("{ a }", None, None, "string"), False),
        (("{ a }", None, None, ["array"]), False),
    ],
)
def test_well_formed_requests_have_the_spec_parameter_types(parameters, expected):
    assert spec.well_formed(*parameters) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ('{"a": 1}', {"a": 1}), ("[1]", [1]), ("{oops", "{oops"), ({"a": 1}, {"a": 1})],
)
def test_the_extensions_parameter_is_read_as_sent(raw, expected):
    assert spec.extensions_parameter(raw) == expected


# --- The view, in-process ------------------------------------------------------------------------

FORMATS = {  # Accept header -> (content type, status of a well-formed request that failed before execution)
    None: ("application/json", 400),
    "*/*": ("application/json", 400),
    JSON: ("application/json; charset=utf-8", 200),
    GRAPHQL_RESPONSE: ("application/graphql-response+json; charset=utf-8", 400),
    RECOMMENDED: ("application/graphql-response+json; charset=utf-8", 400),
}
DEEP = (
    "{ blogs { edges { node { author { blogs { edges { node { author {"
    " blogs { edges { node { title } } } } } } } } } } } }"
)
# name -> (JSON body, expected codes, kind): "data" answered by execution, "request" a GraphQL request
# error, "malformed" not a well-formed GraphQL-over-HTTP request, "refused" refused by the view.
CASES: dict[str, tuple[Any, list[str], str]] = {
    "query": ({"query": "{ viewer { username } }"}, [], "data"),
    "field error": (
        {"query": 'mutation { createBlog(input: {title: "t", content: "c"}) { blog { id } } }'},
        ["UNAUTHENTICATED"],
        "data",
    ),
    "parse": ({"query": "{"}, ["GRAPHQL_PARSE_FAILED"], "request"),
    "validation": ({"query": "{ nope }"}, ["GRAPHQL_VALIDATION_FAILED"], "request"),
    "variable coercion": (
        {"query": "query Q($id: ID!) { __typename }", "variables": {"id": None}},
        ["GRAPHQL_VALIDATION_FAILED"],
        "request",
    ),
    "unknown operation": ({"query": "query A { __typename }", "operationName": "B"}, ["BAD_USER_INPUT"], "request"),
    "depth": ({"query": DEEP}, ["BAD_USER_INPUT"], "request"),
    "cost": (
        {"query": "{ blogs(first: 100) { edges { node { author { blogs(first: 100) { edges { cursor } } } } } } }"},
        ["BAD_USER_INPUT"],
        "request",
    ),
    "page size": ({"query": "{ blogs(first: 1000) { edges { cursor } } }"}, ["BAD_USER_INPUT"], "request"),
    "tokens": ({"query": "{ " + "a " * 2500 + "}"}, ["BAD_USER_INPUT"], "request"),
    "document size": ({"query": "{ __typename }" + " " * 30_000}, ["BAD_USER_INPUT"], "request"),
    "subscription": ({"query": "subscription { blogPublished { cursor } }"}, ["BAD_USER_INPUT"], "request"),
    "query not a string": ({"query": 42}, ["BAD_USER_INPUT"], "malformed"),
    "variables not an object": ({"query": "{ __typename }", "variables": [1]}, ["BAD_USER_INPUT"], "malformed"),
    "operationName not a string": ({"query": "{ __typename }", "operationName": 7}, ["BAD_USER_INPUT"], "malformed"),
    "extensions not an object": ({"query": "{ __typename }", "extensions": "x"}, ["BAD_USER_INPUT"], "malformed"),
    "no query": ({"qeury": "{ __typename }"}, ["BAD_REQUEST"], "refused"),
    "not JSON": ('{"query": ', ["BAD_REQUEST"], "refused"),
    "not an object": ([{"query": "{ __typename }"}], ["BAD_REQUEST"], "refused"),
}
LIMITS = {
    "depth": "depth",
    "cost": "cost",
    "page size": "pageSize",
    "tokens": "tokens",
    "document size": "documentSize",
}


def expected_answer(accept: str | None, kind: str) -> tuple[int, str]:
    content_type, request_error_status = FORMATS[accept]
    if kind == "data":
        return 200, content_type
    if kind == "request":
        return request_error_status, content_type
    return 400, "application/json"


def post(client, body: Any, accept: str | None, **headers: str):
    if accept is not None:
        headers["Accept"] = accept
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post("/graphql/", data=data, content_type="application/json", headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES.keys())
def test_every_answer_has_the_same_body_in_every_format_and_the_spec_status_of_each(client, case):
    body, codes, kind = CASES[case]
    bodies = []
    for accept in FORMATS:
        response = post(client, body, accept)
        assert (response.status_code, response["Content-Type"]) == expected_answer(accept, kind), accept
        assert "Accept" in response["Vary"]
        result = response.json()
        assert error_codes(result) == codes, (accept, result)
        assert ("data" in result) is (kind == "data"), result
        bodies.append(result)
    assert all(result == bodies[0] for result in bodies[1:])
    if case in LIMITS:
        assert bodies[0]["errors"][0]["extensions"]["limit"] == LIMITS[case]


@pytest.mark.django_db
@pytest.mark.parametrize("accept", FORMATS.keys())
def test_rate_limits_answer_the_same_in_every_format(client, settings, accept):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "createAuthor": (1, 10**9)}
    variables = {"password": "correct horse"}
    first = post(client, {"query": SIGN_UP, "variables": {**variables, "username": "first_one"}}, accept)
    limited = post(client, {"query": SIGN_UP, "variables": {**variables, "username": "second_one"}}, accept)
    assert error_codes(first.json()) == []
    assert (limited.status_code, limited["Content-Type"]) == expected_answer(accept, "data")
    error = limited.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["limit"] == "createAuthor"
    assert limited.json()["data"] == {"createAuthor": None}


@pytest.mark.django_db
@pytest.mark.parametrize("accept", FORMATS.keys())
def test_mutations_over_get_are_405_with_allow_in_every_format(client, accept):
    headers = {"Accept": accept} if accept else {}
    response = client.get("/graphql/", {"query": "mutation { __typename }"}, headers=headers)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response["Content-Type"] == "application/json"
    assert error_codes(response.json()) == ["METHOD_NOT_ALLOWED"]


@pytest.mark.django_db
@pytest.mark.parametrize("accept", FORMATS.keys())
def test_get_queries_take_json_variables_in_every_format(client, accept):
    headers = {"Accept": accept} if accept else {}
    query = "query Q($first: Int) { blogs(first: $first) { edges { cursor } } }"
    response = client.get("/graphql/", {"query": query, "variables": '{"first": 1}'}, headers=headers)
    assert (response.status_code, response["Content-Type"]) == expected_answer(accept, "data")
    assert response.json() == {"data": {"blogs": {"edges": []}}}
    bad = client.get("/graphql/", {"query": "{ __typename }", "extensions": "[1]"}, headers=headers)
    assert (bad.status_code, error_codes(bad.json())) == (400, ["BAD_USER_INPUT"])


@pytest.mark.django_db
@pytest.mark.parametrize("graphiql", [True, False])
@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/json;q=0", "image/*"])
def test_an_accept_naming_nothing_served_is_406(client, settings, graphiql, accept):
    settings.GRAPHQL_GRAPHIQL = graphiql
    response = post(client, {"query": "{ __typename }"}, accept)
    if graphiql and accept == "text/html":
        assert response.status_code == 200  # GraphiQL, as graphene-django serves it
        assert response["Content-Type"].startswith("text/html")
        return
    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"
    assert error_codes(response.json()) == ["NOT_ACCEPTABLE"]
    assert "application/graphql-response+json" in response.json()["errors"][0]["message"]


@pytest.mark.django_db
def test_graphiql_keeps_working_with_the_headers_a_browser_and_its_fetcher_send(client, settings):
    settings.GRAPHQL_GRAPHIQL = True
    page = client.get("/graphql/", headers={"Accept": BROWSER})
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    assert b"graphiql" in page.content.lower()
    result = post(client, {"query": "{ nope }"}, GRAPHIQL_FETCHER)
    assert (result.status_code, result["Content-Type"]) == (200, "application/json; charset=utf-8")
    assert error_codes(result.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    raw = client.get("/graphql/", {"query": "{ __typename }", "raw": ""}, headers={"Accept": "text/html"})
    assert raw.json() == {"data": {"__typename": "Query"}}


@pytest.mark.django_db
def test_introspection_is_refused_alike_in_every_format_when_off(client, settings):
    settings.GRAPHQL_INTROSPECTION = False
    answers = {accept: post(client, {"query": "{ __schema { queryType { name } } }"}, accept) for accept in FORMATS}
    for accept, response in answers.items():
        assert (response.status_code, response["Content-Type"]) == expected_answer(accept, "request")
        assert set(error_codes(response.json())) == {"GRAPHQL_VALIDATION_FAILED"}
    assert len({response.content for response in answers.values()}) == 1


# --- A real Daphne: limits, error codes and rate limits asked for in each media type --------------

LIVE_FORMATS = [None, "*/*", JSON, GRAPHQL_RESPONSE, RECOMMENDED]


def live_post(server, body: Any, accept: str | None, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        request = client.build_request(
            "POST",
            "/graphql/",
            content=body if isinstance(body, str) else json.dumps(body),
            headers={"Content-Type": "application/json", **headers},
        )
        if accept is None:
            del request.headers["Accept"]  # httpx sends */* unless told otherwise
        else:
            request.headers["Accept"] = accept
        return client.send(request)


@pytest.mark.parametrize("case", CASES.keys())
def test_a_live_server_answers_every_case_alike_in_every_format(strict_servers, case):
    body, codes, kind = CASES[case]
    results = []
    for accept in LIVE_FORMATS:
        response = live_post(strict_servers[0], body, accept)
        assert (response.status_code, response.headers["content-type"]) == expected_answer(accept, kind), accept
        assert error_codes(response.json()) == codes
        results.append(response.json())
    assert all(result == results[0] for result in results[1:])


def test_a_live_server_rate_limits_alike_in_every_format(strict_servers):
    """strict_servers allow 2 sign-ups per address (from X-Forwarded-For): the third is limited in every format."""
    address = f"2001:db8:14::{secrets.randbits(16):x}:{secrets.randbits(16):x}"  # a client address of its own
    for _ in range(2):
        username = f"rl_{secrets.token_hex(4)}"
        body = {"query": SIGN_UP, "variables": {"username": username, "password": "correct horse"}}
        assert error_codes(live_post(strict_servers[0], body, None, **{"X-Forwarded-For": address}).json()) == []
    for accept in LIVE_FORMATS:
        body = {"query": SIGN_UP, "variables": {"username": f"rl_{secrets.token_hex(4)}", "password": "correct horse"}}
        response = live_post(strict_servers[0], body, accept, **{"X-Forwarded-For": address})
        assert (response.status_code, response.headers["content-type"]) == expected_answer(accept, "data")
        result = response.json()
        assert result["data"] == {"createAuthor": None}
        (error,) = result["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["limit"] == "createAuthor"
        assert error["extensions"]["retryAfter"] > 0


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/json; charset=iso-8859-1"])
def test_a_live_server_answers_406_to_an_accept_it_cannot_meet(strict_servers, accept):
    response = live_post(strict_servers[0], {"query": "{ __typename }"}, accept)
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    assert "Accept" in response.headers["vary"]
    assert error_codes(response.json()) == ["NOT_ACCEPTABLE"]
