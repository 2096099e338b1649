"""The service that listens on every requested endpoint."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn, TextIO, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorFromThreads,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from echotwist.endpoints import formatAddress
from echotwist.protocol import EchoFactory
from echotwist.server import limits


class ListeningService(Service):
    """Listen with one factory on several endpoints, all or nothing.

    Listening happens in L{privilegedStartService} (so a port below 1024
    is bound before twistd drops privileges) and synchronously, so that a
    port in use ends the program at start-up with one line on standard
    error and exit status 1, instead of a traceback in the log.

    Each bound port is logged with C{logFormat} (C{Listening on ADDRESS}
    for the echo, C{Metrics on ADDRESS} for the metrics endpoint) and
    passed to C{onPort}, if given, before any client is accepted.
    """

    log = Logger()

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
            if self.onPort is not None:
                self.onPort(result)
            self.log.info(self.logFormat, address=formatAddress(result.getHost()))

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
        """Stop listening on every port; log each once its socket is closed."""
        Service.stopService(self)
        ports, self.ports = self.ports, []
        stopping = [self._stop(port) for port in ports]
        return DeferredList(stopping, consumeErrors=True).addCallback(lambda _: None)

    def _stop(self, port: IListeningPort) -> Deferred[object]:
        address = formatAddress(port.getHost())

        def stopped(result: object) -> object:
            self.log.info("Stopped listening on {address}", address=address)
            return result

        return maybeDeferred(port.stopListening).addCallback(stopped)


class FileLimitService(Service):
    """Raise the soft open-file limit to what C{--max-connections} needs.

    Each connection holds a descriptor, and the soft C{RLIMIT_NOFILE} is
    often 1,024 while the hard limit is far higher: a server told to take
    10,000 connections should not stop at a thousand (and pause accepting,
    L{echotwist.internals.emfile}).  So the soft limit is raised towards the hard
    one, as far as L{limits.fileLimitTarget} says, with one log line; when
    even the hard limit is too low, one warning says so.  It happens in
    L{privilegedStartService}, before anything listens.
    """

    log = Logger()

    def __init__(
        self,
        maxConnections: int,
        getLimit: Callable[[], tuple[int, int]] | None = None,
        setLimit: Callable[[tuple[int, int]], None] | None = None,
    ) -> None:
        self.maxConnections = maxConnections
        self.getLimit = getLimit if getLimit is not None else _fileLimit
        self.setLimit = setLimit if setLimit is not None else _setFileLimit
        self.done = False

    def privilegedStartService(self) -> None:
        """Raise the limit now, before the listeners start."""
        Service.privilegedStartService(self)
        self._raise()

    def startService(self) -> None:
        """Start; raise the limit if L{privilegedStartService} did not."""
        Service.startService(self)
        self._raise()

    def _raise(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            soft, hard = self.getLimit()
        except ImportError:
            # No resource module (Windows): no such limit to raise.
            return
        target = limits.fileLimitTarget(self.maxConnections, soft, hard)
        if target is not None:
            try:
                self.setLimit((target, hard))
            except (OSError, ValueError) as e:
                self.log.warn(
                    "Cannot raise the open-file limit from {soft} to {target}: {why}",
                    soft=soft,
                    target=target,
                    why=e,
                )
                return
            self.log.info(
                "Raised the open-file limit (RLIMIT_NOFILE) from {soft} to"
                " {target} for --max-connections {count}",
                soft=soft,
                target=target,
                count=self.maxConnections,
            )
            soft = target
        needed = limits.filesNeeded(self.maxConnections)
        if self.maxConnections and 0 <= soft < needed:
            self.log.warn(
                "--max-connections {count} needs about {needed} open files but"
                " the limit is {limit} (hard {hard}): beyond it, accepting"
                " pauses until descriptors are free",
                count=self.maxConnections,
                needed=needed,
                limit=soft,
                hard=hard,
            )


def _fileLimit() -> tuple[int, int]:
    """The soft and hard C{RLIMIT_NOFILE}; ImportError where there is none."""
    # Imported here: the resource module exists on Unix only.
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _setFileLimit(limit: tuple[int, int]) -> None:
    """Set the soft and hard C{RLIMIT_NOFILE}."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, limit)


class CleanExitService(Service):
    """On SIGTERM, shut down as twistd would but exit with status 0.

    Why a SIGTERM handler of our own: the reactor's records the signal,
    and twistd then kills itself with it after a clean shutdown, so a
    drained server would still exit with status -15 and look failed to
    its supervisor.  This service's handler only asks the reactor to stop,
    from the reactor thread: the same shutdown, drain included, then exit
    status 0.  It is installed as soon as the application starts (add this
    service before the listeners: a SIGTERM right after "Listening on"
    would otherwise kill the process outright), and it also replaces the
    reactor's C{sigTerm} method, which the reactor installs as the SIGTERM
    handler when it starts running; replacing the handler again after
    that would leave a moment in which a SIGTERM reaches the reactor's own.
    SIGINT is left to Twisted.
    """

    log = Logger()

    # What is logged when SIGTERM arrives.
    sigTermMessage = "Received SIGTERM, shutting down."

    def __init__(
        self,
        reactor: IReactorCore,
        installHandler: Callable[[int, Callable[[int, FrameType | None], None]], object]
        | None = signal.signal,
    ) -> None:
        self.reactor = reactor
        self.installHandler = installHandler

    def privilegedStartService(self) -> None:
        """Take over SIGTERM, now and for when the reactor starts running."""
        Service.privilegedStartService(self)
        if self.installHandler is not None:
            self.installHandler(signal.SIGTERM, self.sigTerm)
            # ReactorBase looks sigTerm up when run() builds its signal
            # handling (pinned by test_e2e_hardening.test_reactorSigTerm).
            self.reactor.sigTerm = self.sigTerm  # type: ignore[attr-defined]

    def sigTerm(self, number: int, frame: FrameType | None = None) -> None:
        """Stop the reactor (and so drain) without recording an exit signal."""
        self.log.info(self.sigTermMessage)
        # A signal handler may run between any two bytecodes; the reactor
        # must be stopped from its own loop.
        cast(IReactorFromThreads, self.reactor).callFromThread(self.reactor.stop)


class DrainService(CleanExitService):
    """Graceful shutdown: on stop, let the echo connections finish.

    Stopping (twistd's shutdown, on SIGTERM) waits for C{factory}'s open
    connections for up to C{timeout} seconds and then aborts the rest; the
    listeners stop accepting at the same moment, since every service of
    the application is stopped together.  SIGTERM exits with status 0, as
    L{CleanExitService} explains.
    """

    sigTermMessage = "Received SIGTERM, draining and shutting down."

    def __init__(
        self,
        reactor: IReactorCore,
        factory: EchoFactory,
        timeout: float,
        installHandler: Callable[[int, Callable[[int, FrameType | None], None]], object]
        | None = signal.signal,
    ) -> None:
        CleanExitService.__init__(self, reactor, installHandler)
        self.factory = factory
        self.timeout = timeout

    def stopService(self) -> Deferred[None]:
        """Drain the open connections, aborting what is left after the timeout."""
        Service.stopService(self)
        return self.factory.drain(self.timeout)
