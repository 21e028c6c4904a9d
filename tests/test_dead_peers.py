"""A peer that vanished without closing (a laptop lid shut, a NAT that forgot the flow) is found
and freed: Daphne pings every websocket and drops one that does not answer in time.

Here with Daphne's own options set short (--ping-interval 1, --ping-timeout 2); production runs
the defaults (20 s and 30 s), found within one more sweep of project/server.py (6 s).
"""

import asyncio
from collections.abc import Iterator

import pytest

from stack.services import DaphneInstance
from tests.live import BLOG_PUBLISHED, scrape, value
from tests.wsclient import GraphQLWSClient


@pytest.fixture
def pinging(live_env: dict[str, str]) -> Iterator[DaphneInstance]:
    args = ("--ping-interval", "1", "--ping-timeout", "2")
    with DaphneInstance("dead-peers", live_env, server_args=args) as instance:
        yield instance


async def test_a_peer_that_stops_answering_pings_is_dropped_and_its_subscriptions_freed(pinging: DaphneInstance):
    alive = await GraphQLWSClient(pinging.ws_url).connect()
    silent = await GraphQLWSClient(pinging.ws_url).connect()
    try:
        await alive.subscribe(BLOG_PUBLISHED)
        await silent.subscribe(BLOG_PUBLISHED)
        assert value(scrape(pinging), "blogpush_subscriptions_active") == 2
        assert silent.ws is not None
        silent.ws.transport.pause_reading()  # from now on it reads nothing, so it answers no ping
        async with asyncio.timeout(30):
            while value(scrape(pinging), "blogpush_websocket_connections") > 1:
                await asyncio.sleep(0.5)
        assert value(scrape(pinging), "blogpush_subscriptions_active") == 1
        # The one that answers its pings is still served.
        assert (await alive.execute("query { __typename }"))["payload"] == {"data": {"__typename": "Query"}}
    finally:
        await alive.close()
        if silent.ws is not None:
            silent.ws.transport.abort()
