"""The fault scenarios: each starts a fresh server, loads it, injects, measures.

Every scenario runs C{twistd -n --pidfile= echo --workers N} with the
bench (C{python -m echotwist.bench}, open loop at a fixed rate) and the
prober (L{benchmarks.prober}: a connection every 20 ms) against it, and
returns one L{Row}: kill -9 of a worker every period, SIGHUP every
period, a soak with the server's memory sampled, and network faults
between two namespaces (L{benchmarks.netfaults}).  The waits between
injections are single bounded sleeps inside loops of a fixed count; every
process is a L{Children} child, stopped here and killed again by the
caller's cleanup if anything is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.faultprocesses import (
    Children,
    EchoServer,
    Job,
    oldestWorker,
    startBench,
    startProber,
)
from benchmarks.faultresults import (
    Row,
    formatErrorKinds,
    killProblems,
    networkProblems,
    recoveryAfter,
    reloadProblems,
    soakProblems,
    soakSlope,
)
from benchmarks.netfaults import SERVER_ADDRESS, CommandFailed, NamespacePair
from benchmarks.procstat import connectionsOf
from benchmarks.supervisorlog import Kill, Replacement, reloadTime, replacementOf

# Seconds the bench takes to open its connections before its warm-up.
SETUP = 0.3
# Seconds the prober goes on after the bench, with the network fault off.
AFTER_FAULT = 4.0


@dataclass(frozen=True)
class Settings:
    """Durations, rates and sizes of every scenario."""

    logDir: Path
    workers: int = 2
    connections: int = 20
    rate: float = 2000.0
    netRate: float = 500.0
    warmup: float = 1.0
    # kill -9 and SIGHUP: one every period, for the window.
    window: float = 60.0
    period: float = 10.0
    soakSeconds: float = 600.0
    soakInterval: float = 10.0
    soakWarmup: float = 120.0
    maxSlope: float = 64.0
    baselineSeconds: float = 8.0
    lossSeconds: float = 15.0
    blackoutRun: float = 12.0
    blackoutAt: float = 4.0
    blackoutSeconds: float = 2.0
    idleTimeout: float = 1.0
    bandwidthSeconds: float = 10.0
    held: int = 10


def sleepUntil(moment: float) -> None:
    """Sleep until C{time.monotonic()} reaches C{moment} (at once if past)."""
    time.sleep(max(0.0, moment - time.monotonic()))


def takeBench(row: Row, job: Job) -> dict[str, Any] | None:
    """Put the bench's figures into C{row}; return its report."""
    report, stderr = job.result()
    if report is None:
        said = stderr.splitlines()[-1] if stderr else "no output"
        row.problems.append(f"bench gave no report ({said})")
        return None
    row.echoesPerSecond = report.get("achieved_rate", report["echoes_per_s"])
    row.errorKinds = dict(report["error_kinds"])
    row.p50ms = report["p50_us"] / 1000
    row.p99ms = report["p99_us"] / 1000
    row.details["bench"] = {k: v for k, v in report.items() if k != "machine"}
    target = report.get("target_rate")
    row.notes.append(
        f"bench: {row.echoesPerSecond:,.0f} of {target:,.0f} echoes/s target,"
        f" errors: {formatErrorKinds(row.errorKinds)}"
        if target
        else f"bench errors: {formatErrorKinds(row.errorKinds)}"
    )
    return report


def takeProber(row: Row, job: Job) -> dict[str, Any] | None:
    """Put the prober's counts into C{row}; return its report."""
    report, stderr = job.result()
    if report is None:
        said = stderr.splitlines()[-1] if stderr else "no output"
        row.problems.append(f"prober gave no report ({said})")
        return None
    counts = report["counts"]
    row.refused = counts["refused"]
    row.details["prober"] = {k: v for k, v in report.items() if k != "failures"}
    failures = report["failures"]
    if failures:
        row.details["prober"]["first_failures"] = failures[:20]
        row.details["prober"]["last_failures"] = failures[-5:]
    others = {k: n for k, n in counts.items() if n and k not in ("ok", "refused")}
    note = f"prober: {counts['ok']} of {report['attempts']} connections echoed"
    note += f", {counts['refused']} refused"
    if others:
        note += ", " + formatErrorKinds(others)
    if failures and counts["refused"]:
        first = next(t for t, kind in failures if kind == "refused")
        last = [t for t, kind in failures if kind == "refused"][-1]
        note += (
            f" (refused from {first - report['started']:.1f} s"
            f" to {last - report['started']:.1f} s after the prober started)"
        )
    row.notes.append(note)
    return report


def startLoad(
    children: Children, server: EchoServer, s: Settings, seconds: float | None = None
) -> tuple[Job, Job, float]:
    """Start the prober, then the open-loop bench, against C{server}.

    The bench measures for C{seconds} (the scenario window if not given).
    Return both jobs and when the bench starts measuring.
    """
    if seconds is None:
        seconds = s.window
    prober = startProber(
        children, "127.0.0.1", server.port, seconds=seconds + s.warmup + 4
    )
    # The prober connects first, so its count covers the bench's set-up.
    time.sleep(0.5)
    bench = startBench(
        children,
        "127.0.0.1",
        server.port,
        connections=s.connections,
        rate=s.rate,
        seconds=seconds,
        warmup=s.warmup,
    )
    return prober, bench, bench.started + SETUP + s.warmup


def runKills(children: Children, settings: Settings) -> Row:
    """Kill -9 the longest-running worker every period, under load."""
    s = settings
    kills = max(1, round(s.window / s.period) - 1)
    row = Row(f"kill -9 a worker every {s.period:g} s (x{kills})")
    server = EchoServer(children, s.logDir / "kill.log", s.workers)
    done: list[Kill] = []
    missing = 0
    try:
        prober, bench, measuring = startLoad(children, server, s)
        for k in range(1, kills + 1):
            sleepUntil(measuring + k * s.period)
            victim = oldestWorker(server.workerPids())
            if victim is None:
                missing += 1
                row.notes.append(f"no worker left to kill at {k * s.period:g} s")
                continue
            pid, index = victim
            held = connectionsOf([pid], server.port).total
            at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            done.append(Kill(at, pid, index, held))
        takeBench(row, bench)
        takeProber(row, prober)
        lines = server.snapshot()
    finally:
        status = server.stop()
    replacements = [replacementOf(kill, lines) for kill in done]
    replaced = [r.listening for r in replacements if r.listening is not None]
    row.allowed = sum(kill.held for kill in done)
    row.recovery = (
        f"max {max(replaced):.2f} s ({len(replaced)}/{kills})"
        if replaced
        else f"none (0/{kills})"
    )
    row.notes += [describeKill(r, server.started) for r in replacements]
    row.notes.append(f"supervisor exit status at the end: {status}")
    row.details["kills"] = [
        {
            "at_s": round(r.kill.at - server.started, 3),
            "pid": r.kill.pid,
            "index": r.kill.index,
            "connections_held": r.kill.held,
            "exit_logged_after_s": r.exited,
            "exit_reason": r.why,
            "replacement_pid": r.pid,
            "replacement_listening_after_s": r.listening,
        }
        for r in replacements
    ]
    if row.echoesPerSecond is not None:
        row.problems += killProblems(
            row.errorKinds, row.refused, row.allowed, kills, len(replaced)
        )
    return row


def describeKill(replacement: Replacement, started: float) -> str:
    """One note line about one kill and what the log said after it."""
    kill = replacement.kill
    text = (
        f"kill at {kill.at - started:.1f} s of worker {kill.index} (pid {kill.pid},"
        f" {kill.held} connections): "
    )
    if replacement.exited is None:
        text += "no exit logged"
    else:
        text += f"exit logged after {replacement.exited:.3f} s ({replacement.why})"
    if replacement.listening is None:
        return text + "; no replacement listening"
    return (
        text + f"; replacement pid {replacement.pid} listening after"
        f" {replacement.listening:.3f} s"
    )


def runReloads(children: Children, settings: Settings) -> Row:
    """SIGHUP the supervisor every period, under load."""
    s = settings
    reloads = max(1, round(s.window / s.period) - 1)
    row = Row(f"SIGHUP every {s.period:g} s (x{reloads})")
    server = EchoServer(children, s.logDir / "sighup.log", s.workers)
    sent: list[tuple[float, list[int]]] = []
    try:
        prober, bench, measuring = startLoad(children, server, s)
        for k in range(1, reloads + 1):
            sleepUntil(measuring + k * s.period)
            if not server.alive():
                row.notes.append(
                    f"supervisor gone (status {server.process.returncode})"
                    f" before SIGHUP {k}"
                )
                continue
            before = server.workerPids()
            at = time.monotonic()
            server.signal(signal.SIGHUP)
            sent.append((at, before))
        takeBench(row, bench)
        takeProber(row, prober)
        lines = server.snapshot()
        supervisorAlive = server.alive()
    finally:
        status = server.stop()
    times = [reloadTime(at, before, s.workers, lines) for at, before in sent]
    seen = [t for t in times if t is not None]
    row.recovery = (
        f"max {max(seen):.2f} s ({len(seen)}/{reloads})"
        if seen
        else f"none (0/{reloads})"
    )
    for (at, before), took in zip(sent, times, strict=True):
        row.notes.append(
            f"SIGHUP at {at - server.started:.1f} s (workers {before}): "
            + (
                f"{s.workers} new workers listening after {took:.3f} s"
                if took is not None
                else "no new workers listening"
            )
        )
    row.notes.append(
        "supervisor "
        + ("still running at the end" if supervisorAlive else "had exited")
        + f"; exit status {status}"
    )
    row.details["sighups"] = [
        {"at_s": round(at - server.started, 3), "workers_before": before, "took_s": t}
        for (at, before), t in zip(sent, times, strict=True)
    ]
    if row.echoesPerSecond is not None:
        row.problems += reloadProblems(row.errorKinds, row.refused, reloads, len(seen))
    return row


def runSoak(children: Children, settings: Settings) -> Row:
    """A steady open-loop load for the soak's length, RSS sampled throughout."""
    s = settings
    row = Row(f"soak {s.soakSeconds:g} s")
    server = EchoServer(children, s.logDir / "soak.log", s.workers)
    samples: list[tuple[float, int, dict[int, int]]] = []
    try:
        prober, bench, measuring = startLoad(children, server, s, s.soakSeconds)
        for k in range(int(s.soakSeconds / s.soakInterval) + 1):
            sleepUntil(measuring + k * s.soakInterval)
            if bench.done():
                break
            sizes = server.rssKiB()
            samples.append((time.monotonic() - measuring, sum(sizes.values()), sizes))
        takeBench(row, bench)
        takeProber(row, prober)
    finally:
        server.stop()
    slope = soakSlope([(t, kib) for t, kib, _ in samples], s.soakWarmup)
    row.recovery = "-" if slope is None else f"RSS {slope:+.1f} KiB/min"
    if samples:
        first, last = samples[0], samples[-1]
        row.notes.append(
            f"RSS of the supervisor and its {s.workers} workers, summed: {first[1]:,}"
            f" KiB at the start, {last[1]:,} KiB after {last[0]:.0f} s;"
            f" {len(samples)} samples every {s.soakInterval:g} s; slope fitted"
            f" over those after {s.soakWarmup:g} s"
            + ("" if slope is None else f": {slope:+.2f} KiB/min")
        )
    row.details["rss_samples"] = [
        {"t_s": round(t, 2), "kib": kib, "by_pid": by} for t, kib, by in samples
    ]
    row.details["slope_kib_per_min"] = slope
    if row.echoesPerSecond is not None:
        row.problems += soakProblems(row.errorKinds, row.refused, slope, s.maxSlope)
    return row


@dataclass(frozen=True)
class NetworkFault:
    """A fault on the link: applied before the load, or a blackout during it."""

    name: str
    seconds: float
    lossProbability: float | None = None
    rateLimit: str | None = None
    blackout: bool = False
    idleTimeout: float | None = None


def networkFaults(settings: Settings) -> list[NetworkFault]:
    """The network scenarios, in the order they run."""
    s = settings
    blackout = f"blackout {s.blackoutSeconds:g} s"
    return [
        NetworkFault("netns, no fault", s.baselineSeconds),
        NetworkFault("loss 1%", s.lossSeconds, lossProbability=0.01),
        NetworkFault("loss 5%", s.lossSeconds, lossProbability=0.05),
        NetworkFault(blackout, s.blackoutRun, blackout=True),
        NetworkFault(
            f"{blackout}, idle-timeout {s.idleTimeout:g} s",
            s.blackoutRun,
            blackout=True,
            idleTimeout=s.idleTimeout,
        ),
        NetworkFault("tbf 8mbit", s.bandwidthSeconds, rateLimit="8mbit"),
        NetworkFault("tbf 2mbit (overloaded)", s.bandwidthSeconds, rateLimit="2mbit"),
    ]


def runNetwork(
    children: Children, settings: Settings, pair: NamespacePair, fault: NetworkFault
) -> Row:
    """One network fault: server and load in their namespaces, the fault between.

    Loss and rate limits are on from before the load starts until the
    bench ends; a blackout comes during the measured window.  The prober
    goes on for a few seconds after the fault is off, so that each held
    connection shows whether it came back.
    """
    s = settings
    row = Row(fault.name)
    options = (
        []
        if fault.idleTimeout is None
        else ["--idle-timeout", f"{fault.idleTimeout:g}"]
    )
    server = EchoServer(
        children,
        s.logDir / f"net-{re.sub(r'[^a-z0-9]+', '-', fault.name.lower())}.log",
        s.workers,
        interface=SERVER_ADDRESS,
        namespace=pair.serverNamespace,
        options=options,
    )
    undo: list[Callable[[], None]] = []
    began = ended = 0.0
    try:
        if fault.lossProbability is not None:
            lossRule = pair.dropRandomly(fault.lossProbability)
            undo.append(lambda: pair.removeRule(lossRule))
        if fault.rateLimit is not None:
            pair.limitRate(fault.rateLimit)
            undo.append(pair.removeRateLimit)
        prober = startProber(
            children,
            SERVER_ADDRESS,
            server.port,
            seconds=fault.seconds + s.warmup + AFTER_FAULT + 1,
            timeout=3.0,
            hold=s.held,
            namespace=pair.clientNamespace,
        )
        time.sleep(0.5)
        began = time.monotonic()
        bench = startBench(
            children,
            SERVER_ADDRESS,
            server.port,
            connections=s.connections,
            rate=s.netRate,
            seconds=fault.seconds,
            warmup=s.warmup,
            namespace=pair.clientNamespace,
        )
        if fault.blackout:
            sleepUntil(bench.started + SETUP + s.warmup + s.blackoutAt)
            blackout = pair.dropAll()
            began = time.monotonic()
            undo.append(lambda: pair.removeRule(blackout))
            time.sleep(s.blackoutSeconds)
            undo.pop()()
            ended = time.monotonic()
        takeBench(row, bench)
        for step in reversed(undo):
            step()
        undo.clear()
        if not fault.blackout:
            ended = time.monotonic()
        probed = takeProber(row, prober)
    finally:
        # Faults off before the server stops, in reverse order of setting.
        # After an error a step may fail too; the namespaces go anyway.
        for step in reversed(undo):
            with contextlib.suppress(CommandFailed):
                step()
        server.stop()
    held = probed["held"] if probed is not None else []
    row.details["fault"] = {
        "began_s": round(began - server.started, 3),
        "ended_s": round(ended - server.started, 3),
    }
    judgeNetwork(row, fault, held, began, ended)
    return row


def judgeNetwork(
    row: Row,
    fault: NetworkFault,
    held: list[dict[str, Any]],
    began: float,
    ended: float,
) -> None:
    """Fill in C{row}'s recovery, notes and problems after a network fault.

    C{held} are the prober's held connections (its JSON report's), C{began}
    and C{ended} the monotonic times the fault was on.
    """
    times = [
        recoveryAfter([(a, b) for a, b in slot["gaps"]], slot["last_echo"], ended)
        for slot in held
    ]
    back = [t for t in times if t is not None]
    row.details["held_recovery_s"] = times
    if fault.blackout:
        row.recovery = (
            f"{len(back)}/{len(held)} in <= {max(back):.2f} s" if back else "none"
        )
        row.notes.append(
            f"blackout of {ended - began:.2f} s; held prober connections echoing"
            f" again after it ended: {len(back)} of {len(held)}"
            + (
                f" (median {statistics.median(back):.2f} s, longest {max(back):.2f} s)"
                if back
                else ""
            )
        )
    else:
        stalls = [b - a for slot in held for a, b in slot["gaps"] if a < ended]
        row.recovery = f"stall <= {max(stalls):.2f} s" if stalls else "no stall"
        if len(back) < len(held):
            row.notes.append(
                f"{len(held) - len(back)} of {len(held)} held prober connections"
                " did not echo again after the fault was removed"
            )
    closed = sum(slot["closed"] for slot in held)
    if closed:
        row.notes.append(
            f"{closed} held prober connections were closed by the server and reopened"
        )
    stalled = row.errorKinds.get("stalled", 0)
    if stalled and fault.lossProbability is not None:
        row.notes.append(
            f"{stalled} bench connections were waiting over 1 s for an echo when"
            " the run ended (TCP retransmission back-off under loss; allowed here)"
        )
    if row.echoesPerSecond is not None:
        row.problems += networkProblems(
            row.errorKinds,
            row.refused,
            dropsAllowed=fault.idleTimeout is not None,
            stallsAllowed=fault.lossProbability is not None,
            recovered=len(back),
            held=len(held),
        )
