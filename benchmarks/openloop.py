"""The open loop's schedule against a C generator's, in the same run.

  python benchmarks/openloop.py [--rate 50000] [--connections 50]
      [--size 512] [--seconds 5] [--rounds 5]

How late a generator reaches its sends (its schedule delay: when the
send was made, or found its connection busy and was held, minus when it
was due) depends on the machine as much as on the generator: a host that
takes the CPU away for a moment makes every send due meanwhile late.  So
the bench's figure is shown beside that of C{build/loadgen -m openloop}
(benchmarks/loadgen.c), a C generator on the same schedule (send n due at
start + n / rate, on connection n mod connections, one message in flight
per connection) that does the least work per message and never sleeps:
the delay it leaves is what this machine leaves any generator.

Each round runs both, in turns (the order alternates), against one
C{twistd -n echo} on the first CPU, with the generator on the second
(C{taskset}).  The table gives each tool's median over the rounds of the
schedule delay's p50, p90, p99 and p99.9, then every round's p99 with the
host's steal during it; JSON in C{build/openloop.json}.

Needs gcc and the C{bench} extra (installed if missing, as
C{benchmarks/crosscheck.py} does).  Linux, loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from echotwist.bench.cpustat import readCpuTimes, stealPercent

if not __package__:
    # Run as a script: import the source tree's benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.crosscheck import (
    ROOT,
    Server,
    ensureLoadgen,
    ensureTools,
    pinned,
    run,
    saveJson,
)

FIGURES = ("p50", "p90", "p99", "p999")
TOOLS = ("bench", "loadgen")


@dataclass
class Run:
    """One generator's run: its schedule delay (us), its rate, the host's steal.

    C{heldPercent}: the sends held for an echo, per 100 echoes measured.
    """

    p50: float
    p90: float
    p99: float
    p999: float
    sendsPerSecond: float
    heldPercent: float
    stealPercent: float | None


def parseBench(output: str) -> Run:
    """The schedule delay of a C{python -m echotwist.bench --json --rate} run."""
    report = json.loads(output)
    return _run(report["schedule_delay"], report["echoes_per_s"], report["held_sends"],
                report["echoes"])  # fmt: skip


def parseLoadgen(output: str) -> Run:
    """The schedule delay of a C{loadgen -m openloop} run (its last line)."""
    report = json.loads(output.strip().splitlines()[-1])
    return _run(report["schedule_delay"], report["sends_per_s"], report["held"],
                report["echoes"])  # fmt: skip


def _run(delay: dict[str, float], rate: float, held: int, echoes: int) -> Run:
    p50, p90, p99, p999 = (float(delay[f"{name}_us"]) for name in FIGURES)
    return Run(p50, p90, p99, p999, float(rate), 100.0 * held / (echoes or 1), None)


def generate(tool: str, port: int, args: argparse.Namespace) -> Run:
    """One run of C{tool} against the server on C{port}, with its steal."""
    load = ["-c", str(args.connections), "-s", str(args.size),
            "-d", str(args.seconds), "-w", "1"]  # fmt: skip
    before = readCpuTimes()
    if tool == "bench":
        command = [*pinned(1), sys.executable, "-m", "echotwist.bench", "--json",
                   "--rate", str(args.rate), *load, f"127.0.0.1:{port}"]  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = parseBench(run(command, cwd=ROOT, env=environment))
    else:
        command = [*pinned(1), str(ensureLoadgen()), "-m", "openloop",
                   "-r", str(args.rate), *load, "-p", str(port)]  # fmt: skip
        result = parseLoadgen(run(command))
    result.stealPercent = stealPercent(before, readCpuTimes())
    return result


def tableLines(runs: dict[str, list[Run]]) -> list[str]:
    """Each tool's medians over the rounds, then each round's p99 and steal."""
    lines = [
        f"{'generator':<10}"
        + "".join(f" {name + ' us':>9}" for name in FIGURES)
        + f" {'sends/s':>9} {'held':>6}"
    ]
    for tool, results in runs.items():
        medians = [
            statistics.median(getattr(r, name) for r in results) for name in FIGURES
        ]
        rate = statistics.median(r.sendsPerSecond for r in results)
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
    ensureTools(sockperf=False)
    runs: dict[str, list[Run]] = {tool: [] for tool in TOOLS}
    server = Server()
    try:
        for number in range(args.rounds):
            order = TOOLS if number % 2 == 0 else TOOLS[::-1]
            for tool in order:
                runs[tool].append(generate(tool, server.tcpPort, args))
    finally:
        server.stop()
    print("\n".join(tableLines(runs)))
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
        },
    )


if __name__ == "__main__":
    main()
