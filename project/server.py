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
    _application_ticks = 0
    _timeout_ticks = 0

    def application_checker(self) -> None:
        # Daphne's own reschedules itself 1 s later: every fifth call walks.
        self._application_ticks += 1
        if self._application_ticks % 5 == 0:
            super().application_checker()
        else:
            _reactor().callLater(1, self.application_checker)

    def timeout_checker(self) -> None:
        # Daphne's own reschedules itself 2 s later: every third call walks.
        self._timeout_ticks += 1
        if self._timeout_ticks % 3 == 0:
            super().timeout_checker()
        else:
            _reactor().callLater(2, self.timeout_checker)


class ServerCommand(CommandLineInterface):
    server_class = SweepingServer


if __name__ == "__main__":
    ServerCommand.entrypoint()
