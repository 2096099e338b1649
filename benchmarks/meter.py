"""Metering a server over a load's measured window, from C{/proc}.

L{Meter} reads the CPU time and context switches of a server's processes
(a C{--workers} supervisor and its workers summed) when the load
generator starts its window and when it ends it; L{rssKiB} reads a
process's resident memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from benchmarks.procstat import (
    Spread,
    connectionsOf,
    cpuMicrosPerEcho,
    readContextSwitches,
    readStat,
    readStatusKiB,
)


def rssKiB(pid: int) -> int:
    """The resident set size of process C{pid}, in KiB."""
    return readStatusKiB(pid, "VmRSS")


class Meter:
    """Server CPU and context switches over the measured window of a load.

    C{pids} are the server's processes (a C{--workers} supervisor and its
    workers); their CPU is summed.  With C{serving} and C{port}, the
    established connections on C{port} that each of the C{serving}
    processes holds are counted when the window starts.
    """

    def __init__(
        self, pids: Sequence[int], serving: Sequence[int] = (), port: int = 0
    ) -> None:
        self.pids = list(pids)
        self.serving = list(serving)
        self.port = port
        self.user = self.system = self.switches = 0
        self.spread: Spread | None = None

    def _read(self) -> tuple[int, int, int]:
        stats = [readStat(pid) for pid in self.pids]
        return (
            sum(stat.user for stat in stats),
            sum(stat.system for stat in stats),
            sum(readContextSwitches(pid) for pid in self.pids),
        )

    def start(self) -> None:
        """The window starts: subtract the counters read now."""
        user, system, switches = self._read()
        self.user, self.system, self.switches = -user, -system, -switches
        if self.serving:
            self.spread = connectionsOf(self.serving, self.port)

    def stop(self) -> None:
        """The window ends: add the counters read now."""
        user, system, switches = self._read()
        self.user += user
        self.system += system
        self.switches += switches

    def cpuMicrosPerEcho(self, echoes: int, *, kind: str = "both") -> float:
        """Server CPU µs per echo over the window: C{user}, C{system} or both."""
        ticks = {
            "user": self.user,
            "system": self.system,
            "both": self.user + self.system,
        }[kind]
        return cpuMicrosPerEcho(ticks, echoes, os.sysconf("SC_CLK_TCK"))
