"""/metrics: scraped from a live Daphne after real traffic, and closed to strangers."""

import asyncio

import httpx
import pytest
from django.test import RequestFactory

from project.views import scrape_allowed
from tests.live import BLOG_PUBLISHED, LiveApi, scrape, value
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, GraphQLWSClient


async def test_counters_and_gauges_follow_real_traffic(web_server):
    api = LiveApi(web_server.url)
    username, token = api.sign_up()
    before = scrape(web_server)
    clients = [await GraphQLWSClient(web_server.ws_url, protocol).connect() for protocol in (TRANSPORT_WS, LEGACY_WS)]
    try:
        for client in clients:
            await client.subscribe(BLOG_PUBLISHED, {"author": username})
        during = scrape(web_server)
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            labels = {"instance_name": "web-1", "protocol": protocol}
            assert value(during, "blogpush_websocket_connections", **labels) >= 1
            assert value(during, "blogpush_subscriptions_active", **labels) >= 1

        await asyncio.to_thread(api.create_blog, token, "Counted")
        for client in clients:
            assert (await client.next_data())["payload"]["data"]["blogPublished"]["blog"]["title"] == "Counted"
    finally:
        for client in clients:
            await client.close()

    after = scrape(web_server)
    moved = {
        name: value(after, name) - value(before, name)
        for name in (
            "blogpush_broadcasts_sent_total",
            "blogpush_broadcast_failures_total",
            "blogpush_events_delivered_total",
            "blogpush_delivery_latency_seconds_count",
        )
    }
    assert moved == {
        "blogpush_broadcasts_sent_total": 1,  # the mutation was served, and broadcast, by this instance
        "blogpush_broadcast_failures_total": 0,
        "blogpush_events_delivered_total": 2,
        "blogpush_delivery_latency_seconds_count": 1,  # one per cohort: both sent the same document
    }
    latency = value(after, "blogpush_delivery_latency_seconds_sum") - value(
        before, "blogpush_delivery_latency_seconds_sum"
    )
    assert 0 <= latency < 10
    graphql_posts = {"instance_name": "web-1", "method": "POST", "route": "/graphql/", "status": "200"}
    requests_timed = value(after, "blogpush_http_request_duration_seconds_count", **graphql_posts) - value(
        before, "blogpush_http_request_duration_seconds_count", **graphql_posts
    )
    assert requests_timed == 1  # createBlog


def test_the_cyclic_collector_runs_once_the_instance_serves(web_server):
    """Start-up runs with the collector off (project/server.py, project/asgi.py); serving runs with it on."""
    api = LiveApi(web_server.url)
    collections = [value(scrape(web_server), "python_gc_collections_total", generation="0")]
    for _ in range(30):
        assert "errors" not in api.post("query { __typename }")
    collections.append(value(scrape(web_server), "python_gc_collections_total", generation="0"))
    assert collections[1] > collections[0], collections


async def test_gauges_fall_back_when_sockets_close(web_server):
    api = LiveApi(web_server.url)
    username, _ = api.sign_up()
    client = await GraphQLWSClient(web_server.ws_url, LEGACY_WS).connect()
    await client.subscribe(BLOG_PUBLISHED, {"author": username})
    open_now = value(scrape(web_server), "blogpush_subscriptions_active", protocol=LEGACY_WS)
    await client.close()
    for _ in range(100):
        if value(scrape(web_server), "blogpush_subscriptions_active", protocol=LEGACY_WS) == open_now - 1:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the closed subscription is still counted")


def test_proxied_strangers_are_refused_and_the_token_lets_them_in(web_server, web_env):
    spoofed = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}  # the balancer appends the address it saw last
    assert httpx.get(f"{web_server.url}/metrics", headers=spoofed).status_code == 403
    assert scrape(web_server, Authorization=f"Bearer {web_env['METRICS_TOKEN']}", **spoofed)
    wrong = httpx.get(f"{web_server.url}/metrics", headers={**spoofed, "Authorization": "Bearer nope"})
    assert wrong.status_code == 403


@pytest.mark.parametrize(
    ("remote", "forwarded", "authorization", "allowed"),
    [
        ("127.0.0.1", None, None, True),
        ("10.1.2.3", None, None, True),  # inside the allowed network
        ("192.0.2.7", None, None, False),
        ("192.0.2.7", "10.1.2.3", None, False),  # a direct client cannot vouch for itself
        ("127.0.0.1", "198.51.100.4", None, False),  # through the proxy, the client counts
        ("192.0.2.7", None, "Bearer s3cret-token", True),
        ("192.0.2.7", None, "Bearer wrong", False),
    ],
)
def test_scrape_allow_list_and_token(settings, remote, forwarded, authorization, allowed):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1", "::1", "10.0.0.0/8"]
    settings.METRICS_TOKEN = "s3cret-token"
    headers = {}
    if forwarded:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    if authorization:
        headers["HTTP_AUTHORIZATION"] = authorization
    assert scrape_allowed(RequestFactory().get("/metrics", REMOTE_ADDR=remote, **headers)) is allowed


def test_no_token_configured_means_no_token_accepted(settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    settings.METRICS_TOKEN = ""
    request = RequestFactory().get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer ")
    assert scrape_allowed(request) is False
