"""Helpers for talking to a running server the way a client does: HTTP, Redis, GraphQL documents."""

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stack.services import REPO_ROOT

SIGN_UP = """
mutation SignUp($username: String!, $password: String!, $bio: String) {
  createAuthor(input: {username: $username, password: $password, bio: $bio}) { author { id username } token }
}
"""
CREATE_BLOG = """
mutation CreateBlog($title: String!, $content: String!) {
  createBlog(input: {title: $title, content: $content}) { blog { id title content publishedAt author { username } } }
}
"""
CREATE_TOKEN = """
mutation LogIn($username: String!, $password: String!) {
  createToken(input: {username: $username, password: $password}) { token }
}
"""
BLOG_PUBLISHED = """
subscription OnBlogPublished($author: String, $after: String) {
  blogPublished(author: $author, after: $after) {
    cursor blog { id title content publishedAt author { id username bio } }
  }
}
"""


def assert_no_errors(result: dict[str, Any]) -> dict[str, Any]:
    """The response's data, after checking it carries no GraphQL errors."""
    assert "errors" not in result or not result["errors"], result.get("errors")
    assert result.get("data") is not None, result
    return result["data"]


def error_codes(result: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in result.get("errors") or []]


def unique_name(prefix: str = "author") -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


class LiveApi:
    """GraphQL over HTTP against a live server."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, local_address: str | None = None) -> None:
        """`local_address`: the loopback address to connect from (127.0.0.2, ...), to be another client."""
        self.base_url = base_url.rstrip("/")
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        self.client = httpx.Client(base_url=self.base_url, timeout=30, headers=headers, transport=transport)

    def post(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.client.post("/graphql/", json={"query": query, "variables": variables or {}}, headers=headers)
        assert response.headers["content-type"].startswith("application/json"), response.text[:500]
        return response.json()

    def sign_up(self, username: str | None = None, password: str = "correct horse") -> tuple[str, str]:
        username = username or unique_name()
        data = assert_no_errors(
            self.post(SIGN_UP, {"username": username, "password": password, "bio": f"I am {username}"})
        )
        return username, data["createAuthor"]["token"]

    def create_blog(self, token: str, title: str, content: str = "Some content.") -> dict[str, Any]:
        data = assert_no_errors(self.post(CREATE_BLOG, {"title": title, "content": content}, token))
        return data["createBlog"]["blog"]


LATEST_CURSOR = "query { latestCursor }"


async def readyz(client: httpx.AsyncClient, url: str) -> tuple[int, dict[str, Any]]:
    try:
        response = await client.get(f"{url}/readyz")
    except httpx.HTTPError as error:
        return 0, {"error": repr(error)}
    try:
        return response.status_code, response.json()
    except ValueError:  # not from Django: the balancer's own error page
        return response.status_code, {"body": response.text[:200]}


async def wait_readyz(urls: list[str], status: int, timeout: float = 20) -> dict[str, dict[str, Any]]:
    """Poll /readyz at every URL at once until each answers `status`; the answer of each."""

    async def poll(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            code, body = await readyz(client, url)
            if code == status:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{url}/readyz did not answer {status} within {timeout:g}s: {code} {body}")
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        answers = await asyncio.gather(*(poll(client, url) for url in urls))
    return dict(zip(urls, answers, strict=True))


Samples = dict[tuple[str, frozenset], float]


def scrape(server: Any, **headers: str) -> Samples:
    """Every sample of `server`'s /metrics, keyed by name and labels."""
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in samples.items() if n == name and wanted <= sample_labels)


class DjangoShell:
    """`manage.py shell -c` against a live database, in one Django process kept between calls
    (tests/scripts/django_shell.py): a change made from outside any server, as an operator's script
    makes it. `run(code)` returns what the code printed; an exception in it fails the caller."""

    def __init__(self, env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "tests" / "scripts" / "django_shell.py")],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()  # tests call it from threads (asyncio.to_thread)

    def run(self, code: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps({"code": code}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        assert line, f"the Django shell exited with {self._process.poll()}"
        answer = json.loads(line)
        assert answer["error"] is None, f"{code}\n{answer['error']}"
        return str(answer["stdout"])

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
