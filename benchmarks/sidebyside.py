"""The C{servers} section: every server on every workload, side by side.

Servers interleaved and repeated (L{runServers}); a table of medians with
ratios to the canonical Twisted echo (L{serversTable}) and a bar chart
(L{chart}, when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.catalogue import BASELINE, WORKLOADS, Workload, servers
from benchmarks.control import Pinning, Running, loadAverage, machine, pinned
from benchmarks.loads import idleMemory, pingpongTogether
from benchmarks.results import ratio
from echotwist.bench.cpustat import readCpuTimes, stealPercent


@dataclass
class Samples:
    """What the repetitions of one server on one workload measured."""

    echoesPerSecond: list[float] = field(default_factory=list)
    cpuMicrosPerEcho: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    # The host's steal during each round's load, in percent (Linux).
    steal: list[float] = field(default_factory=list)


def median(values: Sequence[float]) -> float:
    """The median of C{values}; NaN when a server failed every round."""
    return statistics.median(values) if values else math.nan


def number(value: float, spec: str) -> str:
    """C{value} formatted with C{spec}, or C{failed} for NaN."""
    return "failed" if math.isnan(value) else format(value, spec)


def serversTable(
    names: Sequence[str],
    samples: dict[tuple[str, str], Samples],
    idle: dict[str, float],
) -> list[str]:
    """The results as markdown table lines (medians, ratios to the baseline)."""
    med = median

    def rate(name: str, workload: Workload) -> float:
        return med(samples[name, workload.name].echoesPerSecond)

    def cpu(name: str) -> float:
        return med(samples[name, heavy.name].cpuMicrosPerEcho)

    def idleText(name: str) -> str:
        return f"{idle[name]:,.0f}" if name in idle else "-"

    heavy, single, bulk = WORKLOADS
    header = (
        f"| server | {heavy.name} echoes/s | vs twisted | CPU µs/echo "
        f"| echoes/CPU-s | vs twisted "
        f"| {single.name} echoes/s | vs twisted | p50 µs | p99 µs "
        f"| {bulk.name} echoes/s | vs twisted | MB/s "
        f"| idle B/conn |"
    )
    lines = [header, "|" + "---|" * 14]
    for name in names:
        one = samples[name, single.name]
        cells = [
            name,
            number(rate(name, heavy), ",.0f"),
            ratio(rate(name, heavy), rate(BASELINE, heavy)),
            number(cpu(name), ".2f"),
            number(1e6 / cpu(name), ",.0f"),
            ratio(cpu(BASELINE), cpu(name)),
            number(rate(name, single), ",.0f"),
            ratio(rate(name, single), rate(BASELINE, single)),
            number(med(one.p50), ".0f"),
            number(med(one.p99), ".0f"),
            number(rate(name, bulk), ",.0f"),
            ratio(rate(name, bulk), rate(BASELINE, bulk)),
            number(rate(name, bulk) * bulk.size / 1e6, ",.0f"),
            idleText(name),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def peerTable(
    names: Sequence[str], samples: dict[tuple[str, str], Samples], peer: str
) -> list[str]:
    """Echoes/s of every server as a ratio to C{peer}'s, per workload.

    The markdown lines of a table (medians); nothing if C{peer} did not run.
    """
    if not any(name == peer for name in names):
        return []
    med = median

    def rate(name: str, workload: Workload) -> float:
        return med(samples[name, workload.name].echoesPerSecond)

    lines = [
        f"| server (echoes/s vs {peer}) | "
        + " | ".join(w.name for w in WORKLOADS)
        + " |",
        "|" + "---|" * (len(WORKLOADS) + 1),
    ]
    for name in names:
        cells = [ratio(rate(name, w), rate(peer, w)) for w in WORKLOADS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def chart(
    names: Sequence[str], samples: dict[tuple[str, str], Samples], path: Path
) -> bool:
    """Draw both ratios to the baseline per workload; False without matplotlib.

    Left: echoes per second of server CPU (robust on a shared machine);
    right: echoes per second.
    """
    try:
        # matplotlib is an optional extra (bench-chart): imported by name so
        # the benchmark still runs, without a chart, where it is missing.
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    figure, panels = pyplot.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    med = median
    width = 0.8 / len(names)

    def perCpu(name: str, workload: Workload) -> float:
        return 1.0 / med(samples[name, workload.name].cpuMicrosPerEcho)

    def perSecond(name: str, workload: Workload) -> float:
        return med(samples[name, workload.name].echoesPerSecond)

    measures = (
        (panels[0], perCpu, "echoes per server CPU-second"),
        (panels[1], perSecond, "echoes per second"),
    )
    for axes, measure, title in measures:
        for index, name in enumerate(names):
            ratios = [measure(name, w) / measure(BASELINE, w) for w in WORKLOADS]
            positions = [i + index * width for i in range(len(WORKLOADS))]
            bars = axes.bar(positions, ratios, width, label=name)
            axes.bar_label(bars, fmt="%.2f", fontsize=6)
        axes.set_xticks(
            [i + width * (len(names) - 1) / 2 for i in range(len(WORKLOADS))]
        )
        axes.set_xticklabels([w.name for w in WORKLOADS])
        axes.axhline(1.0, color="grey", linewidth=0.8)
        axes.set_title(f"{title}, relative to the canonical Twisted echo", fontsize=10)
    panels[0].set_ylabel("ratio (median of rounds)")
    panels[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle("Echo servers pinned to one core, loopback")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def measureRound(
    arguments: argparse.Namespace,
    loadgen: Sequence[str],
    running: Running,
    *,
    rep: int,
    samples: dict[tuple[str, str], Samples],
    restart: Callable[[], Running],
) -> Running:
    """Put every workload on C{running}'s server once; record the samples.

    Return the server left running (a fresh one from C{restart} if a load
    failed).
    """
    server = running.server
    for workload in WORKLOADS:
        before = readCpuTimes()
        try:
            result, meter = pingpongTogether(
                [loadgen],
                running,
                workload,
                arguments.seconds,
                arguments.warmup,
            )
        except RuntimeError as e:
            # A peer that stalls (rloop 0.5 did here) is reported as
            # failed for this round, not fatal; a fresh server takes the
            # next load.
            print(f"round {rep + 1} {server.name:16} failed: {e}", flush=True)
            running.stop()
            running = restart()
            continue
        steal = stealPercent(before, readCpuTimes())
        cpu = meter.cpuMicrosPerEcho(result["echoes"])
        sample = samples[server.name, workload.name]
        if steal is not None:
            sample.steal.append(steal)
        sample.echoesPerSecond.append(result["echoes_per_s"])
        sample.cpuMicrosPerEcho.append(cpu)
        sample.p50.append(result["p50_us"])
        sample.p99.append(result["p99_us"])
        print(
            f"round {rep + 1} {server.name:16} {workload.name:9}"
            f" {result['echoes_per_s']:>10,.0f} echoes/s"
            f" {cpu:6.2f} µs CPU/echo"
            f" p50 {result['p50_us']:.0f} µs"
            f" p99 {result['p99_us']:.0f} µs"
            + ("" if steal is None else f" host steal {steal:.1f}%"),
            flush=True,
        )
    return running


def stealLine(samples: dict[tuple[str, str], Samples]) -> str | None:
    """The host's steal over every round's load: median and most; None if
    it was not read.
    """
    shares = [share for sample in samples.values() for share in sample.steal]
    if not shares:
        return None
    return (
        f"Host steal during the loads (the hypervisor's share of the CPU time):"
        f" median {statistics.median(shares):.1f} %, at most {max(shares):.1f} %"
        " (compare runs with the same, low steal)."
    )


def runServers(
    arguments: argparse.Namespace,
    loadgen: Sequence[str],
    pinning: Pinning,
    logs: Path,
    output: Path,
) -> tuple[str, dict[str, Any]]:
    """Every server on every load, interleaved and repeated.

    Return the section's markdown and raw samples; draw the chart.
    """
    candidates = servers(sys.executable)
    if arguments.servers:
        wanted = set(arguments.servers.split(",")) | {BASELINE}
        candidates = [s for s in candidates if s.name in wanted]
    serverCpu = pinning.serverCpu
    loadgen = pinned(loadgen, pinning.loadCpu)
    names = [s.name for s in candidates]
    samples = {(s.name, w.name): Samples() for s in candidates for w in WORKLOADS}
    idle: dict[str, float] = {}
    loadBefore = loadAverage()
    for server in candidates:
        print(f"  {server.name}: {' '.join(pinned(server.command, serverCpu))}")
    for rep in range(arguments.reps):
        # Interleave the servers in every round, so that noise from the
        # shared machine is spread over all of them.
        order = candidates if rep % 2 == 0 else candidates[::-1]
        for server in order:
            running = Running(server, serverCpu, logs)
            try:
                running = measureRound(
                    arguments,
                    loadgen,
                    running,
                    rep=rep,
                    samples=samples,
                    restart=partial(Running, server, serverCpu, logs),
                )
            finally:
                running.stop()
    for server in candidates:
        # A fresh server, so its RSS holds nothing from earlier loads.
        running = Running(server, serverCpu, logs)
        try:
            before, after = idleMemory(loadgen, running, arguments.idle)
        finally:
            running.stop()
        idle[server.name] = (after - before) * 1024 / arguments.idle
        print(
            f"idle {server.name:16} RSS {before} KiB -> {after} KiB with "
            f"{arguments.idle} connections: {idle[server.name]:,.0f} B/conn",
            flush=True,
        )
    lines = serversTable(names, samples, idle)
    peers = peerTable(names, samples, "uvloop")
    if peers:
        lines += ["", *peers]
    context = [
        f"Machine: {machine()}.",
        f"Load average (1, 5, 15 min) before the run {loadBefore} (other work"
        f" on the machine), after it {loadAverage()} (including the"
        " benchmark's own server and load generator, about 2).",
        *([] if (stolen := stealLine(samples)) is None else [stolen]),
        f"{pinning.describe().capitalize()}; "
        f"{arguments.reps} interleaved round(s) of {arguments.seconds:g} s per "
        f"load after {arguments.warmup:g} s warm-up; medians; idle RSS at "
        f"{arguments.idle} connections.",
        "",
        *[f"- `{s.name}`: {s.note}" for s in candidates],
        "",
    ]
    raw: dict[str, Any] = {
        f"{name} {workload}": vars(sample)
        for (name, workload), sample in samples.items()
    }
    raw["idle B/conn"] = dict(idle)
    print()
    print("\n".join(lines))
    if chart(names, samples, output / "results.png"):
        print(f"\nwrote {output / 'results.png'}")
    else:
        print("\nno chart: matplotlib missing")
    return "\n".join([*context, *lines]), raw
