"""The open-loop send schedule: when each message was meant to leave.

Plain code, no I/O.  At C{rate} messages per second overall, send C{n}
is due at C{start + n / rate}; the load loop asks, whenever it wakes,
which sends are due by now, and measures each echo's latency from that
intended time (the correction for coordinated omission that wrk2
makes), so a stalled server or a late wake-up shows up as latency
instead of silently lowering the rate.
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
