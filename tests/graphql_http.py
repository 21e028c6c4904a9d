"""GraphQL over HTTP through Django's test client (in-process, real view and middleware)."""

import json
from typing import Any

from django.test import Client


def post_graphql(
    client: Client, query: str, variables: dict[str, Any] | None = None, token: str | None = None, **extra: Any
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql/",
        data=json.dumps({"query": query, "variables": variables or {}}),
        content_type="application/json",
        headers=headers,
        **extra,
    )
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    return response.json()
