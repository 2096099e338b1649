"""Listening: the services that bind the server's ports, and what a failure says.

L{StartsEarly} is the one place that decides when a service binds: in
C{privilegedStartService} (so a port below 1024 is bound before twistd
drops privileges), or in C{startService} when that was not called (a
worker, a test).  L{cannotListen} is the one way a port that cannot be
bound ends the program: one line on standard error, exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from echotwist.endpoints import formatAddress, formatListening
from echotwist.logging import logObserver
from echotwist.server.udp import READ_SIZE, DatagramEcho, UDPListen

_log = Logger(observer=logObserver)


def startupErrors() -> TextIO | None:
    """Where a start-up error is written: the terminal's standard error.

    twistd redirects C{sys.stderr} into its log before services start; the
    one-line error belongs on the standard error the user sees.
    """
    return sys.__stderr__


def cannotListen(
    description: str, message: str, errorStream: TextIO | None
) -> NoReturn:
    """Log and print C{cannot listen on DESCRIPTION: MESSAGE}, then exit 1."""
    _log.critical(
        "Cannot listen on {description}: {message}",
        description=description,
        message=message,
    )
    if errorStream is not None:
        errorStream.write(f"twistd echo: cannot listen on {description}: {message}\n")
        errorStream.flush()
    raise SystemExit(1)


class StartsEarly(Service):
    """A service that does its start-up work once, as early as it can.

    L{startEarly} runs in C{privilegedStartService} (before twistd drops
    privileges) or, if that was not called, in C{startService}; never twice.
    """

    startedEarly = False

    def privilegedStartService(self) -> None:
        """Do the start-up work now."""
        Service.privilegedStartService(self)
        self._startEarlyOnce()

    def startService(self) -> None:
        """Start; do the start-up work if L{privilegedStartService} did not."""
        Service.startService(self)
        self._startEarlyOnce()

    def _startEarlyOnce(self) -> None:
        if not self.startedEarly:
            self.startedEarly = True
            self.startEarly()

    def startEarly(self) -> None:
        """The start-up work: bind, raise a limit."""
        raise NotImplementedError


class ListeningService(StartsEarly):
    """Listen with one factory on several endpoints, all or nothing.

    Listening happens early (L{StartsEarly}) and synchronously, so that a
    port in use ends the program at start-up with one line on standard
    error and exit status 1 (L{cannotListen}), instead of a traceback in
    the log.  (Twisted's C{StreamServerEndpointService} logs a failed
    listen and carries on, so a taken port would leave a server listening
    nowhere; and it serves one endpoint, where this stops the ports that
    did open when a later one fails.)

    Each bound port is logged with C{logFormat} (C{Listening on ADDRESS}
    for the echo, C{Metrics on ADDRESS} for the metrics endpoint) and
    passed to C{onPort}, if given, before any client is accepted.
    """

    log = Logger(observer=logObserver)

    def __init__(
        self,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        factory: Factory[Any],
        errorStream: TextIO | None = None,
        logFormat: str = "Listening on {address}",
        onPort: Callable[[IListeningPort], object] | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.factory = factory
        self.logFormat = logFormat
        self.onPort = onPort
        self.errorStream = errorStream if errorStream is not None else startupErrors()
        self.ports: list[IListeningPort] = []
        # How each of the ports is named in the log (haproxy:tcp:... for
        # a PROXY protocol listener), in the same order.
        self.names: list[str] = []

    def startEarly(self) -> None:
        """Bind every endpoint now, or report the first failure and exit 1."""
        for description, endpoint in self.endpoints:
            results: list[IListeningPort | Failure] = []
            endpoint.listen(self.factory).addBoth(results.append)
            if not results:
                # Every endpoint Twisted ships listens synchronously; one
                # that does not gets its error logged when it arrives.
                continue
            result = results[0]
            if isinstance(result, Failure):
                self._fail(description, result)
            assert not isinstance(result, Failure)
            self.ports.append(result)
            if self.onPort is not None:
                self.onPort(result)
            self.names.append(formatListening(description, result.getHost()))
            self.log.info(self.logFormat, address=self.names[-1])

    def _fail(self, description: str, reason: Failure) -> NoReturn:
        for port in self.ports:
            port.stopListening()
        self.ports, self.names = [], []
        cannotListen(description, reason.getErrorMessage(), self.errorStream)

    def stopService(self) -> Deferred[object]:
        """Stop listening on every port; log each once its socket is closed."""
        Service.stopService(self)
        ports, names = self.ports, self.names
        self.ports, self.names = [], []
        stopping = [
            self._stop(port, name) for port, name in zip(ports, names, strict=True)
        ]
        return DeferredList(stopping, consumeErrors=True).addCallback(lambda _: None)

    def _stop(self, port: IListeningPort, address: str) -> Deferred[object]:
        def stopped(result: object) -> object:
            self.log.info("Stopped listening on {address}", address=address)
            return result

        return maybeDeferred(port.stopListening).addCallback(stopped)


class DatagramListeningService(StartsEarly):
    """Listen for datagrams at one L{UDPListen} address with L{DatagramEcho}.

    As with L{ListeningService}, the port is bound early (L{StartsEarly})
    and a port that cannot be bound ends the program at start-up with one
    line on standard error and exit status 1 (L{cannotListen}).
    """

    log = Logger(observer=logObserver)

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
        self.errorStream = errorStream if errorStream is not None else startupErrors()
        self.port: IListeningPort | None = None

    def startEarly(self) -> None:
        """Bind the UDP port now, or report why not and exit 1."""
        try:
            self.port = self.reactor.listenUDP(
                self.listen.port,
                self.protocol,
                interface=self.listen.interface,
                maxPacketSize=READ_SIZE,
            )
        except CannotListenError as e:
            cannotListen(
                f"UDP {self.listen.description}", str(e.socketError), self.errorStream
            )
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
