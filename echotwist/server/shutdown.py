"""Signals: SIGTERM and SIGINT stop the server cleanly (exit 0), draining
connections; SIGHUP reloads where something can reload, and never kills.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger

from echotwist.internals.signals import Handler, takeOverStopSignals
from echotwist.logging import logObserver
from echotwist.protocol import EchoFactory

InstallHandler = Callable[[int, Handler], object]


class CleanExitService(Service):
    """On SIGTERM or SIGINT, shut down once, as twistd would, but exit 0;
    on SIGHUP, call C{reload} (or, without one, log it and serve on).

    Why handlers of our own: the reactor's records the signal, and twistd
    then kills itself with it after a clean shutdown, so a drained server
    would still exit with status -15 (or 130) and look failed to its
    supervisor.  These handlers only ask the reactor to stop, from the
    reactor thread: the same shutdown, drain included, then exit status 0.
    A second stop signal (a process group signalled by C{timeout},
    systemd or a terminal, then the supervisor's own SIGTERM to its
    workers) is logged and changes nothing: one drain, no
    C{ReactorNotRunning} error.  They are installed as soon as the
    application starts (add this service before the listeners: a SIGTERM
    right after "Listening on" would otherwise kill the process outright),
    and replace the reactor's C{sigTerm} and C{sigInt} methods, which the
    reactor installs as handlers when it starts running
    (L{takeOverStopSignals}).

    SIGHUP's default action ends the process at once, cutting every
    connection: a terminal hang-up or a log-rotation script's
    C{kill -HUP} must not do that.
    """

    log = Logger(observer=logObserver)

    # What is logged when a stop signal arrives.
    stopMessage = "Received {signal}, shutting down."

    def __init__(
        self,
        reactor: IReactorCore,
        installHandler: InstallHandler | None = signal.signal,
        reload: Callable[[], object] | None = None,
    ) -> None:
        self.reactor = reactor
        self.installHandler = installHandler
        self.reload = reload
        self.stopRequested = False

    def privilegedStartService(self) -> None:
        """Take the signals over, now and for when the reactor starts running."""
        Service.privilegedStartService(self)
        if self.installHandler is not None:
            takeOverStopSignals(self.reactor, self.stopSignal, self.installHandler)
            self.installHandler(signal.SIGHUP, self.hangUpSignal)

    def stopSignal(self, number: int, frame: FrameType | None = None) -> None:
        """Stop the reactor (and so drain) without recording an exit signal."""
        # A signal handler may run between any two bytecodes (even inside
        # a log observer's write): log and stop from the reactor's loop.
        self._fromReactor(self.stop, signal.Signals(number).name)

    def hangUpSignal(self, number: int, frame: FrameType | None = None) -> None:
        """Reload, or log that there is nothing to reload, from the reactor's loop."""
        self._fromReactor(self.hangUp)

    def _fromReactor(self, f: Callable[..., object], *args: object) -> None:
        cast(IReactorFromThreads, self.reactor).callFromThread(f, *args)

    def stop(self, name: str) -> None:
        """Stop the reactor for signal C{name}, unless already stopping."""
        if self.stopRequested:
            self.log.info("Received {signal} again; already shutting down", signal=name)
            return
        self.stopRequested = True
        self.log.info(self.stopMessage, signal=name)
        # Already stopping for another reason: that shutdown is this one.
        with contextlib.suppress(ReactorNotRunning):
            self.reactor.stop()

    def hangUp(self) -> None:
        """SIGHUP: reload if this process can; else log it and serve on."""
        if self.reload is not None:
            self.reload()
            return
        self.log.info(
            "Received SIGHUP; one process does not reload (twistd echo --workers"
            " does): serving on"
        )


class DrainService(CleanExitService):
    """Graceful shutdown: on stop, let the echo connections finish.

    Stopping (twistd's shutdown, on SIGTERM or SIGINT) waits for
    C{factory}'s open connections for up to C{timeout} seconds and then
    aborts the rest; the listeners stop accepting at the same moment, since
    every service of the application is stopped together.  Signals are
    handled as L{CleanExitService} explains.
    """

    stopMessage = "Received {signal}, draining and shutting down."

    def __init__(
        self,
        reactor: IReactorCore,
        factory: EchoFactory,
        timeout: float,
        installHandler: InstallHandler | None = signal.signal,
    ) -> None:
        CleanExitService.__init__(self, reactor, installHandler)
        self.factory = factory
        self.timeout = timeout

    def stopService(self) -> Deferred[None]:
        """Drain the open connections, aborting what is left after the timeout."""
        Service.stopService(self)
        return self.factory.drain(self.timeout)


def exitAtEnd(
    status: int,
    register: Callable[[Callable[[], object]], object] = atexit.register,
) -> None:
    """Make this process exit with C{status} once twistd is done.

    twistd exits 0 after its reactor stops, whatever stopped it; a server
    that gives up (workers that cannot stay up) must exit non-zero so that
    its supervisor (systemd's C{Restart=on-failure}) sees a failure.  Run at
    interpreter exit, after twistd removed its pid file and stopped
    logging.
    """

    def exit() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    register(exit)
