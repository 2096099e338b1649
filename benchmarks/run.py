"""Side-by-side echo benchmark: echotwist against its peers, on loopback.

Starts each server (pinned to CPU 0 when there are two or more CPUs),
drives it with the compiled load generator (pinned to CPU 1), interleaves
the servers, repeats, and prints a table of medians with ratios to the
canonical Twisted echo.  The table (markdown) and a bar chart (PNG, when
matplotlib is installed) are written to C{benchmarks/results/}.

Run it through C{make bench} (which builds the load generator and installs
the peers), or directly::

    .venv/bin/python benchmarks/run.py --loadgen build/loadgen [--quick]

This script reads the options and runs the sections; the rest is in
modules beside it: L{benchmarks.catalogue} (the servers and workloads),
L{benchmarks.control} (starting, pinning and stopping processes; the
machine), L{benchmarks.meter} (server CPU, switches and memory from
C{/proc}, via L{benchmarks.procstat}), L{benchmarks.loads} (driving the
load generator), L{benchmarks.sidebyside} (the C{servers} section: table
and chart), L{benchmarks.workers} (the C{workers} section) and
L{benchmarks.results} (C{results.md} and C{results.json}).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a script (make bench): make the source tree's benchmarks
    # package importable, as it is for the tests run from the tree's root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.control import (
    Pinning,
    cpusAvailable,
    loadAverage,
    machine,
    raiseFileLimit,
)
from benchmarks.results import RESULTS, SECTIONS, writeResults
from benchmarks.sidebyside import runServers
from benchmarks.workers import WORKER_LAYOUTS, WORKER_REACTORS, runWorkers


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loadgen", required=True, help="the compiled loadgen")
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--reps", type=int, help="rounds over all servers")
    parser.add_argument("--seconds", type=float, help="measured seconds per load")
    parser.add_argument("--idle", type=int, help="idle connections for RSS")
    parser.add_argument("--servers", help="comma-separated names to run (default: all)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated sections to run: servers (every server side by"
        " side), workers (echotwist --workers N); default: both",
    )
    parser.add_argument(
        "--workers",
        default="1,2,4",
        help="comma-separated worker counts for the workers section",
    )
    parser.add_argument(
        "--workers-reactors",
        default=",".join(WORKER_REACTORS),
        help="comma-separated reactors for the workers section"
        f" (default: {','.join(WORKER_REACTORS)})",
    )
    parser.add_argument(
        "--workers-cpus",
        default=",".join(WORKER_LAYOUTS),
        help="comma-separated layouts for the workers section: one (all on"
        " one CPU), per-worker (a CPU and a load generator per worker), all"
        " (nothing pinned); the last two need two CPUs and not --quick"
        f" (default: {','.join(WORKER_LAYOUTS)})",
    )
    parser.add_argument(
        "--output", default=str(RESULTS), help="directory for the table and chart"
    )
    arguments = parser.parse_args(argv)
    if arguments.quick:
        defaults = {"reps": 1, "seconds": 1.0, "idle": 2000, "warmup": 0.5}
    else:
        defaults = {"reps": 3, "seconds": 3.0, "idle": 10000, "warmup": 1.0}
    for key, value in defaults.items():
        if getattr(arguments, key, None) is None:
            setattr(arguments, key, value)
    if not (1 <= arguments.reps <= 20 and 0.2 <= arguments.seconds <= 60):
        parser.error("--reps must be 1..20 and --seconds 0.2..60")
    if not 1 <= arguments.idle <= 15000:
        parser.error("--idle must be 1..15000")
    arguments.sections = arguments.sections.split(",")
    unknown = set(arguments.sections) - set(SECTIONS)
    if unknown or not arguments.sections:
        parser.error(f"--sections takes {', '.join(SECTIONS)}")
    counts = arguments.workers.split(",")
    if not all(c.isdigit() and 1 <= int(c) <= 16 for c in counts):
        parser.error("--workers takes worker counts 1..16, comma-separated")
    arguments.workers = sorted({int(c) for c in counts})
    reactors = arguments.workers_reactors.split(",")
    if not reactors or not set(reactors) <= set(WORKER_REACTORS):
        parser.error(f"--workers-reactors takes {', '.join(WORKER_REACTORS)}")
    arguments.workers_reactors = reactors
    layouts = arguments.workers_cpus.split(",")
    if not layouts or not set(layouts) <= set(WORKER_LAYOUTS):
        parser.error(f"--workers-cpus takes {', '.join(WORKER_LAYOUTS)}")
    arguments.workers_cpus = layouts
    return arguments


def main(argv: Sequence[str]) -> int:
    """Run the chosen sections; write their tables into the results."""
    arguments = parseArguments(argv)
    loadgen = [str(Path(arguments.loadgen).resolve())]
    cpus = cpusAvailable()
    pinning = Pinning(None, None)
    if len(cpus) >= 2 and shutil.which("taskset"):
        pinning = Pinning(cpus[0], cpus[1])
    raiseFileLimit(arguments.idle + 256)
    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; load average {loadAverage()}")
    print(pinning.describe())
    markdown: dict[str, str] = {}
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="echobench-") as logs:
        if "servers" in arguments.sections:
            markdown["servers"], raw = runServers(
                arguments, loadgen, pinning, Path(logs), output
            )
        if "workers" in arguments.sections:
            markdown["workers"], raw["workers"] = runWorkers(
                arguments, loadgen, pinning, Path(logs)
            )
    writeResults(output, markdown, raw)
    print(f"wrote {output / 'results.md'} and {output / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
