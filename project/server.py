"""`python -m project.server`: Daphne's command line, sized for many idle websockets and reconnect storms.

Daphne walks every connection each second (reaping finished applications) and every two seconds
(timeouts and keep-alive pings). With 10,000 idle subscribers those walks were most of an
instance's idle CPU. Here they run every 5 and 6 seconds: a websocket ping goes out 20 to 26 s
apart instead of 20 to 22, and a closed connection's leftovers are freed up to 5 s later.
Everything else, options included, is Daphne's own, except `--proxy-headers` (and its -host and
-port variants), which this command refuses: Daphne would take the client address from the
left-most X-Forwarded-For entry, the one the client itself wrote, and every per-address limit
would be forgeable. The client address comes from TRUSTED_PROXIES instead (core/client_ip.py),
walked from the right, for HTTP and websockets alike.

Each listening socket also gets a backlog of LISTEN_BACKLOG instead of Twisted's 50. The kernel
completes a TCP handshake on its own while the socket's queue has room, so a busy instance still
answers a connect at once; with 50, a reconnect storm overflows the queue, the kernel drops SYNs,
the client (the balancer) retries a second later, and its 500 ms `timeout connect` takes a live
instance for a dead one. Linux caps the figure at net.core.somaxconn.

The process's delivery hub starts as soon as the server runs, not when the first subscriber
arrives: after a deploy the first subscribers come as a storm, and they then find it delivering.
Broadcasts after a commit are sent from the server's event loop, bound at the same moment.
"""

import gc
from typing import Any

# Until the application is built (project/asgi.py, or SweepingServer for any other): importing
# Daphne, Twisted and the application leaves next to no garbage to find.
gc.disable()

from daphne.cli import CommandLineInterface  # noqa: E402
from daphne.server import Server  # noqa: E402


def _reactor() -> Any:
    from twisted.internet import reactor  # the asyncio reactor daphne.server installed

    return reactor


LISTEN_BACKLOG = 4096
_BACKLOG_KINDS = ("tcp:", "tcp6:", "unix:")


def with_backlog(endpoint: str, backlog: int = LISTEN_BACKLOG) -> str:
    """A Twisted server endpoint string with `backlog` set, unless it names one already."""
    if not endpoint.startswith(_BACKLOG_KINDS) or ":backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


def _on_loop_start() -> None:
    # Imported here: this module is loaded before Django is set up (Daphne's CLI imports the app later).
    import asyncio

    from notifications.hub.hub import start_hub
    from notifications.publishing.broadcast import send_from

    send_from(asyncio.get_running_loop())
    start_hub()


class SweepingServer(Server):
    def __init__(self, application: Any, endpoints: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(application, endpoints=[with_backlog(endpoint) for endpoint in endpoints or []], **kwargs)
        gc.enable()
        # callLater, not callWhenRunning: startup triggers fire before the asyncio loop runs.
        _reactor().callLater(0, _on_loop_start)

    def application_checker(self) -> None:
        self._sweep_every("application_checker", daphne_interval=1, calls=5)

    def timeout_checker(self) -> None:
        self._sweep_every("timeout_checker", daphne_interval=2, calls=3)

    def _sweep_every(self, name: str, *, daphne_interval: float, calls: int) -> None:
        """Daphne's own `name` reschedules itself `daphne_interval` later: only every `calls`-th call walks."""
        ticks: dict[str, int] = self.__dict__.setdefault("_sweep_ticks", {})
        ticks[name] = ticks.get(name, 0) + 1
        if ticks[name] % calls == 0:
            getattr(super(), name)()
        else:
            _reactor().callLater(daphne_interval, getattr(self, name))


FORGEABLE_OPTIONS = ("--proxy-headers", "--proxy-headers-host", "--proxy-headers-port")


class ServerCommand(CommandLineInterface):
    server_class = SweepingServer

    def run(self, args: list[str]) -> None:
        for arg in args:
            if arg.split("=", 1)[0] in FORGEABLE_OPTIONS:
                self.parser.error(
                    f"{arg.split('=', 1)[0]} is refused: Daphne would believe the X-Forwarded-For entry a "
                    "client wrote. Set TRUSTED_PROXIES to the proxy in front instead (the app walks the header "
                    "from the right)."
                )
        super().run(args)


if __name__ == "__main__":
    ServerCommand.entrypoint()
