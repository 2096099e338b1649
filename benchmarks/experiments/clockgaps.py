"""How often this CPU is taken away from a process that only reads the clock.

The host's share of an open-loop send delay, before any work: a loop
that does nothing but read C{time.perf_counter} sees a gap wherever the
kernel or the hypervisor ran something else (a timer interrupt, another
guest).  With sends due every C{--slot-us}, a gap of G late by more than
C{--late-us} delays about (G - late) / slot of them by more than that;
the share of such sends is the floor under the send delay's tail on
this machine.  Run it pinned to the CPU the bench would use, alone and
beside a load, e.g.:

    taskset -c 1 .venv/bin/python benchmarks/experiments/clockgaps.py --seconds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from echotwist.bench.cpustat import readCpuTimes, stealPercent


@dataclass(frozen=True)
class GapSummary:
    """What a run of clock reads saw: gaps longer than C{late}, per second."""

    perSecond: float
    longest: float
    # The share (0 to 1) of the run's time spent in those gaps.
    timeShare: float
    # The share of send slots that such gaps made later than C{late}.
    lateSlots: float


def summarize(
    gaps: Sequence[float], seconds: float, slot: float, late: float
) -> GapSummary:
    """Summarize C{gaps} (seconds, any length) seen over C{seconds}.

    A send due every C{slot} seconds is late by more than C{late} when it
    falls due in the first (G - late) of a gap G: about (G - late) / slot
    of them per gap.
    """
    longGaps = [gap for gap in gaps if gap > late]
    slots = seconds / slot
    return GapSummary(
        perSecond=len(longGaps) / seconds,
        longest=max(gaps, default=0.0),
        timeShare=sum(longGaps) / seconds,
        lateSlots=sum((gap - late) / slot for gap in longGaps) / slots,
    )


def readGaps(seconds: float, shortest: float) -> list[float]:
    """Read the clock in a loop for C{seconds}; the gaps over C{shortest}."""
    now = time.perf_counter
    end = now() + seconds
    gaps: list[float] = []
    previous = now()
    while previous < end:
        current = now()
        if current - previous > shortest:
            gaps.append(current - previous)
        previous = current
    return gaps


def main(argv: Sequence[str]) -> int:
    """Read the clock for a while and print what took the CPU away."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--slot-us", type=float, default=20.0)
    parser.add_argument("--late-us", type=float, default=50.0)
    arguments = parser.parse_args(argv)
    if not 0 < arguments.seconds <= 600:
        parser.error("--seconds must be more than 0 and at most 600")
    if arguments.slot_us <= 0 or arguments.late_us <= 0:
        parser.error("--slot-us and --late-us must be more than 0")
    slot, late = arguments.slot_us / 1e6, arguments.late_us / 1e6
    before = readCpuTimes()
    gaps = readGaps(arguments.seconds, min(slot, late))
    steal = stealPercent(before, readCpuTimes())
    summary = summarize(gaps, arguments.seconds, slot, late)
    stolen = "unknown" if steal is None else f"{steal:.2f}%"
    print(
        f"gaps over {arguments.late_us:g} us: {summary.perSecond:.0f}/s,"
        f" longest {summary.longest * 1e6:.0f} us,"
        f" {summary.timeShare * 100:.3f}% of the time;"
        f" {summary.lateSlots * 100:.3f}% of {arguments.slot_us:g} us send slots"
        f" late by more than {arguments.late_us:g} us; host steal {stolen}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
