"""Pause accepting while the process is out of file descriptors (EMFILE).

Twisted internals relied on (C{echotwist.test.test_emfile} pins each
against the installed Twisted):

  - A listening C{twisted.internet.tcp.Port} (and C{unix.Port}, C{ssl.Port},
    adopted systemd ports: all subclasses) calls C{self.socket.accept()}
    from C{doRead}, looking C{self.socket} up each time.
  - Its accept loop (C{tcp._accept}) ends quietly on C{EAGAIN}.
  - C{startReading}/C{stopReading} (public on C{FileDescriptor}) add and
    remove the port from the reactor's readers.

Why not leave it to Twisted: on C{EMFILE} Twisted closes a reserved
descriptor, accepts the waiting clients and closes them at once, so they
are lost; and when that reserve is not available it logs and returns with
the listening socket still readable, so the reactor calls C{doRead} again
at once, spinning the CPU and flooding the log.  Here the first C{EMFILE}
stops the port from reading, waiting clients stay in the kernel's backlog,
and accepting is retried after a short, growing delay until descriptors
are free again; then the waiting clients are served.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger

from echotwist.endpoints import formatAddress
from echotwist.logging import logObserver

# Accept errors that mean "no descriptor (or buffer) for a new socket now".
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

FIRST_DELAY = 0.1
MAX_DELAY = 2.0


class AcceptGuard:
    """Stand in for a listening port's socket and pause it on EMFILE.

    Everything but C{accept} is passed to the real socket.
    """

    log = Logger(observer=logObserver)

    def __init__(
        self,
        port: tcp.Port,
        clock: IReactorTime,
        onExhausted: Callable[[], None],
    ) -> None:
        self.port = port
        self.realSocket: socket.socket = port.socket
        self.clock = clock
        self.onExhausted = onExhausted
        self.delay = 0.0
        self.paused = False
        self.failures = 0

    def __getattr__(self, name: str) -> object:
        # Only called for attributes not found on the guard itself, so
        # close, getsockname, fileno and the rest reach the real socket.
        return getattr(self.realSocket, name)

    def accept(self) -> tuple[socket.socket, Any]:
        """Accept a client; on exhaustion pause the port and report no client."""
        if self.paused:
            # The rest of the current accept loop, after an EMFILE.
            raise BlockingIOError(errno.EAGAIN, "accepting is paused")
        try:
            accepted = self.realSocket.accept()
        except OSError as e:
            if e.errno not in EXHAUSTED:
                raise
            self._pause(e)
            raise BlockingIOError(errno.EAGAIN, "accepting is paused") from None
        if self.delay:
            self.log.info(
                "Accepting again on {address} after {failures} failed attempts",
                address=formatAddress(self.port.getHost()),
                failures=self.failures,
            )
            self.delay = 0.0
            self.failures = 0
        return accepted

    def _pause(self, error: OSError) -> None:
        self.onExhausted()
        self.failures += 1
        first = not self.delay
        self.delay = min(MAX_DELAY, self.delay * 2 if self.delay else FIRST_DELAY)
        if first:
            # One line per episode, not per retry: a log that itself needs
            # descriptors must not be flooded while there are none.
            self.log.warn(
                "Out of file descriptors ({error}) on {address}: not accepting,"
                " retrying with backoff up to {maxDelay:g} s",
                error=errno.errorcode.get(error.errno or 0, str(error)),
                address=formatAddress(self.port.getHost()),
                maxDelay=MAX_DELAY,
                reason="emfile",
            )
        self.paused = True
        self.port.stopReading()
        self.clock.callLater(self.delay, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if self.port.connected and not self.port.disconnecting:
            self.port.startReading()


def guardAccept(
    port: IListeningPort, clock: IReactorTime, onExhausted: Callable[[], None]
) -> AcceptGuard | None:
    """Install an L{AcceptGuard} on C{port} if it is a Twisted socket port.

    Return the guard, or C{None} for a port of another kind (left as is).
    """
    if not isinstance(port, tcp.Port) or getattr(port, "socket", None) is None:
        return None
    guard = AcceptGuard(port, clock, onExhausted)
    # The port looks its socket up on every accept; this is the hook.
    port.socket = guard
    return guard
