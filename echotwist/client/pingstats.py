"""Round-trip statistics and report lines for the client's ping mode.

Plain code with no I/O: the ping loop feeds it round-trip times in
seconds, and it says what C{ping} would print.  The summary follows
iputils C{ping}: C{min/avg/max/mdev}, where C{mdev} is the standard
deviation of the round-trip times (the square root of the mean square
less the square of the mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class PingStats:
    """Counts of probes sent and answered, and the answered round trips."""

    sent: int = 0
    received: int = 0
    rtts: list[float] = field(default_factory=list)

    def probeSent(self) -> None:
        """Count one probe as sent."""
        self.sent += 1

    def probeAnswered(self, rtt: float) -> None:
        """Count one verified echo that took C{rtt} seconds."""
        self.received += 1
        self.rtts.append(rtt)

    @property
    def lost(self) -> int:
        """Probes sent without a verified echo."""
        return self.sent - self.received

    @property
    def lossPercent(self) -> float:
        """Lost probes as a percentage of those sent (0 when none were sent)."""
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    def summary(self) -> tuple[float, float, float, float] | None:
        """C{(min, avg, max, mdev)} of the round trips in seconds, if any."""
        if not self.rtts:
            return None
        n = len(self.rtts)
        mean = sum(self.rtts) / n
        meanSquare = sum(r * r for r in self.rtts) / n
        # Rounding can make the difference slightly negative for equal values.
        mdev = math.sqrt(max(0.0, meanSquare - mean * mean))
        return min(self.rtts), mean, max(self.rtts), mdev


def formatMilliseconds(seconds: float) -> str:
    """Milliseconds with three decimals, as C{ping} prints them."""
    return f"{seconds * 1000:.3f}"


def probeLine(size: int, host: str, seq: int, rtt: float) -> str:
    """The line for one verified echo."""
    return f"{size} bytes from {host}: seq={seq} time={formatMilliseconds(rtt)} ms"


def lossLine(host: str, seq: int, why: str) -> str:
    """The line for one probe that got no verified echo."""
    return f"no echo from {host}: seq={seq} {why}"


def headerLine(host: str, port: int, transport: str, size: int) -> str:
    """The line before the first probe, in C{ping}'s shape."""
    return f"PING {host} port {port} over {transport}: {size} data bytes"


def summaryLines(host: str, stats: PingStats) -> list[str]:
    """The closing lines: counts and loss, then the round-trip summary."""
    lines = [
        f"--- {host} echo statistics ---",
        f"{stats.sent} probes sent, {stats.received} received,"
        f" {stats.lossPercent:.1f}% loss",
    ]
    values = stats.summary()
    if values is not None:
        text = "/".join(formatMilliseconds(v) for v in values)
        lines.append(f"rtt min/avg/max/mdev = {text} ms")
    return lines
