"""The PostgreSQL stack the end-to-end modules share: Redis, PostgreSQL, three Daphne instances, HAProxy.

tests/test_stack.py, tests/test_faults.py and tests/test_http_streams_stack.py each take it through
their own `stack` fixture. It starts once per run (tests/conftest.py keeps its users on one xdist
worker), and after each test whatever the test killed is started again.
"""

from collections.abc import Iterator

import pytest

from stack.deployment import Stack

GROUP_EXPIRY = 3  # seconds: short, so a test sees channels-redis forget members that are not renewed
MAX_BUFFERED = 256 * 1024  # bytes a websocket may have unsent before it counts as a stalled reader

# A front end on another origin, listed: nginx must pass its preflights and CORS headers untouched.
FRONT_END = "https://app.example.com"

# Each setting is one a module tests; none changes what another module checks.
SHARED_STACK_ENV = {
    "CHANNEL_GROUP_EXPIRY": str(GROUP_EXPIRY),
    "WS_MAX_BUFFERED_BYTES": str(MAX_BUFFERED),
    # Tests write many blogs a second as one author; that limit is tested elsewhere.
    "RATE_LIMIT_MUTATIONS": "off",
    # GraphiQL is off in production settings unless enabled, as operators would for a staging stack.
    "GRAPHQL_GRAPHIQL": "1",
    # Short, so a test sees heartbeats pass through the balancer.
    "SSE_HEARTBEAT_SECONDS": "2",
    "MULTIPART_HEARTBEAT_SECONDS": "2",
    "CORS_ALLOWED_ORIGINS": FRONT_END,
}


@pytest.fixture(scope="session")
def shared_stack() -> Iterator[Stack]:
    with Stack(instances=3, postgres=True, env=SHARED_STACK_ENV) as stack:
        yield stack


def heal(stack: Stack) -> None:
    """Start again, in start order, every service a test stopped or killed, and wait until the
    balancer routes to every instance again: the next test may count on each of them."""
    for service in stack.services:
        if not service.running:
            service.start()
    if stack.lb is not None:
        stack.lb.wait_in_rotation()


@pytest.fixture
def pg_stack(shared_stack: Stack) -> Iterator[Stack]:
    """The shared stack, whole again after the test, whatever the test killed."""
    yield shared_stack
    heal(shared_stack)
