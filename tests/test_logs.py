"""Structured logs: a live DEBUG-off instance writes one JSON object per line, with ids."""

import asyncio
import json
import logging
import secrets
import time

import httpx

from core.logs import ContextFilter, JsonFormatter, PlainFormatter, request_id_var
from tests.live import BLOG_PUBLISHED
from tests.wsclient import GraphQLWSClient


def json_lines(server) -> list[dict]:
    """Every line the instance logged (its own start banner aside), each parsed as JSON."""
    lines = [line for line in server.log_path.read_text().splitlines() if line and not line.startswith("--- ")]
    return [json.loads(line) for line in lines]


async def lines_where(server, timeout: float = 10, **fields) -> list[dict]:
    """Wait for log lines with these fields; the server writes them a moment after answering."""
    deadline = time.monotonic() + timeout
    while True:
        found = [entry for entry in json_lines(server) if all(entry.get(k) == v for k, v in fields.items())]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_each_request_logs_one_json_line_with_the_callers_request_id(web_server):
    request_id = f"trace-{secrets.token_hex(6)}"
    response = httpx.get(f"{web_server.url}/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id
    [entry] = await lines_where(web_server, request_id=request_id)
    assert entry["event"] == "http_request"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/healthz", 200)
    assert entry["level"] == "INFO"
    assert entry["instance"] == "web-1"
    assert entry["duration_ms"] >= 0


async def test_a_request_without_an_id_gets_one(web_server):
    response = httpx.post(f"{web_server.url}/graphql/", json={"query": "{ viewer { username } }"})
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    [entry] = await lines_where(web_server, request_id=request_id)
    assert (entry["path"], entry["status"]) == ("/graphql/", 200)


async def test_an_unusable_request_id_is_replaced(web_server):
    response = httpx.get(f"{web_server.url}/healthz", headers={"X-Request-ID": "two words\tand a tab"})
    assert response.headers["X-Request-ID"] != "two words\tand a tab"
    assert await lines_where(web_server, request_id=response.headers["X-Request-ID"])


async def test_websocket_connect_subscribe_and_disconnect_share_a_connection_id(web_server):
    op_id = f"probe-{secrets.token_hex(6)}"
    client = await GraphQLWSClient(web_server.ws_url).connect()
    try:
        await client.start(BLOG_PUBLISHED, {"author": "nobody-in-particular"}, op_id=op_id)
        [subscribed] = await lines_where(web_server, event="ws_subscribe", operation_id=op_id)
    finally:
        await client.close()
    connection_id = subscribed["connection_id"]
    assert subscribed["operation_type"] == "subscription"
    [connected] = await lines_where(web_server, event="ws_connect", connection_id=connection_id)
    [disconnected] = await lines_where(web_server, event="ws_disconnect", connection_id=connection_id)
    assert connected["protocol"] == disconnected["protocol"] == "graphql-transport-ws"
    assert connected["path"] == "/graphql/"
    assert disconnected["code"] == 1000
    assert disconnected["duration_s"] >= 0


async def test_every_line_of_a_production_log_is_json(web_server):
    httpx.get(f"{web_server.url}/", timeout=10)
    await lines_where(web_server, path="/")
    assert json_lines(web_server)  # json.loads raised on any line that is not JSON


def test_development_logs_are_readable_text_with_the_request_id():
    token = request_id_var.set("abc123")
    try:
        record = logging.LogRecord("project.requests", logging.INFO, __file__, 1, "GET / 200", (), None)
        ContextFilter().filter(record)
        text = PlainFormatter().format(record)
        structured = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert text.endswith("INFO project.requests: GET / 200 [request_id=abc123]")
    assert structured["request_id"] == "abc123"
    assert structured["message"] == "GET / 200"
