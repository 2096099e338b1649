"""Wake-ups for the open-loop schedule, finer than the reactor's timers.

A reactor's C{callLater} ends in C{epoll_wait}, whose timeout is whole
milliseconds (Python rounds up) with at least 50 us of the kernel's
timer slack on top: a send due 300 us from now left 1 to 1.1 ms from
now, and that wait was all counted in the corrected latency.

L{TimerfdWaker} arms a Linux C{timerfd} instead, a descriptor the
reactor watches like any socket (C{addReader}) and the kernel makes
readable at the nanosecond asked (no slack), so the reactor wakes from
its C{epoll_wait} on time whatever its own timeout.  Python 3.11 has no
binding for it (C{os.timerfd_create} came in 3.13), so the two calls are
made through C{ctypes}.  L{CallLaterWaker} is the portable fallback, and
what tests use with a L{task.Clock<twisted.internet.task.Clock>}.

Both call the callback once after each arming, arming again replacing
an earlier arming, and log a callback that raises (as the reactor does a
timed call's) and go on.  A wake-up
is still only as prompt as the kernel can schedule the process (tens of
microseconds on a virtual machine, more under load), which is why the
schedule wakes a little early and spins the last stretch
(L{echotwist.bench.schedule.waitBefore}).  A spin, C{wakeIn(0)}, calls
back on the reactor's next turn: the timerfd waker arms its timer to
expire at once and leaves the expiry unread, so the descriptor stays
readable and every poll returns at once, with no system call of its own
per turn; a turn of such a spin took 2.2 to 2.5 us here, one of
C{callLater(0)} (a delayed call made, queued, run) 5 to 5.9 us, and one
that armed and read the timer each time 33 us.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable
from typing import Protocol, cast

from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFDSet,
    IReactorTime,
    IReadDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
# The smallest arming: it_value 0 would disarm the timer instead.
_SOON_NS = 1

_log = Logger()


class Waker(Protocol):
    """Calls one callback once per arming, after a delay in seconds."""

    def wakeIn(self, seconds: float) -> None:
        """Call back after C{seconds} (0: on the reactor's next turn), once.

        Replaces any earlier arming that has not called back yet.
        """

    def stop(self) -> None:
        """Disarm for good and release what the waker holds."""


class CallLaterWaker:
    """A L{Waker} on the reactor's own timers (C{callLater})."""

    def __init__(self, clock: IReactorTime, callback: Callable[[], object]) -> None:
        self.clock = clock
        self.callback = callback
        self.pending: IDelayedCall | None = None

    def wakeIn(self, seconds: float) -> None:
        """Arm C{callLater(seconds)}, cancelling an earlier arming."""
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        self.pending = self.clock.callLater(max(seconds, 0.0), self._fire)

    def _fire(self) -> None:
        self.pending = None
        self.callback()

    def stop(self) -> None:
        """Cancel the pending call, if any."""
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        self.pending = None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Timerfd:
    """A Linux C{timerfd} on C{CLOCK_MONOTONIC}: arm, disarm, read, close.

    @raise OSError: the system has no C{timerfd} (not Linux).
    """

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError("timerfd needs Linux")
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
        descriptor = self.libc.timerfd_create(
            _CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC
        )
        if descriptor < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        self.descriptor: int = descriptor
        self.spec = _Itimerspec()

    def arm(self, nanoseconds: int) -> None:
        """Make the descriptor readable C{nanoseconds} from now (0: disarm)."""
        value = self.spec.it_value
        value.tv_sec, value.tv_nsec = divmod(nanoseconds, 1_000_000_000)
        if self.libc.timerfd_settime(self.descriptor, 0, ctypes.byref(self.spec), None):
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))

    def read(self) -> int:
        """The expirations since the last read (0 if none: it does not block)."""
        try:
            return int.from_bytes(os.read(self.descriptor, 8), sys.byteorder)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.descriptor)


@implementer(IReadDescriptor)
class TimerfdWaker:
    """A L{Waker} on a L{Timerfd} the reactor watches as a reader.

    A wait arms the timer for its end.  A spin arms it to expire at once
    and leaves the expiry unread, so that each reactor turn's poll finds
    the descriptor readable and returns at once; each turn calls back if
    the spin was asked for again, and a turn not asked for stops it.  An
    arming replaces the earlier one and clears an expiry not read (the
    kernel's C{timerfd_settime}), which is how a wait ends a spin.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        callback: Callable[[], object],
        timer: Timerfd | None = None,
    ) -> None:
        self.reactor = reactor
        self.callback = callback
        self.timer = Timerfd() if timer is None else timer
        self.stopped = False
        # Spinning: the timer armed to expire at once, its expiry unread.
        self.spinning = False
        # A call back asked for on the next turn of the spin.
        self.due = False
        reactor.addReader(self)

    def wakeIn(self, seconds: float) -> None:
        """Arm the timer C{seconds} from now; for 0, spin to the next turn.

        Once stopped, nothing.
        """
        if self.stopped:
            return
        if seconds > 0:
            self.spinning = self.due = False
            self.timer.arm(max(int(seconds * 1e9), _SOON_NS))
            return
        if not self.spinning:
            self.timer.arm(_SOON_NS)
            self.spinning = True
        self.due = True

    def fileno(self) -> int:
        """The timer's descriptor, for the reactor."""
        return -1 if self.stopped else self.timer.descriptor

    def doRead(self) -> None:
        """A spin's turn (one call back per asking) or a wait's end (one)."""
        if self.spinning:
            if self.due:
                self.due = False
                self.callBack()
            # (A callback that stopped the waker ended the spin too.)
            if self.spinning and not self.due:
                # Not asked for again: disarming clears the expiry.
                self.spinning = False
                self.timer.arm(0)
        elif self.timer.read():
            self.callBack()

    def callBack(self) -> None:
        """Call the callback; if it raises, log that and keep the timer.

        Raised out of C{doRead}, the error would make the reactor drop the
        descriptor, and the open loop would have no timer left.
        """
        try:
            self.callback()
        except Exception:
            _log.failure("The open loop's wake-up raised")

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped the descriptor (at shutdown): release it."""
        self.stop()

    def logPrefix(self) -> str:
        """The name the reactor logs this descriptor's errors under."""
        return "TimerfdWaker"

    def stop(self) -> None:
        """Stop watching the timer and close it."""
        if self.stopped:
            return
        self.spinning = self.due = False
        self.reactor.removeReader(self)
        self.stopped = True
        self.timer.close()


def makeWaker(reactor: IReactorTime, callback: Callable[[], object]) -> Waker:
    """The finest waker C{reactor} can drive: a timerfd where there is one."""
    if IReactorFDSet.providedBy(reactor):
        try:
            return TimerfdWaker(cast(IReactorFDSet, reactor), callback)
        except OSError:
            pass
    return CallLaterWaker(reactor, callback)
