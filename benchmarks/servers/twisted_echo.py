"""The canonical Twisted echo server, the benchmark's baseline.

C{Protocol.dataReceived} calls C{transport.write} on the default reactor,
as in Twisted's C{docs/core/examples/simpleserv.py}.  Usage:
C{python twisted_echo.py [PORT]}; it prints C{PORT n} once listening on
127.0.0.1.
"""

from __future__ import annotations

import sys

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol, ServerFactory


class Echo(Protocol):
    """As Twisted's example: write back whatever arrives."""

    def dataReceived(self, data: bytes) -> None:
        """Echo C{data}."""
        assert self.transport is not None
        self.transport.write(data)


def main(reactor: IReactorTCP, port: str = "0") -> Deferred[None]:
    """Listen on 127.0.0.1:C{port} until killed."""
    factory = ServerFactory()
    factory.protocol = Echo
    listening = reactor.listenTCP(int(port), factory, interface="127.0.0.1")
    print(f"PORT {listening.getHost().port}", flush=True)  # type: ignore[attr-defined]
    return Deferred()


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
