"""The host's steal: CPU time the hypervisor gave elsewhere during a run.

On a virtual machine the hypervisor may run other work on the physical
CPUs this machine's CPUs are made of; Linux counts the time a CPU wanted
to run and could not as I{steal}, the eighth figure of the C{cpu} line
of C{/proc/stat}.  A latency measured while the host steals measures the
host as much as the server (a wake-up waits for the hypervisor), so the
bench reports the steal of its run beside its figures, and warns when it
is large enough to matter.  The parsing and the arithmetic here do no
I/O; L{readCpuTimes} is the one read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# From this share of the CPU time stolen, the report warns.
STEAL_WARNING_PERCENT = 1.0


@dataclass(frozen=True)
class CpuTimes:
    """All CPUs' time so far in clock ticks: in all, and stolen."""

    total: int
    steal: int


def parseCpuTimes(text: str) -> CpuTimes:
    """Read the C{cpu} line of C{/proc/stat}'s C{text}.

    Its figures are user, nice, system, idle, iowait, irq, softirq, steal,
    then guest and guest_nice, which are already counted in user and nice;
    older kernels give fewer (missing ones count as 0).

    @raise ValueError: there is no C{cpu} line, or it is not numbers.
    """
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(field) for field in fields[1:9]]
            values += [0] * (8 - len(values))
            return CpuTimes(sum(values), values[7])
    raise ValueError("no cpu line in /proc/stat")


def stealPercent(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """The share of the CPU time between two readings that was stolen, in
    percent; None if either reading is missing or no time passed between
    them.
    """
    if before is None or after is None:
        return None
    total = after.total - before.total
    if total <= 0:
        return None
    return 100.0 * (after.steal - before.steal) / total


def readCpuTimes(path: Path = Path("/proc/stat")) -> CpuTimes | None:
    """The CPU times now, or None where C{path} is missing or unreadable
    (not Linux, or a container that hides it).
    """
    try:
        return parseCpuTimes(path.read_text(encoding="ascii"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
