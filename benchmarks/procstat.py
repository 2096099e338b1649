"""What Linux's C{/proc} says about a server's processes.

The side-by-side benchmark (C{benchmarks/run.py}) measures C{twistd echo
--workers N} with these: the CPU time of the supervisor and of every
worker (the supervisor's children), their context switches, and how many
established TCP connections each worker holds.  The parsing functions
take the files' text and do no I/O, so they are tested without a running
server; the readers around them take the C{/proc} directory as an argument.

Written here rather than taken from a library: psutil would do the reading,
but it is a compiled dependency for a few lines of parsing, and it matches
sockets to processes by the same inode lookup as L{connectionsOf}.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

# The state column of /proc/net/tcp: 01 is TCP_ESTABLISHED (include/net/tcp_states.h).
ESTABLISHED = "01"


@dataclass(frozen=True)
class ProcessStat:
    """A process's id, its parent's id and its CPU time in clock ticks."""

    pid: int
    parent: int
    user: int
    system: int

    @property
    def ticks(self) -> int:
        """User plus system time."""
        return self.user + self.system


def parseStat(text: str) -> ProcessStat:
    """Read C{/proc/PID/stat}: pid, parent pid, user and system ticks.

    The command name (field 2, in parentheses) may hold spaces and
    parentheses itself, so the fields are counted after its last C{)}.
    """
    head, tail = text.rsplit(")", 1)
    fields = tail.split()
    # After the name: state, ppid, ..., utime (14th field of the line) and
    # stime (15th).
    return ProcessStat(
        int(head.split("(", 1)[0]), int(fields[1]), int(fields[11]), int(fields[12])
    )


def parseContextSwitches(text: str) -> int:
    """Voluntary plus involuntary context switches from C{/proc/PID/status}."""
    total = 0
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            total += int(value)
    return total


def parseStatusKiB(text: str, field: str) -> int:
    """A C{/proc/PID/status} field counted in KiB (C{VmRSS}, C{VmHWM})."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise ValueError(f"no {field} in the process status")


def childrenOf(parent: int, stats: Iterable[ProcessStat]) -> list[int]:
    """The ids of C{parent}'s children among C{stats}, in ascending order."""
    return sorted(stat.pid for stat in stats if stat.parent == parent)


def socketInode(link: str) -> int | None:
    """The inode of a C{/proc/PID/fd} link target C{socket:[INODE]}, else None."""
    if link.startswith("socket:[") and link.endswith("]"):
        return int(link[len("socket:[") : -1])
    return None


def establishedInodes(table: str, localPort: int | None = None) -> set[int]:
    """The socket inodes of established connections in C{/proc/net/tcp} text.

    The same layout serves C{/proc/net/tcp6}.  With C{localPort}, only
    connections whose local end has that port (a server's side of its
    connections, not a client's) count.
    """
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != ESTABLISHED:
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if localPort is None or port == localPort:
            inodes.add(int(fields[9]))
    return inodes


@dataclass(frozen=True)
class Spread:
    """How connections are spread over workers: each worker's count."""

    counts: tuple[int, ...]

    @property
    def least(self) -> int:
        """The fewest connections any worker holds."""
        return min(self.counts)

    @property
    def most(self) -> int:
        """The most connections any worker holds."""
        return max(self.counts)

    @property
    def total(self) -> int:
        """The connections over all workers."""
        return sum(self.counts)

    def imbalance(self) -> float:
        """The busiest worker's count over the mean count (1.0 is even)."""
        mean = self.total / len(self.counts)
        return self.most / mean if mean else 1.0


def cpuMicrosPerEcho(ticks: int, echoes: int, ticksPerSecond: int) -> float:
    """Server CPU per echo in µs, from clock ticks spent over C{echoes}."""
    if echoes <= 0:
        raise ValueError(f"no echoes to divide {ticks} ticks by")
    return ticks / ticksPerSecond * 1e6 / echoes


def ratiosToFirst(values: Mapping[int, Sequence[float]]) -> dict[int, float]:
    """Each key's median over the median of the smallest key's values.

    For echoes per CPU-second by worker count: C{{1: [...], 2: [...]}}
    gives C{{1: 1.0, 2: median(2) / median(1)}}.
    """
    base = statistics.median(values[min(values)])
    return {key: statistics.median(samples) / base for key, samples in values.items()}


def roundRatiosToFirst(
    values: Mapping[int, Sequence[float]],
) -> dict[int, tuple[float, float, float]]:
    """Round by round, each key's value over the smallest key's: median, least, most.

    The values of one round were measured minutes apart at most, so their
    ratio is spared the drift of a shared machine over a whole run that a
    ratio of medians suffers.  C{{1: [10, 20], 2: [9, 22]}} gives
    C{{1: (1, 1, 1), 2: (1.0, 0.9, 1.1)}}.  Rounds are matched by
    position; a key with fewer rounds is matched with the first ones.
    """
    base = values[min(values)]
    result = {}
    for key, samples in values.items():
        ratios = [value / first for value, first in zip(samples, base, strict=False)]
        result[key] = (statistics.median(ratios), min(ratios), max(ratios))
    return result


def readStat(pid: int, proc: Path = PROC) -> ProcessStat:
    """L{parseStat} of a running process."""
    return parseStat((proc / str(pid) / "stat").read_text())


def readStatusKiB(pid: int, field: str, proc: Path = PROC) -> int:
    """L{parseStatusKiB} of a running process."""
    return parseStatusKiB((proc / str(pid) / "status").read_text(), field)


def readContextSwitches(pid: int, proc: Path = PROC) -> int:
    """L{parseContextSwitches} of a running process."""
    return parseContextSwitches((proc / str(pid) / "status").read_text())


def childPids(parent: int, proc: Path = PROC) -> list[int]:
    """The ids of the running children of process C{parent}."""
    stats = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats.append(parseStat((entry / "stat").read_text()))
        except (OSError, ValueError, IndexError):
            # A process may exit, or be a kernel thread we cannot read,
            # while we scan.
            continue
    return childrenOf(parent, stats)


def connectionsOf(pids: Sequence[int], localPort: int, proc: Path = PROC) -> Spread:
    """How many established TCP connections on C{localPort} each process holds.

    A socket is matched to a process through its inode: C{/proc/net/tcp}
    (and C{tcp6}) lists each connection's inode, and C{/proc/PID/fd} links
    to C{socket:[INODE]} for each socket the process holds open.
    """
    established: set[int] = set()
    for name in ("tcp", "tcp6"):
        path = proc / "net" / name
        if path.exists():
            established |= establishedInodes(path.read_text(), localPort)
    counts = []
    for pid in pids:
        held = set()
        for fd in (proc / str(pid) / "fd").iterdir():
            try:
                inode = socketInode(os.readlink(fd))
            except OSError:
                # The descriptor was closed while we looked.
                continue
            if inode is not None:
                held.add(inode)
        counts.append(len(held & established))
    return Spread(tuple(counts))
