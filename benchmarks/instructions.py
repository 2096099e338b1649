"""User-space instructions per echo, counted by callgrind: repeatable figures.

CPU time per echo on a shared machine moves by tens of percent from run
to run; an instruction count does not (valgrind counts the same total for
the same program and load whatever else the machine is doing).  This runs
each server of C{benchmarks/run.py} (L{benchmarks.catalogue}) under
C{valgrind --tool=callgrind}, warms it up with the load generator, then
counts the instructions the server executes while the load generator
runs a fixed workload, and divides by the echoes done.  Only user space
is counted: the kernel's work (the same system calls for every server
here, one read and one write per echo) is not.  Usage::

    .venv/bin/python benchmarks/instructions.py --loadgen build/loadgen
        [--servers uvloop,echotwist-uvloop] [--conns 1] [--size 64] [--seconds 4]

Servers run about fifty times slower under valgrind, so the echo counts
are small; the instructions of one echo are what is compared.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if not __package__:
    # Run as a script: import the source tree's benchmarks package, as the
    # tests run from the tree's root do.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.catalogue import Server, Workload, servers
from benchmarks.control import WAIT, Running
from benchmarks.loads import pingpongTogether
from benchmarks.results import ratio

# A callgrind profile's total instruction count.
_TOTAL = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def totalInstructions(profile: str) -> int:
    """The total instruction count in the text of a callgrind profile."""
    match = _TOTAL.search(profile)
    if match is None:
        raise ValueError("no summary or totals line in the callgrind profile")
    return int(match.group(1))


def dump(pid: int) -> None:
    """Have callgrind write what it counted so far, and start counting anew."""
    subprocess.run(
        ["callgrind_control", "--dump", str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=WAIT,
    )


def measure(
    server: Server,
    loadgen: Sequence[str],
    workload: Workload,
    seconds: float,
    directory: Path,
) -> tuple[int, int]:
    """Count one server's instructions over a load; return (echoes, instructions)."""
    profile = directory / f"{server.name}.callgrind"
    counted = Server(
        server.name,
        (
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={profile}",
            *server.command,
        ),
        server.note,
        server.environment,
    )
    running = Running(counted, None, directory)
    try:
        # The warm-up's instructions go into the first dump, the measured
        # load's into the second.
        pingpongTogether([loadgen], running, workload, 1.0, 0.0)
        dump(running.process.pid)
        result, _ = pingpongTogether([loadgen], running, workload, seconds, 0.0)
        dump(running.process.pid)
    finally:
        running.stop()
    measured = Path(f"{profile}.2").read_text(errors="replace")
    return int(result["echoes"]), totalInstructions(measured)


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="instructions.py",
        description="User-space instructions per echo, counted by callgrind.",
    )
    parser.add_argument("--loadgen", required=True, help="the compiled loadgen")
    parser.add_argument(
        "--servers",
        default="uvloop,echotwist-uvloop,echotwist-fastepoll,echotwist,twisted",
        help="comma-separated names of benchmarks/run.py's servers",
    )
    parser.add_argument("--conns", type=int, default=1, help="connections (1)")
    parser.add_argument("--size", type=int, default=64, help="bytes per echo (64)")
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="measured seconds (4)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Count each chosen server's instructions per echo; print a table."""
    arguments = parseArguments(argv)
    known = {server.name: server for server in servers(sys.executable)}
    names = arguments.servers.split(",")
    unknown = [name for name in names if name not in known]
    if unknown:
        print(
            f"instructions.py: unknown servers: {', '.join(unknown)}", file=sys.stderr
        )
        return 2
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("instructions.py: valgrind (callgrind) is not installed", file=sys.stderr)
        return 2
    workload = Workload(
        f"{arguments.conns}x{arguments.size}B", arguments.conns, arguments.size
    )
    loadgen = [str(Path(arguments.loadgen).resolve())]
    rows: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="echoinstr-") as directory:
        for name in names:
            echoes, instructions = measure(
                known[name], loadgen, workload, arguments.seconds, Path(directory)
            )
            rows.append((name, echoes, instructions / echoes))
            print(f"{name}: {echoes} echoes, {instructions / echoes:,.0f} per echo")
    first = rows[0][2]
    print()
    print(
        f"| server ({workload.name}) | echoes | instructions/echo | vs {rows[0][0]} |"
    )
    print("|---|---|---|---|")
    for name, echoes, perEcho in rows:
        print(f"| {name} | {echoes:,} | {perEcho:,.0f} | {ratio(perEcho, first)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
