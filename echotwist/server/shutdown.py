"""Shutting down: SIGTERM stops the server cleanly (exit 0), draining connections."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger

from echotwist.internals.signals import takeOverSigTerm
from echotwist.protocol import EchoFactory


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
            takeOverSigTerm(self.reactor, self.sigTerm, self.installHandler)

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
