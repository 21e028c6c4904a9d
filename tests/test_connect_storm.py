"""A live instance that is busy is not taken for a dead one during a reconnect storm.

The balancer gives an instance 500 ms to accept a connection before failing over (deploy/
haproxy.cfg: timeout connect), which is only right if a live instance always accepts at once. The kernel
accepts on the server's behalf while the listen queue has room, so the queue must hold a storm:
here the instance is frozen (SIGSTOP, as busy as it can be) while hundreds of clients connect
through the real HAProxy, and every one of them must be served once it wakes, none answered 502.
"""

import http.client
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from stack.deployment import Stack

STORM = 400  # far more than Twisted's default listen backlog of 50
FROZEN_SECONDS = 2.0  # longer than the balancer's timeout connect and a SYN retransmit


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(instances=1, postgres=False) as running:
        yield running


def test_a_frozen_instance_still_accepts_a_storm_of_connections_through_the_balancer(stack: Stack):
    lb_port = urlsplit(stack.url).port
    instance = stack.instances[0]
    statuses: list[int | str] = []
    lock = threading.Lock()

    def request() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", lb_port, timeout=30)
        try:
            connection.request("GET", "/healthz")
            status: int | str = connection.getresponse().status
        except OSError as error:
            status = repr(error)
        finally:
            connection.close()
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=request) for _ in range(STORM)]
    instance.freeze()
    try:
        for thread in threads:
            thread.start()
        time.sleep(FROZEN_SECONDS)
    finally:
        instance.thaw()
    for thread in threads:
        thread.join(timeout=60)

    failed = [status for status in statuses if status != 200]
    assert len(statuses) == STORM
    assert not failed, f"{len(failed)} of {STORM} not served: {sorted(set(map(str, failed)))}"
