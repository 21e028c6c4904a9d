"""A front end on another origin, in a real headless Chromium: a page served from another loopback
port calls the API the way a web developer wires it (fetch, EventSource, graphql-sse's client,
Apollo Client's HttpLink, a websocket). A listed origin can do all of it with a bearer token; a
page of an origin that is not listed gets nothing, and a cross-site form still cannot write.

The instances and front ends: tests/fixtures_web.py (cors_servers, front_ends).
"""

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import BrowserContext, Page

from stack.services import DaphneInstance
from tests.fixtures_web import FrontEnd, load
from tests.live import LiveApi, assert_no_errors, unique_name

PUSH_TIMEOUT_MS = 15_000  # generous: the machine is shared; delivery itself takes milliseconds
FOLLOW = "subscription ($author: String) { blogPublished(author: $author) { cursor blog { title } } }"
VIEWER = "query { viewer { username } }"
CREATE_BLOG = 'mutation ($title: String!) { createBlog(input: {title: $title, content: "Hi."}) { blog { title } } }'


@pytest.fixture
async def page_of(browser: BrowserContext) -> AsyncIterator:
    """Open a front end's page; every page opened is closed after the test."""
    pages: list[Page] = []

    async def open_page(front_end: FrontEnd, *, apollo: bool = False) -> Page:
        page = await browser.new_page()
        pages.append(page)
        url = f"{front_end.origin}{front_end.APOLLO_PATH if apollo else '/'}"
        await load(page, url, "window.apolloReady === true" if apollo else "window.graphqlSse")
        return page

    yield open_page
    for page in pages:
        await page.close()


@pytest.fixture(scope="module")
def cors_api(cors_servers) -> DaphneInstance:
    return cors_servers[0]


def graphql_url(server: DaphneInstance) -> str:
    return f"{server.url}/graphql/"


FETCH = """async ([url, token, query, variables]) => {
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json;q=0.9",
        Authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query, variables }),
    });
    return { status: response.status, body: await response.json(), requestId: response.headers.get("X-Request-ID") };
  } catch (error) {
    return { error: String(error) };
  }
}"""

# Each subscribes through one client and records what arrives (window.received) and how it ended.
APOLLO = "Apollo multipart"
SUBSCRIBE = {
    "EventSource": """([url, query, variables]) => {
  window.received = []; window.failures = [];
  const target = new URL(url);
  target.searchParams.set("query", query);
  target.searchParams.set("variables", JSON.stringify(variables));
  const source = new EventSource(target);
  source.addEventListener("open", () => { window.opened = true; });
  source.addEventListener("next", (event) => window.received.push(JSON.parse(event.data)));
  source.addEventListener("error", () => { window.failures.push("error"); source.close(); });
}""",
    "graphql-sse": """([url, query, variables, token]) => {
  window.received = []; window.failures = [];
  const client = graphqlSse.createClient({
    url, headers: { Authorization: `Bearer ${token}` }, retryAttempts: 0,
    on: { connected: () => { window.opened = true; } },
  });
  client.subscribe({ query, variables }, {
    next: (result) => window.received.push(result),
    error: (error) => window.failures.push(String(error)),
    complete: () => {},
  });
}""",
    APOLLO: """([url, query, variables, token]) => {
  window.received = []; window.failures = [];
  const { ApolloClient, HttpLink, InMemoryCache, gql } = window.apollo;
  const client = new ApolloClient({
    link: new HttpLink({
      uri: url,
      headers: { Authorization: `Bearer ${token}` },
      // The stream's response arrived (Apollo reports no such moment itself).
      fetch: async (...args) => {
        const response = await fetch(...args);
        window.opened = response.ok;
        return response;
      },
    }),
    cache: new InMemoryCache(),
  });
  client.subscribe({ query: gql(query), variables, fetchPolicy: "no-cache" }).subscribe({
    next: (result) => {
      if (result.error) window.failures.push(String(result.error)); else window.received.push({ data: result.data });
    },
    error: (error) => window.failures.push(String(error)),
  });
}""",
    "websocket": """([url, query, variables, token]) => {
  window.received = []; window.failures = [];
  const socket = new WebSocket(url.replace(/^http/, "ws"), "graphql-transport-ws");
  socket.onopen = () => {
    window.opened = true;
    socket.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${token}` } }));
  };
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "connection_ack") {
      socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
    } else if (frame.type === "next") {
      window.received.push(frame.payload);
    } else if (frame.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    }
  };
  socket.onclose = (event) => window.failures.push(`closed ${event.code}`);
}""",
}
# When a subscription is live on the server: the stream or socket answered, then a moment for
# the hub to register it (the first push is retried until it arrives, as below).
OPENED_OR_FAILED = "window.opened === true || window.failures.length > 0"


async def receive_a_pushed_blog(page: Page, api: LiveApi, token: str) -> list[str]:
    """Publish blogs until the page's subscription shows one (the first may precede the hub's
    registration of the subscription), and return the titles it received."""
    for attempt in range(10):
        await asyncio.to_thread(api.create_blog, token, f"Pushed cross-origin {attempt}")
        try:
            await page.wait_for_function("window.received.length > 0", timeout=1500)
            break
        except Exception:
            failures = await page.evaluate("window.failures")
            assert not failures, failures
    received = await page.evaluate("window.received")
    return [event["data"]["blogPublished"]["blog"]["title"] for event in received]


async def test_a_listed_page_reads_and_writes_with_a_bearer_token(page_of, front_ends, cors_api):
    api = LiveApi(cors_api.url)
    username, token = api.sign_up()
    page = await page_of(front_ends[0])
    url = graphql_url(cors_api)
    viewer = await page.evaluate(FETCH, [url, token, VIEWER, {}])
    created = await page.evaluate(FETCH, [url, token, CREATE_BLOG, {"title": "Written cross-origin"}])
    assert viewer["body"] == {"data": {"viewer": {"username": username}}}, viewer
    assert assert_no_errors(created["body"])["createBlog"]["blog"]["title"] == "Written cross-origin"
    assert created["requestId"]  # exposed: a script can report the id an error names


APOLLO_OPERATIONS = """async ([url, token, query, mutation, variables]) => {
  const { ApolloClient, HttpLink, InMemoryCache, gql } = window.apollo;
  const client = new ApolloClient({
    link: new HttpLink({ uri: url, headers: { Authorization: `Bearer ${token}` } }),
    cache: new InMemoryCache(),
  });
  try {
    const read = await client.query({ query: gql(query), fetchPolicy: "no-cache" });
    const written = await client.mutate({ mutation: gql(mutation), variables });
    return { viewer: read.data.viewer.username, title: written.data.createBlog.blog.title };
  } catch (error) {
    return { error: String(error) };
  }
}"""


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "unlisted"])
async def test_apollo_clients_queries_and_mutations_work_from_a_listed_page_only(page_of, front_ends, cors_api, listed):
    api = LiveApi(cors_api.url)
    username, token = api.sign_up()
    page = await page_of(front_ends[0] if listed else front_ends[1], apollo=True)
    title = unique_name("apollo")
    result = await page.evaluate(
        APOLLO_OPERATIONS, [graphql_url(cors_api), token, VIEWER, CREATE_BLOG, {"title": title}]
    )
    if listed:
        assert result == {"viewer": username, "title": title}
    else:
        assert "Failed to fetch" in result["error"]
        assert title not in json.dumps(api.post("query { blogs(first: 20) { edges { node { title } } } }"))


@pytest.mark.parametrize("client", SUBSCRIBE)
async def test_a_listed_page_receives_a_pushed_blog(page_of, front_ends, cors_api, client):
    api = LiveApi(cors_api.url)
    username, token = api.sign_up(unique_name("cors"))
    page = await page_of(front_ends[0], apollo=client == APOLLO)
    await page.evaluate(SUBSCRIBE[client], [graphql_url(cors_api), FOLLOW, {"author": username}, token])
    await page.wait_for_function(OPENED_OR_FAILED, timeout=PUSH_TIMEOUT_MS)
    assert await page.evaluate("window.failures") == []
    titles = await receive_a_pushed_blog(page, api, token)
    assert titles and titles[0].startswith("Pushed cross-origin"), titles


async def test_an_unlisted_page_can_neither_read_nor_write(page_of, front_ends, cors_api):
    api = LiveApi(cors_api.url)
    _, token = api.sign_up()
    page = await page_of(front_ends[1])
    url = graphql_url(cors_api)
    viewer = await page.evaluate(FETCH, [url, token, VIEWER, {}])
    assert viewer == {"error": "TypeError: Failed to fetch"}
    # The preflight is refused, so the mutation is never sent.
    title = unique_name("never-written")
    created = await page.evaluate(FETCH, [url, token, CREATE_BLOG, {"title": title}])
    assert created == {"error": "TypeError: Failed to fetch"}
    blogs = api.post("query { blogs(first: 20) { edges { node { title } } } }")
    assert title not in json.dumps(blogs)


@pytest.mark.parametrize("client", SUBSCRIBE)
async def test_an_unlisted_page_gets_no_subscription(page_of, front_ends, cors_api, client):
    api = LiveApi(cors_api.url)
    username, token = api.sign_up()
    page = await page_of(front_ends[1], apollo=client == APOLLO)
    await page.evaluate(SUBSCRIBE[client], [graphql_url(cors_api), FOLLOW, {"author": username}, token])
    await page.wait_for_function("window.failures.length > 0", timeout=PUSH_TIMEOUT_MS)
    await asyncio.to_thread(api.create_blog, token, "Not for that page")
    await page.wait_for_timeout(500)
    assert await page.evaluate("window.received") == []
    assert not await page.evaluate("window.opened === true")
    if client == "websocket":
        assert await page.evaluate("window.failures") == ["closed 1006"]  # the handshake was refused


FORM_POST = """([url, query]) => {
  const form = document.createElement("form");
  form.method = "POST";
  form.action = url;
  const field = document.createElement("input");
  field.name = "query";
  field.value = query;
  form.append(field);
  document.body.append(form);
  form.submit();
}"""


@pytest.mark.parametrize("which", ["listed", "stranger"])
async def test_a_cross_site_form_with_the_session_cookie_cannot_write(
    browser: BrowserContext, page_of, front_ends, cors_servers, browser_session, which
):
    """With cookies allowed for the listed origin: a form from any page sends the session cookie
    (the ports of one host share cookies) but no CSRF token, and is refused."""
    _, cookies = cors_servers
    _, session = browser_session
    await browser.add_cookies([{"name": "sessionid", "value": session, "url": cookies.url}])
    try:
        page = await page_of(front_ends[0] if which == "listed" else front_ends[1])
        username = unique_name("forged")
        mutation = (
            f'mutation {{ createAuthor(input: {{username: "{username}", password: "correct horse"}}) {{ token }} }}'
        )
        async with page.expect_navigation():
            await page.evaluate(FORM_POST, [graphql_url(cookies), mutation])
        assert "CSRF" in await page.content()
        found = LiveApi(cookies.url).post("query ($u: String!) { author(username: $u) { id } }", {"u": username})
        assert found["data"] == {"author": None}
    finally:
        await browser.clear_cookies()


CREDENTIALED_FETCH = """async ([url, query]) => {
  await fetch(url + "?query=" + encodeURIComponent("{ __typename }"), { credentials: "include" });
  const csrf = document.cookie.split("; ").find((cookie) => cookie.startsWith("csrftoken=")).split("=")[1];
  const response = await fetch(url, {
    method: "POST",
    credentials: "include",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify({ query }),
  });
  return response.json();
}"""


async def test_with_credentials_on_a_listed_page_uses_the_session_with_the_csrf_token(
    browser: BrowserContext, page_of, front_ends, cors_servers, browser_session
):
    _, cookies = cors_servers
    username, session = browser_session
    await browser.add_cookies([{"name": "sessionid", "value": session, "url": cookies.url}])
    try:
        page = await page_of(front_ends[0])
        result = await page.evaluate(CREDENTIALED_FETCH, [graphql_url(cookies), VIEWER])
        assert result == {"data": {"viewer": {"username": username}}}
    finally:
        await browser.clear_cookies()
