"""`python -m project.server`: Daphne's command line, with sweeps sized for many idle websockets.

Daphne walks every connection each second (reaping finished applications) and every two seconds
(timeouts and keep-alive pings). With 10,000 idle subscribers those walks were most of an
instance's idle CPU. Here they run every 5 and 6 seconds: a websocket ping goes out 20 to 26 s
apart instead of 20 to 22, and a closed connection's leftovers are freed up to 5 s later.
Everything else, options included, is Daphne's own.
"""

from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server


def _reactor() -> Any:
    from twisted.internet import reactor  # the asyncio reactor daphne.server installed

    return reactor


class SweepingServer(Server):
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


class ServerCommand(CommandLineInterface):
    server_class = SweepingServer


if __name__ == "__main__":
    ServerCommand.entrypoint()
