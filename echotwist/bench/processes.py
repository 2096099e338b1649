"""The bench's processes: its open-file limit, signals, and load processes.

L{raiseFileLimit} gives one load process the descriptors its connections
need; L{Interrupt} turns SIGINT and SIGTERM into a Deferred so that an
interrupted run still reports; L{runProcesses} starts the C{--processes}
children (C{python -m echotwist.bench --child ...}), each with its share
of the connections, and merges their reports; L{watchParent} ends a
child whose parent has gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorProcess, IReactorThreads, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from echotwist.bench.arguments import (
    childArguments,
    holdSources,
    sourceAddresses,
    splitEvenly,
)
from echotwist.bench.report import fail
from echotwist.bench.results import Results, resultsFromChild
from echotwist.server.limits import FILE_HEADROOM, fileLimitTarget, filesNeeded

# Seconds interrupted load processes get to print what they measured.
CHILD_GRACE = 10.0

GetFileLimit = Callable[[], tuple[int, int]]
SetFileLimit = Callable[[int, int], None]


def getFileLimit() -> tuple[int, int]:
    """The soft and hard C{RLIMIT_NOFILE} of this process."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def setFileLimit(soft: int, hard: int) -> None:
    """Set this process's C{RLIMIT_NOFILE} (its children inherit it)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fileLimitError(
    connections: int, total: int, getLimit: GetFileLimit = getFileLimit
) -> str | None:
    """Why the hard C{RLIMIT_NOFILE} is too low for C{connections} in one
    load process (of a run of C{total}), or C{None} if it is not.

    C{getLimit} reads the soft and hard limits.
    """
    needed = filesNeeded(connections)
    _soft, hard = getLimit()
    if hard == resource.RLIM_INFINITY or needed <= hard:
        return None
    fewest = math.ceil(total / max(1, hard - FILE_HEADROOM))
    each = "" if connections == total else " per process"
    return (
        f"{connections} connections{each} need {needed} open files; the hard"
        f" limit is {hard} (use --processes {fewest} or more)"
    )


def raiseFileLimit(
    connections: int,
    getLimit: GetFileLimit = getFileLimit,
    setLimit: SetFileLimit = setFileLimit,
) -> None:
    """Raise the soft open-file limit to what C{connections} need (up to the
    hard limit), or fail with one line when the hard limit is too low.

    C{getLimit} and C{setLimit} read and set the soft and hard limits.
    """
    error = fileLimitError(connections, connections, getLimit)
    if error is not None:
        fail(error)
    soft, hard = getLimit()
    # The server's rule (echotwist.server.limits): up to what the connections
    # need, never above the hard limit, never lower (an unlimited soft
    # limit stays).
    target = fileLimitTarget(connections, soft, hard)
    if target is not None:
        setLimit(target, hard)


class Interrupt:
    """SIGINT and SIGTERM as a Deferred, instead of a silent reactor stop.

    Twisted's own handlers stop the reactor, and L{task.react
    <twisted.internet.task.react>} then exits 0 with nothing printed.
    These replace them once the reactor runs (it installs its own during
    startup), so the run can report what it measured, stop its children,
    and exit 128 + the signal number.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self.signalled: Deferred[int] = Deferred()

    def install(self) -> None:
        """Take over SIGINT and SIGTERM."""
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self.handle)

    def handle(self, number: int, frame: FrameType | None) -> None:
        """A signal handler: hand the signal to the reactor thread."""
        cast(IReactorThreads, self.reactor).callFromThread(self.fire, number)

    def fire(self, number: int) -> None:
        """Signal C{number} arrived (the first one counts)."""
        if not self.signalled.called:
            self.signalled.callback(number)


def watchParent(descriptor: int, interrupt: Interrupt) -> threading.Thread:
    """In a C{--child}: end as if by SIGTERM once the parent's pipe closes.

    The parent keeps the child's standard input open; it closes when the
    parent exits, however it exits (even by SIGKILL), so a child never
    outlives it.  A blocking read in a daemon thread is the plain way to
    see that end without taking standard output away from C{print}; it
    reads the descriptor itself, because a daemon thread blocked inside
    C{sys.stdin}'s buffer lock aborts the interpreter at exit.
    """
    reactor = cast(IReactorThreads, interrupt.reactor)

    def read() -> None:
        try:
            while os.read(descriptor, 4096):
                pass
        except OSError:
            pass
        reactor.callFromThread(interrupt.fire, signal.SIGTERM)

    watcher = threading.Thread(target=read, name="watch-parent", daemon=True)
    watcher.start()
    return watcher


class ChildProcess(ProcessProtocol):
    """A C{--child} load process: its output, and a way to stop it."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[tuple[bytes, bytes]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Collect the child's JSON report."""
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        """Collect the child's error lines."""
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        """The child is gone: hand over what it wrote."""
        self.ended.callback((b"".join(self.out), b"".join(self.err)))

    def stop(self, number: int) -> None:
        """Pass signal C{number} on to the child, if it still runs."""
        if self.transport is not None and not self.ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess(number)


class RunProcesses(Protocol):
    """The signature of L{runProcesses}, for callers that take it as a parameter."""

    def __call__(
        self,
        reactor: IReactorTime,
        args: argparse.Namespace,
        argv: Sequence[str],
        children: list[ChildProcess],
        *,
        address: str | None = None,
        getLimit: GetFileLimit = ...,
    ) -> Awaitable[Results]:
        """Run the load processes; their merged results."""


async def runProcesses(
    reactor: IReactorTime,
    args: argparse.Namespace,
    argv: Sequence[str],
    children: list[ChildProcess],
    *,
    address: str | None = None,
    getLimit: GetFileLimit = getFileLimit,
) -> Results:
    """Run C{--processes} children, each with its share, and merge them.

    Each child started is appended to C{children} at once (so that an
    interrupt can reach it).  In hold mode against a loopback
    C{address}, each child binds to source addresses of its own
    (L{holdSources}).  A hard file limit too low for a child's share
    (read with C{getLimit}) fails before any child starts; a child that
    does not report fails the run with its last error line.
    """
    shares = splitEvenly(args.connections, args.processes)
    error = fileLimitError(max(shares), args.connections, getLimit)
    if error is not None:
        fail(error)
    spread = (
        args.mode == "hold"
        and address is not None
        and sourceAddresses(address, "hold", 1, None) != (None,)
    )
    base = childArguments(argv, ("--sources",) if spread else ())
    sources = holdSources(shares, args.sources)
    for share, (first, count) in zip(shares, sources, strict=True):
        childArgv = [*base, "--child", "--connections", str(share)]
        if spread:
            childArgv += ["--first-source", str(first), "--sources", str(count)]
        if args.rate is not None:
            childArgv += ["--rate", repr(args.rate * share / args.connections)]
        child = ChildProcess()
        # Standard input stays an open pipe: the child ends when it closes.
        cast(IReactorProcess, reactor).spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-m", "echotwist.bench", *childArgv],
            env=dict(os.environ),
        )
        children.append(child)
    merged: Results | None = None
    for child in children:
        out, err = await child.ended
        try:
            results = resultsFromChild(json.loads(out.decode("utf-8")))
        except (ValueError, KeyError):
            lines = err.decode("utf-8", "replace").strip().splitlines()
            fail(lines[-1] if lines else "a load process failed")
        if merged is None:
            merged = results
        else:
            merged.add(results)
    assert merged is not None
    merged.processes, merged.runs = len(shares), 1
    return merged
