"""The service that listens for UDP echo datagrams on one address."""

from __future__ import annotations

import sys
from typing import TextIO

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.logger import Logger

from echotwist.endpoints import formatAddress
from echotwist.server.udp import READ_SIZE, DatagramEcho, UDPListen


class DatagramListeningService(Service):
    """Listen for datagrams at one L{UDPListen} address with L{DatagramEcho}.

    As with the TCP L{echotwist.server.ListeningService}, the port is bound
    in L{privilegedStartService} (before twistd drops privileges) and a
    port that cannot be bound ends the program at start-up with one line
    on standard error and exit status 1.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorUDP,
        listen: UDPListen,
        protocol: DatagramEcho,
        errorStream: TextIO | None = None,
    ) -> None:
        self.reactor = reactor
        self.listen = listen
        self.protocol = protocol
        # twistd redirects sys.stderr into its log before services start;
        # the start-up error belongs on the terminal's standard error.
        self.errorStream = errorStream if errorStream is not None else sys.__stderr__
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        """Bind the UDP port now, or report why not and exit 1."""
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """Start; bind the port if L{privilegedStartService} did not."""
        Service.startService(self)
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        try:
            self.port = self.reactor.listenUDP(
                self.listen.port,
                self.protocol,
                interface=self.listen.interface,
                maxPacketSize=READ_SIZE,
            )
        except CannotListenError as e:
            message = str(e.socketError)
            self.log.critical(
                "Cannot listen on {description}: {message}",
                description=self.listen.description,
                message=message,
            )
            if self.errorStream is not None:
                self.errorStream.write(
                    f"twistd echo: cannot listen on UDP {self.listen.description}:"
                    f" {message}\n"
                )
                self.errorStream.flush()
            raise SystemExit(1) from None
        self.log.info(
            "Listening on {address}", address=formatAddress(self.port.getHost())
        )

    def stopService(self) -> Deferred[None]:
        """Stop listening."""
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)
