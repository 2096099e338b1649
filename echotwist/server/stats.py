"""Server statistics: plain counters, no I/O.

One L{ServerStats} per server process is shared by every listener (TCP,
UNIX, TLS, UDP).  Protocols update it; exporters (logs, Prometheus) read it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable

# Upper bounds, in seconds, of the connection-duration histogram buckets;
# the last bucket (+Inf) is implicit.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.01,
    0.1,
    1.0,
    10.0,
    60.0,
    300.0,
    3600.0,
)


class DurationHistogram:
    """Cumulative-bucket histogram of durations, as Prometheus exposes them."""

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """Return C{(upper bound, observations <= bound)} pairs, +Inf last."""
        result: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


class ServerStats:
    """What one echo server process has done so far."""

    def __init__(self) -> None:
        self.connectionsTotal = 0
        self.connectionsActive = 0
        self.bytesEchoed: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.udpDropped: Counter[str] = Counter()
        self.durations = DurationHistogram()
        # In a worker of --workers: its number (from 1), and how many times
        # the supervisor has replaced it; None in a single process.
        self.worker: int | None = None
        self.workerRestarts = 0
        self._liveSources: list[Callable[[], Iterable[tuple[str, int]]]] = []

    def connectionOpened(self) -> None:
        """Count a connection that was accepted and is now served."""
        self.connectionsTotal += 1
        self.connectionsActive += 1

    def connectionClosed(self, duration: float) -> None:
        """Count the end of a served connection that lasted C{duration} s."""
        self.connectionsActive -= 1
        self.durations.observe(duration)

    def echoed(self, transport: str, count: int) -> None:
        """Count C{count} bytes echoed over C{transport} (tcp, unix, tls, udp)."""
        self.bytesEchoed[transport] += count

    def addLiveSource(self, source: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Count, in L{bytesEchoedNow}, the bytes C{source} reports.

        A stream protocol counts its bytes itself and adds them here with
        L{echoed} when it closes; until then a source (its factory) reports
        C{(transport, bytes)} for each open connection.  That keeps the echo
        path down to one integer addition per read.
        """
        self._liveSources.append(source)

    def bytesEchoedNow(self) -> Counter[str]:
        """Bytes echoed so far by transport, open connections included."""
        total = Counter(self.bytesEchoed)
        for source in self._liveSources:
            for transport, count in source():
                total[transport] += count
        return total

    def reject(self, reason: str) -> None:
        """Count a connection refused for C{reason}."""
        self.rejected[reason] += 1

    def dropDatagram(self, reason: str) -> None:
        """Count a datagram dropped for C{reason}."""
        self.udpDropped[reason] += 1
