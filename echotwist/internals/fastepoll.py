"""The fast epoll reactor: C{twistd echo}'s default on Linux, C{twistd -r fastepoll}.

The epoll reactor runs every read or write event inside
C{log.callWithLogger}, which builds a logging context (the selectable's
log prefix as the legacy log's C{system}) for each event: about a third
of the remaining Python time per echo.  L{FastEPollReactor} dispatches
without it, and logs anything an event raises as C{callWithLogger} would
(re-raising C{KeyboardInterrupt}, as it does), only without the
C{system} prefix.  Code that logs with C{twisted.logger} (as echotwist
does) is unaffected; legacy C{log.msg} calls made inside event handlers
lose the connection's prefix.

The commonest event, a descriptor that is only readable (data, or the
peer's end), is dispatched in the loop itself: C{doRead}, then the
disconnection C{_doReadOrWrite} would make of its result.  Any other
event (writable, hang-up, error) goes through C{_doReadOrWrite}.

Where the C speedups are built (L{echotwist.internals.speedups}), the
same loop runs in C: it calls the C{doRead} of a descriptor that is
only readable itself, and reads a L{LeanServer} without calling its
C{doRead} (it does what C{doRead} does).

Linux only (epoll); this module is imported only when the reactor is
chosen.  Twisted internals relied on (pinned by
C{echotwist.test.test_fastepoll}): the epoll reactor's C{_poller},
C{_selectables}, C{_doReadOrWrite} and C{_disconnectSelectable}, and
that C{_doReadOrWrite} handles a read-only event with C{doRead} alone.
"""

from __future__ import annotations

import errno
from select import EPOLLIN
from types import ModuleType

from twisted.internet import main
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger
from twisted.python.failure import Failure

from echotwist.internals.leanserver import LeanServer
from echotwist.internals.speedups import builtSpeedups
from echotwist.logging import logObserver


class FastEPollReactor(EPollReactor):
    """The epoll reactor, without a logging context built per event."""

    _log = Logger(observer=logObserver)

    def __init__(self, speedups: ModuleType | None = builtSpeedups) -> None:
        """Dispatch in C with C{speedups}' C{Dispatcher} if given (by default
        the built extension, L{echotwist.internals.speedups}), else in Python.
        """
        EPollReactor.__init__(self)
        # The dispatcher keeps the selectables dict: the epoll reactor makes
        # it once, in __init__, and only ever changes its contents.
        self._dispatcher = (
            None
            if speedups is None
            else speedups.Dispatcher(
                self._selectables,
                LeanServer,
                self._dispatch,
                self._disconnectSelectable,
                self._readFailed,
                main.CONNECTION_DONE,
                main.CONNECTION_LOST,
            )
        )

    def doPoll(self, timeout: float | None) -> None:
        """Poll once and dispatch each ready descriptor directly."""
        # As EPollReactor.doPoll: at most as many events as descriptors.
        if self._dispatcher is not None:
            self._dispatcher.poll(
                self._poller.fileno(), timeout, len(self._selectables)
            )
            return
        try:
            events = self._poller.poll(
                -1 if timeout is None else timeout, len(self._selectables)
            )
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        for fd, event in events:
            # A descriptor removed by an earlier event of this batch is
            # skipped, as EPollReactor does.
            selectable = selectables.get(fd)
            if selectable is not None:
                self._dispatch(selectable, fd, event)

    doIteration = doPoll

    def _dispatch(self, selectable: object, fd: int, event: int) -> None:
        # One ready descriptor (the C dispatcher calls here only for
        # events other than "only readable", which it handles itself).
        if event == EPOLLIN:
            # Only readable: as _doReadOrWrite would, read, then drop the
            # connection if the read says it is over.
            try:
                why = selectable.doRead()  # type: ignore[attr-defined]
            except KeyboardInterrupt:
                # As log.callWithLogger: Ctrl-C stops the reactor.
                raise
            except BaseException as e:
                self._readFailed(selectable, fd, e)
                return
            if why:
                self._disconnectSelectable(selectable, why, True)
            return
        try:
            self._doReadOrWrite(selectable, fd, event)
        except KeyboardInterrupt:
            # As log.callWithLogger: Ctrl-C stops the reactor.
            raise
        except BaseException:
            self._log.failure("Unhandled error dispatching {fd}", fd=fd)

    def _readFailed(self, selectable: object, fd: int, error: BaseException) -> None:
        # A read raised: logged, and the connection dropped with the error
        # as the reason, as _doReadOrWrite does.
        self._log.failure("Unhandled error reading {fd}", Failure(error), fd=fd)
        self._disconnectSelectable(selectable, error, True)


def install() -> None:
    """Install L{FastEPollReactor} as the reactor (C{twistd -r fastepoll})."""
    from twisted.internet.main import installReactor

    installReactor(FastEPollReactor())
