"""The client address behind the balancer cannot be forged, through the shipped server command.

The stack runs `python -m project.server` behind the real HAProxy and its config. The test talks
to HAProxy from other loopback addresses (127.0.0.2, ...) so that it is a client like any other,
not the trusted proxy itself (HAProxy is 127.0.0.1).
"""

import subprocess
import sys
from collections.abc import Iterator

import pytest
import websockets

from stack.deployment import Stack
from stack.services import REPO_ROOT
from tests.live import SIGN_UP, LiveApi, error_codes, unique_name
from tests.wsclient import GraphQLWSClient

CLIENT = "127.0.0.2"  # an ordinary client
CDN = "127.0.0.4"  # a proxy in front of HAProxy that the deployment trusts
SIGN_UPS = 3
WS_PER_ADDRESS = 3


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = {
        "TRUSTED_PROXIES": f"127.0.0.1,{CDN}",
        "RATE_LIMIT_SIGN_UPS": f"{SIGN_UPS}/1000000000",
        "GRAPHQL_WS_MAX_CONNECTIONS_PER_IP": str(WS_PER_ADDRESS),
    }
    # One instance: the websocket limit counts per instance.
    with Stack(instances=1, postgres=False, env=env) as running:
        yield running


def sign_up(api: LiveApi) -> dict:
    return api.post(SIGN_UP, {"username": unique_name(), "password": "correct horse"})


def test_a_forged_x_forwarded_for_does_not_escape_the_per_address_sign_up_limit(stack: Stack):
    results = [
        sign_up(LiveApi(stack.url, headers={"X-Forwarded-For": f"203.0.113.{i}"}, local_address=CLIENT))
        for i in range(SIGN_UPS + 2)
    ]
    assert [error_codes(result) for result in results] == [[]] * SIGN_UPS + [["RATE_LIMITED"]] * 2


def test_a_trusted_proxy_chain_yields_the_real_client(stack: Stack):
    """What the trusted CDN says about its client is believed: each real client has its own budget."""

    def via_cdn(client: str) -> LiveApi:
        return LiveApi(stack.url, headers={"X-Forwarded-For": client}, local_address=CDN)

    first = [sign_up(via_cdn("198.51.100.1")) for _ in range(SIGN_UPS + 1)]
    assert [error_codes(result) for result in first] == [[]] * SIGN_UPS + [["RATE_LIMITED"]]
    # A client further left than the CDN's entry is still the client's own claim.
    forged = sign_up(via_cdn("192.0.2.50, 198.51.100.1"))
    assert error_codes(forged) == ["RATE_LIMITED"]
    assert error_codes(sign_up(via_cdn("198.51.100.2"))) == []


async def test_a_forged_x_forwarded_for_does_not_escape_the_websocket_limit_per_address(stack: Stack):
    clients = []
    try:
        for i in range(WS_PER_ADDRESS):
            headers = {"X-Forwarded-For": f"203.0.113.{100 + i}"}
            clients.append(
                await GraphQLWSClient(stack.ws_url).connect(additional_headers=headers, local_addr=(CLIENT, 0))
            )
        with pytest.raises(websockets.InvalidStatus) as refused:
            await GraphQLWSClient(stack.ws_url).connect(
                additional_headers={"X-Forwarded-For": "203.0.113.200"}, local_addr=(CLIENT, 0)
            )
        assert refused.value.response.status_code == 403
        # Another address is not affected.
        clients.append(await GraphQLWSClient(stack.ws_url).connect(local_addr=("127.0.0.3", 0)))
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize("option", ["--proxy-headers", "--proxy-headers-host=X-Real-Host", "--proxy-headers-port"])
def test_the_server_command_refuses_daphnes_proxy_headers(option: str):
    run = subprocess.run(
        [sys.executable, "-m", "project.server", option, "-p", "0", "project.asgi:application"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "TRUSTED_PROXIES" in run.stderr
