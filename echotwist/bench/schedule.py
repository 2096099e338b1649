"""The open-loop send schedule: when each message was meant to leave.

Plain code, no I/O.  At C{rate} messages per second overall, send C{n}
is due at C{start + n / rate}; the load loop asks, whenever it wakes,
which sends are due by now, and measures each echo's latency from that
intended time (the correction for coordinated omission that wrk2
makes), so a stalled server or a late wake-up shows up as latency
instead of silently lowering the rate.

How long to sleep before the next send (L{waitBefore}) is decided here
too: a sleep ends some tens of microseconds late (the kernel's wake-up),
so the load loop wakes C{lead} seconds early and spins the rest on the
reactor, reading the clock each turn.
"""

from __future__ import annotations

import math


class OpenLoopSchedule:
    """Sends due at C{rate} per second from C{start}, spread over C{slots}."""

    def __init__(self, rate: float, start: float, slots: int) -> None:
        if not rate > 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.start = start
        self.slots = slots
        self.next = 0

    def intended(self, n: int) -> float:
        """When send C{n} is due."""
        return self.start + n / self.rate

    def slot(self, n: int) -> int:
        """Which connection (0 to C{slots} - 1) makes send C{n}: round robin."""
        return n % self.slots

    def due(self, now: float) -> range:
        """The sends due by C{now} not yet handed out; hands them out."""
        # The small tolerance keeps float rounding from holding back a send
        # whose intended time is exactly now.
        last = math.floor((now - self.start) * self.rate + 1e-9)
        first = self.next
        self.next = max(first, last + 1)
        return range(first, self.next)

    def nextDue(self) -> float:
        """When the next send not yet handed out is due."""
        return self.intended(self.next)


def waitBefore(due: float, now: float, lead: float) -> float:
    """Seconds to sleep at C{now} for a send C{due}, waking C{lead} early.

    0 means "do not sleep": the send is due within C{lead} (or overdue),
    and the reactor should come back at once after polling its sockets.
    """
    return max(0.0, due - lead - now)
