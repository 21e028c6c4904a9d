"""Rate limits, connection limits and timeouts, against two instances with small limits (conftest
STRICT_LIMITS) that share one Redis, so a limit proven here is proven across instances."""

import asyncio
import secrets
from collections.abc import Iterator

import pytest
import websockets

from stack.services import DaphneInstance, RedisServer, redis_client, running
from tests.live import CREATE_TOKEN, LiveApi, assert_no_errors, error_codes, unique_name
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, GraphQLWSClient

PASSWORD = "correct horse"
CREATE_BLOG = 'mutation { createBlog(input: {title: "Limited", content: "c"}) { blog { title } } }'


def fake_ip() -> str:
    """A client address of its own for each test (IPv6 documentation range), told to the server
    through X-Forwarded-For, which the strict instances believe from 127.0.0.1."""
    return f"2001:db8::{secrets.randbits(16):x}:{secrets.randbits(16):x}"


def client_from(server, ip: str) -> LiveApi:
    return LiveApi(server.url, headers={"X-Forwarded-For": ip})


def assert_rate_limited(result: dict, limit: str) -> None:
    assert error_codes(result) == ["RATE_LIMITED"], result
    extensions = result["errors"][0]["extensions"]
    assert extensions["limit"] == limit
    assert isinstance(extensions["retryAfter"], int) and extensions["retryAfter"] > 0


def test_sign_ups_are_limited_per_client_ip(strict_servers):
    first, second = strict_servers
    ip = fake_ip()
    client_from(first, ip).sign_up()
    client_from(second, ip).sign_up()
    refused = client_from(first, ip).post(
        'mutation($u: String!) { createAuthor(input: {username: $u, password: "correct horse"}) { token } }',
        {"u": unique_name()},
    )
    assert_rate_limited(refused, "createAuthor")
    client_from(second, fake_ip()).sign_up()  # another address is not affected


def test_log_ins_per_client_ip_are_counted_across_instances(strict_servers):
    """4 per address in total, not 4 per instance: the counter lives in the shared Redis."""
    first, second = strict_servers
    username, _ = client_from(first, fake_ip()).sign_up(password=PASSWORD)
    ip = fake_ip()
    answers = [
        client_from(server, ip).post(CREATE_TOKEN, {"username": username, "password": PASSWORD})
        for server in (first, second) * 3
    ]
    for answer in answers[:4]:
        assert assert_no_errors(answer)["createToken"]["token"]
    assert_rate_limited(answers[4], "createToken")
    assert_rate_limited(answers[5], "createToken")


def test_failed_log_ins_for_a_username_are_refused_from_any_address(strict_servers):
    first, second = strict_servers
    username, _ = client_from(first, fake_ip()).sign_up(password=PASSWORD)
    for server in (first, second, first):
        wrong = client_from(server, fake_ip()).post(CREATE_TOKEN, {"username": username, "password": "wrong password"})
        assert error_codes(wrong) == ["UNAUTHENTICATED"]
    # Even the right password, from a fresh address: brute force gains nothing more for a while.
    assert_rate_limited(
        client_from(second, fake_ip()).post(CREATE_TOKEN, {"username": username, "password": PASSWORD}), "loginFailure"
    )
    other, _ = client_from(first, fake_ip()).sign_up(password=PASSWORD)
    assert assert_no_errors(client_from(first, fake_ip()).post(CREATE_TOKEN, {"username": other, "password": PASSWORD}))


async def test_mutations_per_author_count_http_and_websockets_on_every_instance(strict_servers):
    first, second = strict_servers
    _, token = client_from(first, fake_ip()).sign_up()
    other_token = client_from(first, fake_ip()).sign_up()[1]
    socket = await GraphQLWSClient(second.ws_url, TRANSPORT_WS).connect({"authorization": f"Bearer {token}"})
    try:
        assert_no_errors(LiveApi(first.url).post(CREATE_BLOG, token=token))
        assert (await socket.execute(CREATE_BLOG))["payload"]["data"]["createBlog"]["blog"]["title"] == "Limited"
        assert_no_errors(LiveApi(second.url).post(CREATE_BLOG, token=token))

        assert_rate_limited(LiveApi(first.url).post(CREATE_BLOG, token=token), "mutation")
        assert_rate_limited((await socket.execute(CREATE_BLOG))["payload"], "mutation")
        assert_no_errors(LiveApi(second.url).post(CREATE_BLOG, token=other_token))  # per author
    finally:
        await socket.close()


# Large enough that instances take attempts from the shared count several at a time, and not a
# multiple of what a reserve holds, so that a reserve overshooting the limit would show.
RESERVED_LIMIT = 61
RESERVED_DB = 6


@pytest.fixture(scope="module")
def reserving_servers(live_env: dict[str, str], redis_server: RedisServer) -> Iterator[list[DaphneInstance]]:
    """Two instances sharing a Redis database of their own, with a per-author limit of RESERVED_LIMIT."""
    env = {
        **live_env,
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{RESERVED_DB}",
        "RATE_LIMIT_MUTATIONS": f"{RESERVED_LIMIT}/1000000000",
    }
    with running([DaphneInstance(f"reserving-{i}", env) for i in (1, 2)]) as servers:
        yield servers


def evalsha_calls(redis_server: RedisServer) -> int:
    client = redis_server.client()
    try:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        client.close()


def mutation_counts(redis_server: RedisServer) -> list[int]:
    """The per-author mutation counters in the shared count, as Redis holds them."""
    client = redis_client(redis_server.port, db=RESERVED_DB)
    try:
        keys = list(client.scan_iter(match="*ratelimit:mutation:*"))
        return sorted(int(value) for value in client.mget(keys) if value is not None) if keys else []
    finally:
        client.close()


def test_an_author_s_mutations_on_one_instance_stop_exactly_at_the_limit_with_fewer_round_trips(
    reserving_servers, redis_server
):
    """The instance takes attempts from the shared count a few at a time: all RESERVED_LIMIT are
    allowed, the next is refused on every instance, and Redis was asked fewer than half as often."""
    first, second = (LiveApi(server.url) for server in reserving_servers)
    _, token = first.sign_up()
    before = evalsha_calls(redis_server)
    answers = [first.post(CREATE_BLOG, token=token) for _ in range(RESERVED_LIMIT)]
    asked = evalsha_calls(redis_server) - before
    assert [error_codes(answer) for answer in answers] == [[]] * RESERVED_LIMIT
    assert 0 < asked < RESERVED_LIMIT / 2, asked
    assert_rate_limited(first.post(CREATE_BLOG, token=token), "mutation")
    assert_rate_limited(second.post(CREATE_BLOG, token=token), "mutation")
    assert RESERVED_LIMIT in mutation_counts(redis_server)  # every allowed attempt came out of the shared count


def test_an_author_s_mutations_spread_over_instances_never_exceed_the_limit_in_total(reserving_servers):
    """Alternating between two instances that each hold a reserve: exactly RESERVED_LIMIT are
    allowed in all, every other attempt is refused with RATE_LIMITED, and afterwards neither allows one."""
    first, second = (LiveApi(server.url) for server in reserving_servers)
    _, token = first.sign_up()
    answers = [api.post(CREATE_BLOG, token=token) for api in (first, second) * RESERVED_LIMIT]
    codes = [error_codes(answer) for answer in answers]
    assert codes.count([]) == RESERVED_LIMIT, codes
    assert codes.count(["RATE_LIMITED"]) == RESERVED_LIMIT, codes
    for api in (first, second):
        assert_rate_limited(api.post(CREATE_BLOG, token=token), "mutation")


async def test_websocket_connections_are_limited_per_client_ip_and_instance(strict_servers):
    first, second = strict_servers
    ip = fake_ip()
    headers = {"X-Forwarded-For": ip}
    held = [await GraphQLWSClient(first.ws_url).connect(additional_headers=headers) for _ in range(3)]
    others = []
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(first.ws_url, subprotocols=[TRANSPORT_WS], additional_headers=headers)
        assert refused.value.response.status_code == 403
        # Another address, and the same address on another instance, still connect.
        others.append(await GraphQLWSClient(first.ws_url).connect(additional_headers={"X-Forwarded-For": fake_ip()}))
        others.append(await GraphQLWSClient(second.ws_url).connect(additional_headers=headers))

        # A closed connection frees its slot once the server has seen the close.
        await held.pop().close()
        for _ in range(50):
            try:
                held.append(await GraphQLWSClient(first.ws_url).connect(additional_headers=headers))
                break
            except websockets.InvalidStatus:
                await asyncio.sleep(0.1)
        assert len(held) == 3
    finally:
        for client in held + others:
            await client.close()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_no_connection_init_in_time_closes_with_4408(strict_servers, protocol):
    """The strict instances wait 1 s (GRAPHQL_WS_CONNECTION_INIT_TIMEOUT; 10 s by default)."""
    async with websockets.connect(strict_servers[0].ws_url, subprotocols=[protocol]) as socket:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 10)
        assert socket.close_code == 4408


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_introspection_and_suggestions_when_explicitly_enabled(strict_servers, protocol):
    """GRAPHQL_INTROSPECTION=1 turns both on even with DJANGO_DEBUG off, on both paths."""
    server = strict_servers[0]
    http = LiveApi(server.url)
    assert assert_no_errors(http.post("{ __schema { queryType { name } } }")) == {
        "__schema": {"queryType": {"name": "Query"}}
    }
    assert "Did you mean 'blogs'" in http.post("{ blgs { edges { cursor } } }")["errors"][0]["message"]
    client = await GraphQLWSClient(server.ws_url, protocol).connect()
    try:
        result = await client.execute("{ __schema { queryType { name } } }")
        assert result["payload"] == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
    finally:
        await client.close()
