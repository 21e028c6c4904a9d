"""The benchmark's author: signs up once, then publishes blogs over HTTP and times each mutation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from stack.services import REPO_ROOT

SIGN_UP = """
mutation SignUp($username: String!, $password: String!, $bio: String) {
  createAuthor(input: {username: $username, password: $password, bio: $bio}) { author { id username } token }
}
"""
CREATE_BLOG = """
mutation CreateBlog($title: String!, $content: String!) {
  createBlog(input: {title: $title, content: $content}) { blog { id title } }
}
"""

UPDATE_BLOG = """
mutation UpdateBlog($id: ID!, $title: String!) { updateBlog(input: {id: $id, title: $title}) { blog { id title } } }
"""
DELETE_BLOG = """
mutation DeleteBlog($id: ID!) { deleteBlog(input: {id: $id}) { deletedId } }
"""

# Used only when createAuthor fails over HTTP (the results carry a note saying so): the same
# rows, made with the ORM, so that the phases still measure delivery.
_ORM_SIGN_UP = """
import secrets
from api.models import ApiToken, Author
from api.selectors import token_digest
author, _ = Author.objects.get_or_create(username={username!r}, defaults={{"bio": "benchmark author"}})
raw = "blog_" + secrets.token_urlsafe(32)
ApiToken.objects.create(author=author, digest=token_digest(raw), prefix=raw[:8])
print(raw)
"""


@dataclass
class Published:
    # What the clients key the event by (bench/clients.py event_key): the blog's id for a creation.
    blog_id: str
    sent: float  # time.time() just before the request was written
    answered: float  # time.time() right after the response was read
    kind: str = "CREATED"

    @property
    def round_trip(self) -> float:
        return self.answered - self.sent


class Publisher:
    def __init__(self, base_url: str) -> None:
        # No proxy from the environment: loopback traffic only.
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=120, trust_env=False)
        self.token: str | None = None
        self.notes: list[str] = []
        self.count = 0

    def post(self, query: str, variables: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.client.post("/graphql/", json={"query": query, "variables": variables}, headers=headers)
        return response.json()

    def sign_up(self, username: str, env: Mapping[str, str]) -> str:
        result = self.post(SIGN_UP, {"username": username, "password": "benchmark password", "bio": "benchmark author"})
        if not result.get("errors") and result.get("data"):
            self.token = result["data"]["createAuthor"]["token"]
            return self.token
        self.notes.append(
            f"createAuthor failed over HTTP ({result.get('errors')}); the author's token was made with the ORM instead"
        )
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", _ORM_SIGN_UP.format(username=username)],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.token = done.stdout.strip().splitlines()[-1]
        return self.token

    def publish(self, title: str, content: str = "Benchmark content.") -> Published:
        self.count += 1
        sent, response, answered = self._send(CREATE_BLOG, {"title": title, "content": content})
        result = response.json()
        if result.get("errors") or not result.get("data"):
            raise RuntimeError(f"createBlog failed: {result}")
        return Published(result["data"]["createBlog"]["blog"]["id"], sent, answered)

    def update(self, blog_id: str, title: str) -> Published:
        """An edit of the blog's title; its event is keyed `<id>~<title>`."""
        return self._timed(UPDATE_BLOG, {"id": blog_id, "title": title}, f"{blog_id}~{title}", "UPDATED")

    def delete(self, blog_id: str) -> Published:
        """The blog's deletion; its event is keyed `<id>~deleted`."""
        return self._timed(DELETE_BLOG, {"id": blog_id}, f"{blog_id}~deleted", "DELETED")

    def _timed(self, query: str, variables: dict[str, Any], key: str, kind: str) -> Published:
        self.count += 1
        sent, response, answered = self._send(query, variables)
        result = response.json()
        if result.get("errors") or not result.get("data"):
            raise RuntimeError(f"{kind.lower()} failed: {result}")
        return Published(key, sent, answered, kind)

    def _send(self, query: str, variables: dict[str, Any]) -> tuple[float, httpx.Response, float]:
        """The signed-in request, timed from the moment it is complete and about to be written to
        the moment its response is read: encoding it is the client's work, not the server's."""
        request = self.client.build_request(
            "POST",
            "/graphql/",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        sent = time.time()
        response = self.client.send(request)
        return sent, response, time.time()

    def reconnect(self) -> None:
        """A fresh HTTP client, after the server behind the old one's keep-alive was restarted."""
        base_url = self.client.base_url
        self.client.close()
        self.client = httpx.Client(base_url=base_url, timeout=120, trust_env=False)

    def close(self) -> None:
        self.client.close()
