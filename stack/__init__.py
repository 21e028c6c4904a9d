"""Start the real services of the deployment natively, for tests and `make stack`.

    from stack import Stack
    with Stack(instances=3) as stack:
        ...  # stack.url, stack.ws_url, stack.instances[0].kill(), stack.redis.restart()
    with Stack(sentinel=True) as stack:
        ...  # stack.sentinel.master().kill(), stack.sentinel.wait_for_failover(...)

See stack/services.py for the individual services.
"""

from stack.deployment import Stack
from stack.sentinel import RedisSentinel, SentinelRedis, SentinelTimings
from stack.services import (
    DaphneInstance,
    HAProxy,
    PostgresCluster,
    RedisServer,
    Service,
    StackError,
    collectstatic,
    free_port,
    http_ok,
    log_tail,
    manage,
    migrate,
    wait_for,
)

__all__ = [
    "DaphneInstance",
    "HAProxy",
    "PostgresCluster",
    "RedisSentinel",
    "RedisServer",
    "SentinelRedis",
    "SentinelTimings",
    "Service",
    "Stack",
    "StackError",
    "collectstatic",
    "free_port",
    "http_ok",
    "log_tail",
    "manage",
    "migrate",
    "wait_for",
]
