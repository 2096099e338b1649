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

Linux only (epoll); this module is imported only when the reactor is
chosen.  Twisted internals relied on (pinned by
C{echotwist.test.test_fastepoll}): the epoll reactor's C{_poller},
C{_selectables}, C{_doReadOrWrite} and C{_disconnectSelectable}, and
that C{_doReadOrWrite} handles a read-only event with C{doRead} alone.
"""

from __future__ import annotations

import errno
from select import EPOLLIN

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

from echotwist.logging import logObserver


class FastEPollReactor(EPollReactor):
    """The epoll reactor, without a logging context built per event."""

    _log = Logger(observer=logObserver)

    def doPoll(self, timeout: float | None) -> None:
        """Poll once and dispatch each ready descriptor directly."""
        try:
            # As EPollReactor.doPoll: at most as many events as descriptors.
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
            if selectable is None:
                continue
            if event == EPOLLIN:
                # Only readable: as _doReadOrWrite would, read, then drop
                # the connection if the read says it is over.
                try:
                    why = selectable.doRead()
                except KeyboardInterrupt:
                    # As log.callWithLogger: Ctrl-C stops the reactor.
                    raise
                except BaseException as e:
                    self._log.failure("Unhandled error reading {fd}", fd=fd)
                    why = e
                if why:
                    self._disconnectSelectable(selectable, why, True)
                continue
            try:
                self._doReadOrWrite(selectable, fd, event)
            except KeyboardInterrupt:
                # As log.callWithLogger: Ctrl-C stops the reactor.
                raise
            except BaseException:
                self._log.failure("Unhandled error dispatching {fd}", fd=fd)

    doIteration = doPoll


def install() -> None:
    """Install L{FastEPollReactor} as the reactor (C{twistd -r fastepoll})."""
    from twisted.internet.main import installReactor

    installReactor(FastEPollReactor())
