"""The open loop's schedule against a C generator's, in the same run.

  python benchmarks/openloop.py [--rate 50000] [--connections 50]
      [--size 512] [--seconds 5] [--rounds 5] [--output FILE]

How late a generator reaches its sends (its schedule delay: when a send
left, or for one held while its connection waited for an echo, when the
generator reached it; minus when it was due) depends on the machine as
much as on the generator: a host that takes the CPU away for a moment
makes every send due meanwhile late.  So the bench's figure is shown
beside that of C{build/loadgen -m openloop} (benchmarks/loadgen.c), a C
generator on the same schedule (send n due at start + n / rate, on
connection n mod connections, one message in flight per connection)
that does little per message and never sleeps: its delay is about the
least this machine leaves a generator that spins on its own CPU.

Each round runs both, in turns (the order alternates), against one
C{twistd -n echo} (the cross-check's server, C{benchmarks/crosscheck.py})
on the first CPU, with the generator on the second (C{taskset}).  The
table gives each generator's median over its rounds of the schedule
delay's p50, p90, p99 and p99.9, of its echoes per second, and of its
held sends (those that waited for an echo, per 100 echoes); then every
round's p99 with the host's steal over the whole run (start-up
included).  A round whose generator printed no result is left out and
said so.  JSON in C{build/openloop.json}, or C{--output}.

Needs gcc, make and the C{bench} extra (installed if missing, as the
cross-check does).  Linux, loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from echotwist.bench.cpustat import readCpuTimes, stealPercent

if not __package__:
    # Run as a script: import the source tree's benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.crosscheck import (
    ROOT,
    WAIT,
    Server,
    ensureLoadgen,
    ensureTools,
    pinned,
    saveJson,
)

FIGURES = ("p50", "p90", "p99", "p999")
TOOLS = ("bench", "loadgen")


@dataclass
class Run:
    """One generator's run: its schedule delay's percentiles (us), its echoes
    per second, its held sends per 100 echoes, its errors, the host's steal.
    """

    p50: float
    p90: float
    p99: float
    p999: float
    echoesPerSecond: float
    heldPercent: float
    errors: int
    stealPercent: float | None = None


def parseBench(output: str) -> Run:
    """A C{python -m echotwist.bench --json --rate} run's figures."""
    return fromReport(json.loads(output), held="held_sends")


def parseLoadgen(output: str) -> Run:
    """A C{loadgen -m openloop} run's figures (from its last line)."""
    return fromReport(json.loads(output.strip().splitlines()[-1]), held="held")


def fromReport(report: dict[str, Any], held: str) -> Run:
    """A L{Run} from the keys both tools' JSON reports share, and C{held}'s."""
    delay = report["schedule_delay"]
    p50, p90, p99, p999 = (float(delay[f"{name}_us"]) for name in FIGURES)
    heldPercent = 100.0 * report[held] / (report["echoes"] or 1)
    return Run(
        p50,
        p90,
        p99,
        p999,
        float(report["echoes_per_s"]),
        heldPercent,
        report["errors"],
    )


def generate(
    tool: str, loadgen: Path, port: int, args: argparse.Namespace
) -> Run | str:
    """One run of C{tool} against the server on C{port}, with its steal.

    A run that printed no result gives its last line of output instead.
    """
    load = ["-c", str(args.connections), "-s", str(args.size),
            "-d", str(args.seconds), "-w", "1"]  # fmt: skip
    if tool == "bench":
        command = [*pinned(1), sys.executable, "-m", "echotwist.bench", "--json",
                   "--rate", str(args.rate), *load, f"127.0.0.1:{port}"]  # fmt: skip
        parse = parseBench
    else:
        command = [*pinned(1), str(loadgen), "-m", "openloop",
                   "-r", str(args.rate), *load, "-p", str(port)]  # fmt: skip
        parse = parseLoadgen
    before = readCpuTimes()
    # Either tool exits 1 when the run counted errors, and still reports.
    finished = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=args.seconds + WAIT,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    steal = stealPercent(before, readCpuTimes())
    try:
        result = parse(finished.stdout)
    except (ValueError, KeyError, IndexError):
        lines = (finished.stderr or finished.stdout or "no output").strip().splitlines()
        return f"{tool}: no result (exit {finished.returncode}): {lines[-1]}"
    result.stealPercent = steal
    return result


def tableLines(runs: dict[str, list[Run]]) -> list[str]:
    """Each tool's medians over its rounds, then each round's p99 and steal."""
    lines = [
        f"{'generator':<10}"
        + "".join(f" {name + ' us':>9}" for name in FIGURES)
        + f" {'echoes/s':>9} {'held':>6}"
    ]
    for tool, results in runs.items():
        if not results:
            lines.append(f"{tool:<10} no round gave a result")
            continue
        medians = [
            statistics.median(getattr(r, name) for r in results) for name in FIGURES
        ]
        rate = statistics.median(r.echoesPerSecond for r in results)
        held = statistics.median(r.heldPercent for r in results)
        lines.append(
            f"{tool:<10}"
            + "".join(f" {value:>9.1f}" for value in medians)
            + f" {rate:>9.0f} {held:>5.1f}%"
        )
    lines.append("each round's p99 (host steal):")
    for tool, results in runs.items():
        lines.append(
            f"  {tool:<8} "
            + ", ".join(f"{r.p99:.0f} us ({_steal(r.stealPercent)})" for r in results)
        )
    return lines


def _steal(share: float | None) -> str:
    return "steal ?" if share is None else f"{share:.1f} %"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the rounds, print the table, save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50000.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "build/openloop.json")
    args = parser.parse_args(argv)
    ensureTools("gcc", "make")
    loadgen = ensureLoadgen()
    runs: dict[str, list[Run]] = {tool: [] for tool in TOOLS}
    failures: list[str] = []
    server = Server()
    try:
        for number in range(args.rounds):
            order = TOOLS if number % 2 == 0 else TOOLS[::-1]
            for tool in order:
                result = generate(tool, loadgen, server.tcpPort, args)
                if isinstance(result, Run):
                    runs[tool].append(result)
                else:
                    failures.append(result)
    finally:
        server.stop()
    print("\n".join(tableLines(runs) + failures))
    saveJson(
        args.output,
        {
            "rate": args.rate,
            "connections": args.connections,
            "size": args.size,
            "seconds": args.seconds,
            "runs": {
                tool: [asdict(r) for r in results] for tool, results in runs.items()
            },
            "failures": failures,
        },
    )


if __name__ == "__main__":
    main()
