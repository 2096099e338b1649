"""What the C{--workers} supervisor's log says happened after a fault.

The fault script (C{benchmarks/faults.py}) stamps each line of the
server's output with C{time.monotonic()} as it arrives (twistd's own
timestamps have whole seconds only), and asks here, without I/O: which
port the server listens on, when a killed worker's exit was logged, when
a worker that replaced it logged that it listens, and when every worker
had been replaced after a reload.

The wording of the lines lives in the patterns below and nowhere else, so
a change in the supervisor's messages is one edit here:

  - C{Listening on tcp:HOST:PORT with N workers}: the supervisor, once
    every worker serves (L{SUPERVISOR_LISTENING});
  - C{Worker I (pid P) listening}: a worker, once it serves
    (L{WORKER_LISTENING});
  - C{Worker I exited: WHY} or C{Worker I (pid P) exited: WHY}: the
    supervisor, when a worker ended without being asked to
    (L{WORKER_EXITED}); a supervisor that restarts workers adds what it
    does about it after the reason (C{...signal 9.; replacing it in 0 s}).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SUPERVISOR_LISTENING = re.compile(r"Listening on (?P<address>\S+) with \d+ workers")
WORKER_LISTENING = re.compile(r"Worker (?P<index>\d+) \(pid (?P<pid>\d+)\) listening")
WORKER_EXITED = re.compile(
    r"Worker (?P<index>\d+)(?: \(pid [^)]*\))? exited: (?P<why>.*)"
)


@dataclass(frozen=True)
class LogLine:
    """One line of the server's output and the monotonic time it arrived."""

    at: float
    text: str


@dataclass(frozen=True)
class Kill:
    """A worker killed by the script: when, which process, which worker index."""

    at: float
    pid: int
    index: int | None
    # Established connections the worker held just before the kill: the
    # bench connections it may take with it.
    held: int = 0


@dataclass(frozen=True)
class Replacement:
    """What the log said after a L{Kill}; times are seconds after the kill."""

    kill: Kill
    exited: float | None = None
    why: str | None = None
    listening: float | None = None
    pid: int | None = None


def portOf(address: str) -> int:
    """The port of an address as the log shows it: C{tcp:10.0.0.1:7} gives 7."""
    return int(address.rsplit(":", 1)[1])


def listeningPort(lines: Iterable[LogLine]) -> int | None:
    """The port the supervisor announced once all its workers listened, if it has."""
    for line in lines:
        match = SUPERVISOR_LISTENING.search(line.text)
        if match is not None:
            return portOf(match.group("address"))
    return None


def workerIndex(commandLine: Sequence[str]) -> int | None:
    """The worker index in a worker's command line (C{-m echotwist.workers I ...})."""
    for position, argument in enumerate(commandLine[:-1]):
        if argument == "echotwist.workers" and commandLine[position + 1].isdigit():
            return int(commandLine[position + 1])
    return None


def listeningWorkers(lines: Iterable[LogLine]) -> list[tuple[LogLine, int, int]]:
    """Every C{Worker I (pid P) listening} line, with I and P."""
    found = []
    for line in lines:
        match = WORKER_LISTENING.search(line.text)
        if match is not None:
            found.append((line, int(match.group("index")), int(match.group("pid"))))
    return found


def replacementOf(kill: Kill, lines: Sequence[LogLine]) -> Replacement:
    """What the log says about C{kill}: the worker's exit, and its replacement.

    The exit is the first C{Worker I exited} line for the killed worker's
    index after the kill.  The replacement is the first worker listening
    after the kill with a new pid and the killed worker's index (any index
    if the killed worker's is unknown).
    """
    after = [line for line in lines if line.at >= kill.at]
    exited = why = None
    for line in after:
        match = WORKER_EXITED.search(line.text)
        if match is not None and (
            kill.index is None or int(match.group("index")) == kill.index
        ):
            exited, why = line.at - kill.at, match.group("why").strip()
            break
    for line, index, pid in listeningWorkers(after):
        if pid != kill.pid and (kill.index is None or index == kill.index):
            return Replacement(kill, exited, why, line.at - kill.at, pid)
    return Replacement(kill, exited, why)


def reloadTime(
    at: float, before: Iterable[int], workers: int, lines: Iterable[LogLine]
) -> float | None:
    """Seconds from C{at} until C{workers} new workers had logged that they listen.

    New means a pid not in C{before} (the workers running at C{at}).  None
    if fewer than C{workers} new ones ever did.
    """
    old = set(before)
    seen: dict[int, float] = {}
    for line, _, pid in listeningWorkers(line for line in lines if line.at >= at):
        if pid not in old and pid not in seen:
            seen[pid] = line.at - at
            if len(seen) == workers:
                return max(seen.values())
    return None
