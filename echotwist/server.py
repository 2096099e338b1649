"""The service that listens on every requested endpoint."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from echotwist.endpoints import formatAddress


class ListeningService(Service):
    """Listen with one factory on several endpoints, all or nothing.

    Listening happens in L{privilegedStartService} (so a port below 1024
    is bound before twistd drops privileges) and synchronously, so that a
    port in use ends the program at start-up with one line on standard
    error and exit status 1, instead of a traceback in the log.
    """

    log = Logger()

    def __init__(
        self,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        factory: Factory[Any],
        errorStream: TextIO | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.factory = factory
        # twistd redirects sys.stderr into its log before services start;
        # the start-up error belongs on the terminal's standard error.
        self.errorStream = errorStream if errorStream is not None else sys.__stderr__
        self.ports: list[IListeningPort] = []

    def privilegedStartService(self) -> None:
        """Bind every endpoint now, or report the first failure and exit 1."""
        Service.privilegedStartService(self)
        self._listenAll()

    def startService(self) -> None:
        """Start; bind the endpoints if L{privilegedStartService} did not."""
        Service.startService(self)
        if not self.ports:
            self._listenAll()

    def _listenAll(self) -> None:
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
            self.log.info(
                "Listening on {address}", address=formatAddress(result.getHost())
            )

    def _fail(self, description: str, reason: Failure) -> NoReturn:
        message = reason.getErrorMessage()
        self.log.critical(
            "Cannot listen on {description}: {message}",
            description=description,
            message=message,
        )
        for port in self.ports:
            port.stopListening()
        self.ports = []
        if self.errorStream is not None:
            self.errorStream.write(
                f"twistd echo: cannot listen on {description}: {message}\n"
            )
            self.errorStream.flush()
        raise SystemExit(1)

    def stopService(self) -> Deferred[object]:
        """Stop listening on every port."""
        Service.stopService(self)
        ports, self.ports = self.ports, []
        stopping = [maybeDeferred(port.stopListening) for port in ports]
        return DeferredList(stopping, consumeErrors=True).addCallback(lambda _: None)
