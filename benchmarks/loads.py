"""Driving a server with the compiled load generator (C{build/loadgen}).

Ping-pong loads from one or several load generators at once, metered over
their common measured window, and idle connections held open while the
server's memory or the workers' share of them is read.  The load
generator prints C{measuring} and C{done} at the edges of its window and
one JSON object with its result.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from benchmarks.catalogue import Workload
from benchmarks.control import WAIT, Running
from benchmarks.meter import Meter, rssKiB
from benchmarks.procstat import Spread, childPids, connectionsOf

T = TypeVar("T")


def pingpongTogether(
    loadgens: Sequence[Sequence[str]],
    running: Running,
    workload: Workload,
    seconds: float,
    warmup: float,
    *,
    meter: Meter | None = None,
) -> tuple[dict[str, Any], Meter]:
    """Run C{workload} from each of C{loadgens} at once; return the result and meter.

    Each load generator announces the edges of its measured window; the
    meter starts once every one has started measuring and stops once every
    one is done.  Their windows are of the same length and start within
    C{start_skew_s} of each other (milliseconds), so the server's CPU is
    sampled over their windows to within that skew.

    With one load generator (C{[loadgen]}) the result is its own; with
    several, their C{echoes} and C{echoes_per_s} summed, C{start_skew_s}
    (how far apart their windows started) and each one's own result under
    C{loads}.
    Without C{meter}, the server's own process is metered.
    """
    if meter is None:
        meter = Meter([running.process.pid])
    arguments = pingpongArguments(running.port, workload, seconds, warmup)
    processes = [
        subprocess.Popen([*loadgen, *arguments], stdout=subprocess.PIPE, text=True)
        for loadgen in loadgens
    ]
    results: list[dict[str, Any]] = []
    statuses: list[int] = []
    try:
        starts = [_waitLine(process, "measuring") for process in processes]
        meter.start()
        for process in processes:
            _waitLine(process, "done")
        meter.stop()
        for process in processes:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("{"):
                    results.append(json.loads(line))
            statuses.append(process.wait(seconds + warmup + WAIT))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if (
        any(statuses)
        or len(results) != len(processes)
        or not all(result["echoes"] for result in results)
    ):
        raise RuntimeError(
            f"{running.server.name} {workload.name}: load generator failed "
            f"(statuses {statuses}, results {results})"
        )
    if len(results) == 1:
        return results[0], meter
    return {
        "echoes": sum(result["echoes"] for result in results),
        "echoes_per_s": sum(result["echoes_per_s"] for result in results),
        "start_skew_s": max(starts) - min(starts),
        "loads": results,
    }, meter


def pingpongArguments(
    port: int, workload: Workload, seconds: float, warmup: float
) -> list[str]:
    """The load generator's arguments for C{workload} against C{port}."""
    return [
        "-p",
        str(port),
        "-c",
        str(workload.conns),
        "-s",
        str(workload.size),
        "-d",
        str(seconds),
        "-w",
        str(warmup),
    ]


def _waitLine(process: subprocess.Popen[str], prefix: str) -> float:
    """Read C{process}'s output up to a line starting C{prefix}; return when.

    The load generator ends within its duration, so this read ends too: at
    the line, or at the end of its output (then the caller finds no result).
    """
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(prefix):
            break
    return time.monotonic()


def holdingIdle(
    loadgen: Sequence[str], running: Running, conns: int, measure: Callable[[], T]
) -> T:
    """Hold C{conns} idle connections; return what C{measure} reads meanwhile."""
    process = subprocess.Popen(
        [*loadgen, "-m", "idle", "-p", str(running.port), "-c", str(conns), "-H", "60"],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        line = process.stdout.readline()
        result = json.loads(line) if line.startswith("{") else {}
        if result.get("established") != conns:
            raise RuntimeError(f"{running.server.name}: idle setup failed: {line!r}")
        return measure()
    finally:
        process.stdin.close()
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def idleMemory(loadgen: Sequence[str], running: Running, conns: int) -> tuple[int, int]:
    """Hold C{conns} idle connections; return server RSS KiB before and with."""
    before = rssKiB(running.process.pid)

    def measure() -> int:
        # Let the server finish logging and settle before reading its RSS.
        time.sleep(0.5)
        return rssKiB(running.process.pid)

    return before, holdingIdle(loadgen, running, conns, measure)


def idleSpread(loadgen: Sequence[str], running: Running, conns: int) -> Spread:
    """Hold C{conns} idle connections; return how the workers hold them."""
    workers = childPids(running.process.pid)

    def measure() -> Spread:
        # The load generator has its connections; the workers may still be
        # accepting the last of them.
        deadline = time.monotonic() + WAIT
        spread = connectionsOf(workers, running.port)
        while spread.total < conns and time.monotonic() < deadline:
            time.sleep(0.1)
            spread = connectionsOf(workers, running.port)
        return spread

    return holdingIdle(loadgen, running, conns, measure)
