"""Side-by-side echo benchmark: echotwist against its peers, on loopback.

Starts each server (pinned to CPU 0 when there are two or more CPUs),
drives it with the compiled load generator (pinned to CPU 1), interleaves
the servers, repeats, and prints a table of medians with ratios to the
canonical Twisted echo.  The table (markdown) and a bar chart (PNG, when
matplotlib is installed) are written to C{benchmarks/results/}.

Run it through C{make bench} (which builds the load generator and installs
the peers), or directly::

    .venv/bin/python benchmarks/run.py --loadgen build/loadgen [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.procstat import (
    Spread,
    childPids,
    connectionsOf,
    cpuMicrosPerEcho,
    ratiosToFirst,
    readContextSwitches,
    readStat,
    readStatusKiB,
    roundRatiosToFirst,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVERS_DIR = HERE / "servers"

T = TypeVar("T")

# Every wait on a child process is bounded by this many seconds.
WAIT = 60.0

_PORT_LINES = (
    re.compile(r"^PORT (?P<port>\d+)$", re.MULTILINE),
    re.compile(r"Listening on tcp:127\.0\.0\.1:(?P<port>\d+)"),
)


@dataclass(frozen=True)
class Server:
    """A server under test: its table name and how to start it."""

    name: str
    command: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Workload:
    """A ping-pong load: C{conns} connections each echoing C{size} bytes."""

    name: str
    conns: int
    size: int


@dataclass
class Samples:
    """What the repetitions of one server on one workload measured."""

    echoesPerSecond: list[float] = field(default_factory=list)
    cpuMicrosPerEcho: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)


WORKLOADS = (
    Workload("50x512B", 50, 512),
    Workload("1x64B", 1, 64),
    Workload("10x64KiB", 10, 65536),
)

BASELINE = "twisted"


def servers(python: str) -> list[Server]:
    """The servers compared, the canonical Twisted echo first."""
    # The real twistd script of this interpreter's environment, so the
    # server is found as the installed plugin, as a user runs it.
    twistd = (str(Path(python).parent / "twistd"),)
    listen = ("--listen", "tcp:0:interface=127.0.0.1")
    echotwist = ("-n", "--pidfile=")
    return [
        Server(
            "twisted",
            (python, str(SERVERS_DIR / "twisted_echo.py")),
            "canonical Twisted echo: dataReceived -> transport.write, default "
            "(epoll) reactor",
        ),
        Server(
            "asyncio",
            (python, str(SERVERS_DIR / "asyncio_echo.py")),
            "stdlib asyncio, Protocol echo",
        ),
        Server(
            "uvloop",
            (python, str(SERVERS_DIR / "asyncio_echo.py"), "--uvloop"),
            "asyncio Protocol echo on uvloop",
        ),
        Server(
            "echotwist",
            (*twistd, *echotwist, "echo", *listen),
            "twistd echo, default configuration",
        ),
        Server(
            "echotwist-poll",
            (*twistd, *echotwist, "-r", "poll", "echo", *listen),
            "twistd -r poll echo",
        ),
        Server(
            "echotwist-fastepoll",
            (*twistd, *echotwist, "-r", "fastepoll", "echo", *listen),
            "twistd -r fastepoll echo: the epoll reactor without a logging "
            "context per event (echotwist.internals.fastpath)",
        ),
        Server(
            "echotwist-uvloop",
            (
                *twistd,
                *echotwist,
                "-r",
                "uvloop",
                "echo",
                "--listen",
                "aiotcp:0:interface=127.0.0.1",
            ),
            "twistd -r uvloop echo with the aiotcp: listener (uvloop's native "
            "transports under the unchanged Echo protocol)",
        ),
    ]


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """Prefix C{command} with C{taskset -c cpu} when pinning is possible."""
    if cpu is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


def cpusAvailable() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def rssKiB(pid: int) -> int:
    """The resident set size of process C{pid}, in KiB."""
    return readStatusKiB(pid, "VmRSS")


class Running:
    """A started server process, its log file and its port."""

    def __init__(self, server: Server, cpu: int | None, logDir: Path) -> None:
        self.server = server
        self.log = logDir / f"{server.name}.log"
        self.process = subprocess.Popen(
            pinned(server.command, cpu),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.port = self._waitPort()

    def _waitPort(self) -> int:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            for regex in _PORT_LINES:
                match = regex.search(text)
                if match:
                    return int(match.group("port"))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.server.name} did not start listening:\n"
            + self.log.read_text(errors="replace")[-2000:]
        )

    def stop(self) -> None:
        """Terminate the server; kill it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT)


class Meter:
    """Server CPU and context switches over the measured window of a load.

    C{pids} are the server's processes (a C{--workers} supervisor and its
    workers); their CPU is summed.  With C{serving} and C{port}, the
    established connections on C{port} that each of the C{serving}
    processes holds are counted when the window starts.
    """

    def __init__(
        self, pids: Sequence[int], serving: Sequence[int] = (), port: int = 0
    ) -> None:
        self.pids = list(pids)
        self.serving = list(serving)
        self.port = port
        self.user = self.system = self.switches = 0
        self.spread: Spread | None = None

    def _read(self) -> tuple[int, int, int]:
        stats = [readStat(pid) for pid in self.pids]
        return (
            sum(stat.user for stat in stats),
            sum(stat.system for stat in stats),
            sum(readContextSwitches(pid) for pid in self.pids),
        )

    def start(self) -> None:
        """The window starts: subtract the counters read now."""
        user, system, switches = self._read()
        self.user, self.system, self.switches = -user, -system, -switches
        if self.serving:
            self.spread = connectionsOf(self.serving, self.port)

    def stop(self) -> None:
        """The window ends: add the counters read now."""
        user, system, switches = self._read()
        self.user += user
        self.system += system
        self.switches += switches

    def cpuMicrosPerEcho(self, echoes: int, *, kind: str = "both") -> float:
        """Server CPU µs per echo over the window: C{user}, C{system} or both."""
        ticks = {
            "user": self.user,
            "system": self.system,
            "both": self.user + self.system,
        }[kind]
        return cpuMicrosPerEcho(ticks, echoes, os.sysconf("SC_CLK_TCK"))


def pingpong(
    loadgen: Sequence[str],
    running: Running,
    workload: Workload,
    seconds: float,
    warmup: float,
    *,
    meter: Meter | None = None,
) -> tuple[dict[str, Any], Meter]:
    """Run one ping-pong load; return its result and the server's meter.

    Without C{meter}, the server's own process is metered.
    """
    return pingpongTogether([loadgen], running, workload, seconds, warmup, meter=meter)


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
    With one load generator the result is its own; with several, their
    C{echoes} and C{echoes_per_s} summed, C{start_skew_s} (how far apart
    their windows started) and each one's own result under C{loads}.
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


def raiseFileLimit(needed: int) -> None:
    """Raise this process's (and so its children's) open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        sys.exit(f"bench: need {needed} open files, the hard limit is {hard}")


def ratio(value: float, base: float) -> str:
    """Format C{value / base} as C{1.23x}."""
    return f"{value / base:.2f}x" if base else "-"


def table(
    names: Sequence[str],
    samples: dict[tuple[str, str], Samples],
    idle: dict[str, float],
) -> list[str]:
    """The results as markdown table lines (medians, ratios to the baseline)."""
    med = statistics.median

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
            f"{rate(name, heavy):,.0f}",
            ratio(rate(name, heavy), rate(BASELINE, heavy)),
            f"{cpu(name):.2f}",
            f"{1e6 / cpu(name):,.0f}",
            ratio(cpu(BASELINE), cpu(name)),
            f"{rate(name, single):,.0f}",
            ratio(rate(name, single), rate(BASELINE, single)),
            f"{med(one.p50):.0f}",
            f"{med(one.p99):.0f}",
            f"{rate(name, bulk):,.0f}",
            ratio(rate(name, bulk), rate(BASELINE, bulk)),
            f"{rate(name, bulk) * bulk.size / 1e6:,.0f}",
            idleText(name),
        ]
        lines.append("| " + " | ".join(cells) + " |")
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
    med = statistics.median
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


def machine() -> str:
    """One line describing the machine the figures come from."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model or platform.processor()}, {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def loadAverage() -> str:
    """The system's 1, 5 and 15 minute load averages, as text."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


SECTIONS = ("servers", "workers")

# Marks where each section starts in results.md, so that running one
# section replaces its part of the file and keeps the others'.
_SECTION_MARK = re.compile(r"^<!-- section: (?P<name>[\w-]+) -->\n", re.MULTILINE)


def splitSections(text: str) -> dict[str, str]:
    """The sections of a results.md, by name.

    Text before the first mark (all of a file written before sections
    existed) is the C{servers} section.
    """
    marks = list(_SECTION_MARK.finditer(text))
    head = text[: marks[0].start()] if marks else text
    sections = {"servers": head} if head.strip() else {}
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
        sections[mark.group("name")] = text[mark.end() : end]
    return sections


def mergeSections(previous: str, fresh: Mapping[str, str]) -> str:
    """results.md with the C{fresh} sections in place of C{previous}' ones."""
    sections = {**splitSections(previous), **fresh}
    order = [*SECTIONS, *sorted(set(sections) - set(SECTIONS))]
    return (
        "".join(
            f"<!-- section: {name} -->\n{sections[name].strip()}\n\n"
            for name in order
            if name in sections
        ).rstrip("\n")
        + "\n"
    )


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


@dataclass(frozen=True)
class Pinning:
    """Where the server and the load generator run."""

    serverCpu: int | None
    loadCpu: int | None
    # For --workers: one load generator pinned to each of these cores, and
    # (--pin-workers) worker I on the I-th of them; one worker (N = 1) is
    # pinned to the first by the benchmark.
    cores: tuple[int, ...] = ()

    def describe(self) -> str:
        """The pinning in words, for the tables' notes."""
        if self.cores:
            return (
                "one worker and one load generator pinned to each of CPUs "
                + ", ".join(map(str, self.cores))
            )
        if self.serverCpu is None:
            return "nothing pinned"
        return (
            f"server pinned to CPU {self.serverCpu}, load generator to CPU "
            f"{self.loadCpu}"
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
                for workload in WORKLOADS:
                    result, meter = pingpong(
                        loadgen,
                        running,
                        workload,
                        arguments.seconds,
                        arguments.warmup,
                    )
                    cpu = meter.cpuMicrosPerEcho(result["echoes"])
                    sample = samples[server.name, workload.name]
                    sample.echoesPerSecond.append(result["echoes_per_s"])
                    sample.cpuMicrosPerEcho.append(cpu)
                    sample.p50.append(result["p50_us"])
                    sample.p99.append(result["p99_us"])
                    print(
                        f"round {rep + 1} {server.name:16} {workload.name:9}"
                        f" {result['echoes_per_s']:>10,.0f} echoes/s"
                        f" {cpu:6.2f} µs CPU/echo"
                        f" p50 {result['p50_us']:.0f} µs"
                        f" p99 {result['p99_us']:.0f} µs",
                        flush=True,
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
    lines = table(names, samples, idle)
    context = [
        f"Machine: {machine()}.",
        f"Load average (1, 5, 15 min) before the run {loadBefore} (other work"
        f" on the machine), after it {loadAverage()} (including the"
        " benchmark's own server and load generator, about 2).",
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


def runWorkers(
    arguments: argparse.Namespace,
    loadgen: Sequence[str],
    pinning: Pinning,
    logs: Path,
) -> tuple[str, dict[str, Any]]:
    """Run echotwist with --workers N at 50x512B, interleaved and repeated.

    Return the section's markdown and raw samples.
    """
    pinnings = workersPinnings(pinning, arguments.workers_cpus, arguments.quick)
    configs = workersConfigs(
        sys.executable, arguments.workers, pinnings, arguments.workers_reactors
    )
    samples = {config.server.name: WorkersSamples() for config in configs}
    loadBefore = loadAverage()
    for config in configs:
        print(f"  {config.server.name}: {' '.join(config.command())}")
    for rep in range(arguments.reps):
        order = configs if rep % 2 == 0 else configs[::-1]
        for config in order:
            running = Running(config.server, config.pinning.serverCpu, logs)
            twin = None
            try:
                meter = workersMeter(running, config.count)
                for pid, cpu in config.processCpus(running.process.pid, meter.serving):
                    pinProcess(pid, cpu)
                twinCpu = config.twinCpu()
                if twinCpu is not None:
                    twin = Twin(
                        config.server,
                        twinCpu,
                        loadgen,
                        arguments.seconds + arguments.warmup + TWIN_MARGIN,
                        logs,
                    )
                result, meter = pingpongTogether(
                    [pinned(loadgen, cpu) for cpu in config.loadCpus()],
                    running,
                    WORKERS_LOAD,
                    arguments.seconds,
                    arguments.warmup,
                    meter=meter,
                )
            finally:
                if twin is not None:
                    twin.stop()
                running.stop()
            assert meter.spread is not None
            sample = samples[config.server.name]
            sample.add(result, meter)
            skew = result.get("start_skew_s")
            print(
                f"round {rep + 1} {config.server.name:36}"
                f" {result['echoes_per_s']:>10,.0f} echoes/s"
                f" {sample.cpuMicrosPerEcho[-1]:6.2f} µs CPU/echo"
                f" (system {sample.systemMicrosPerEcho[-1]:5.2f})"
                f" {sample.switchesPerEcho[-1] * 1000:6.1f} switches/1k echoes"
                f" connections per worker {list(meter.spread.counts)}"
                + ("" if skew is None else f" start skew {skew * 1000:.1f} ms"),
                flush=True,
            )
    spreads = {}
    for config in configs:
        if (
            config.count == 1
            or config.pinning != pinning
            or config.reactor != "default"
        ):
            continue
        # A fresh server holding many idle connections: the spread of the
        # kernel's SO_REUSEPORT hashing shows beyond the 50 of the load.
        running = Running(config.server, pinning.serverCpu, logs)
        try:
            spreads[config.count] = idleSpread(
                pinned(loadgen, pinning.loadCpu), running, arguments.idle
            )
        finally:
            running.stop()
        print(
            f"idle {config.server.name}: {arguments.idle} connections per worker"
            f" {list(spreads[config.count].counts)}",
            flush=True,
        )
    lines = workersTable(configs, samples)
    lines += ["", *idleSpreadTable(spreads)]
    cores = [p.cores for p in pinnings if p.cores]
    context = [
        f"Machine: {machine()}.",
        f"Load average (1, 5, 15 min) before the run {loadBefore}, after it"
        f" {loadAverage()}.",
        "`twistd -n --pidfile= [-r REACTOR] echo --workers N [--pin-workers]"
        " --listen tcp:0:interface=127.0.0.1` (reactor `uvloop`: `--listen"
        " aiotcp:0:interface=127.0.0.1`, the native transports),"
        f" {WORKERS_LOAD.conns} connections x {WORKERS_LOAD.size} B ping-pong"
        f" from each `build/loadgen`; {arguments.reps} interleaved round(s) of"
        f" {arguments.seconds:g} s after {arguments.warmup:g} s warm-up; medians.",
        "",
        (
            "- *CPUs* `1`: the supervisor and all its workers pinned to"
            f" CPU {pinning.serverCpu} (`taskset -c`), one load generator to"
            f" CPU {pinning.loadCpu}: the N workers share one core, so"
            " echoes/CPU-s shows what time-sharing one core between N processes"
            " costs, not what more cores give. "
            if pinning.serverCpu is not None
            else "- "
        )
        + (
            f"*CPUs* `1 per worker` (N up to {len(cores[0])}): `--pin-workers`"
            " (worker I pinned to the I-th CPU, and given the connections that"
            " arrive on it; N = 1 pinned with `sched_setaffinity`),"
            f" and on each of those CPUs one load generator with"
            f" {WORKERS_LOAD.conns} connections: each core carries the same"
            " server and load as N = 1 on one core, so echoes/s should grow N"
            " times and echoes/CPU-s stay level; this is the scaling across"
            " cores.  With N = 1, a twin (the same server and load, pinned to"
            f" CPU {cores[0][1] if cores and len(cores[0]) > 1 else '-'}, not"
            " measured) keeps the other core busy: on this virtual machine a"
            " core is slower while its sibling is busy (docs/performance.md). "
            if cores
            else ""
        )
        + "*CPUs* `all`: nothing pinned; workers and one load generator share"
        " every CPU.",
        "- *CPU µs/echo*: user + system time of the supervisor and every"
        " worker (its children) from `/proc/PID/stat`, summed over the"
        " measured window, per echo (*of it system*: the system time)."
        " N = 1 is one process (no supervisor).",
        "- *vs N=1*: echoes/CPU-s over that of one worker, same reactor and"
        " pinning (ratio of the medians). *per round vs N=1*: the same ratio"
        " taken in each round (N workers against one worker minutes apart at"
        " most), median and (least-most) over the rounds: the noise of the"
        " shared machine drifts over a run, and this is spared most of it.",
        "- *switches/1k echoes*: voluntary + involuntary context switches of"
        " those processes (`/proc/PID/status`) per 1,000 echoes.",
        "- *conns per worker*: established connections each worker held"
        " (its `/proc/PID/fd` sockets matched to `/proc/net/tcp`), the fewest"
        " and most any worker held in any round.  The second table: the same"
        f" count with {arguments.idle:,} idle connections held open on a fresh"
        " server (default reactor, pinned).",
        "",
    ]
    raw: dict[str, Any] = {name: vars(sample) for name, sample in samples.items()}
    raw["idle connections per worker"] = {
        str(count): list(spread.counts) for count, spread in spreads.items()
    }
    print()
    print("\n".join(lines))
    return "\n".join(["## Scaling with --workers", "", *context, *lines]), raw


WORKERS_LOAD = WORKLOADS[0]

# The reactors the workers section runs: Twisted's default, the fast
# epoll reactor, and uvloop with the native aiotcp: listener.
WORKER_REACTORS = ("default", "fastepoll", "uvloop")


# Seconds the twin's load runs beyond the measured server's warm-up and
# window, so that it covers them however their starts are delayed.
TWIN_MARGIN = 2.0


class Twin:
    """A second copy of a server and its load, each pinned to C{cpu}, unmeasured.

    On a virtual machine a core can run slower while its sibling is busy
    too (docs/performance.md measures it here), so a one-worker baseline
    on one core of an otherwise idle machine would flatter N = 1 against N
    workers on every core.  The twin keeps the other core as busy as the
    extra workers would.
    """

    def __init__(
        self,
        server: Server,
        cpu: int,
        loadgen: Sequence[str],
        seconds: float,
        logDir: Path,
    ) -> None:
        self.running = Running(
            Server(f"{server.name}-twin", server.command, server.note), cpu, logDir
        )
        try:
            self.load = self._startLoad(loadgen, cpu, seconds)
        except BaseException:
            self.running.stop()
            raise

    def _startLoad(
        self, loadgen: Sequence[str], cpu: int, seconds: float
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *pinned(loadgen, cpu),
                *pingpongArguments(self.running.port, WORKERS_LOAD, seconds, 0),
            ],
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """End the twin's load and server."""
        try:
            self.load.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.load.kill()
            self.load.wait()
        self.running.stop()


# The workers section's layouts (--workers-cpus), as its table names them:
# all on one CPU, one CPU (and load generator) per worker, nothing pinned.
WORKER_LAYOUTS = ("one", "per-worker", "all")


def workersPinnings(
    pinning: Pinning, layouts: Sequence[str], quick: bool
) -> list[Pinning]:
    """The pinnings of the chosen C{layouts}, given the machine's C{pinning}.

    Without two CPUs to pin to (C{pinning} pins nothing) only C{all} can
    run, and C{--quick} runs only the first layout that can.
    """
    if pinning.serverCpu is None:
        return [pinning]
    byName = {
        "one": pinning,
        "per-worker": Pinning(None, None, tuple(cpusAvailable())),
        "all": Pinning(None, None),
    }
    chosen = [byName[name] for name in layouts]
    return chosen[:1] if quick else chosen


def pinProcess(pid: int, cpu: int) -> None:
    """Pin every thread of process C{pid} to C{cpu}."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


@dataclass(frozen=True)
class WorkersConfig:
    """echotwist with C{count} workers on C{reactor}, pinned or not."""

    python: str
    reactor: str
    count: int
    pinning: Pinning

    @property
    def cpus(self) -> str:
        """C{1} (all on one CPU), C{1 per worker}, or C{all}."""
        if self.pinning.cores:
            return "1 per worker"
        return "all" if self.pinning.serverCpu is None else "1"

    @property
    def server(self) -> Server:
        """The server to start."""
        twistd = str(Path(self.python).parent / "twistd")
        reactor = () if self.reactor == "default" else ("-r", self.reactor)
        kind = "aiotcp" if self.reactor == "uvloop" else "tcp"
        command = (
            twistd,
            "-n",
            "--pidfile=",
            *reactor,
            "echo",
            "--workers",
            str(self.count),
            # One per core: the server pins its workers itself and steers
            # each connection to the worker on the CPU it arrived on.
            *(("--pin-workers",) if self.pinning.cores and self.count > 1 else ()),
            "--listen",
            f"{kind}:0:interface=127.0.0.1",
        )
        cpus = self.cpus.replace(" ", "-")
        name = f"workers-{self.reactor}-cpus-{cpus}-n{self.count}"
        return Server(name, command, f"{self.count} workers")

    def command(self) -> list[str]:
        """The command line, with its pinning (C{1 per worker}: pinned once started)."""
        return pinned(self.server.command, self.pinning.serverCpu)

    def processCpus(
        self, supervisor: int, workers: Sequence[int]
    ) -> list[tuple[int, int]]:
        """The (process, CPU) pairs to pin once the server runs.

        Only for one worker of C{1 per worker}, which is the server
        process itself (C{workers} is C{[supervisor]}), on the first core;
        more workers are pinned by the server (C{--pin-workers}).
        """
        cores = self.pinning.cores
        if not cores or self.count > 1:
            return []
        return [(pid, cores[0]) for pid in workers]

    def twinCpu(self) -> int | None:
        """Where a L{Twin} runs: beside one worker of C{1 per worker}, if any."""
        cores = self.pinning.cores
        if self.count == 1 and len(cores) >= 2:
            return cores[1]
        return None

    def loadCpus(self) -> list[int | None]:
        """Where each load generator runs: one per worker's core, or one."""
        if self.pinning.cores:
            return list(self.pinning.cores[: self.count])
        return [self.pinning.loadCpu]


def workersConfigs(
    python: str,
    counts: Sequence[int],
    pinnings: Sequence[Pinning],
    reactors: Sequence[str] = WORKER_REACTORS,
) -> list[WorkersConfig]:
    """Every reactor and worker count, for each pinning; counts adjacent.

    A C{1 per worker} pinning runs only the counts it has cores for.
    """
    return [
        WorkersConfig(python, reactor, count, pinning)
        for pinning in pinnings
        for reactor in reactors
        for count in counts
        if not pinning.cores or count <= len(pinning.cores)
    ]


def workersMeter(running: Running, count: int) -> Meter:
    """A meter over a supervisor and its workers, counting their connections."""
    supervisor = running.process.pid
    workers = childPids(supervisor)
    if count > 1 and len(workers) != count:
        raise RuntimeError(
            f"{running.server.name}: expected {count} workers, found {workers}"
        )
    return Meter([supervisor, *workers], workers or [supervisor], running.port)


@dataclass
class WorkersSamples:
    """What the rounds of one workers configuration measured."""

    echoesPerSecond: list[float] = field(default_factory=list)
    cpuMicrosPerEcho: list[float] = field(default_factory=list)
    systemMicrosPerEcho: list[float] = field(default_factory=list)
    switchesPerEcho: list[float] = field(default_factory=list)
    connectionsPerWorker: list[list[int]] = field(default_factory=list)

    def add(self, result: Mapping[str, Any], meter: Meter) -> None:
        """Record one round."""
        assert meter.spread is not None
        self.echoesPerSecond.append(result["echoes_per_s"])
        self.cpuMicrosPerEcho.append(meter.cpuMicrosPerEcho(result["echoes"]))
        self.systemMicrosPerEcho.append(
            meter.cpuMicrosPerEcho(result["echoes"], kind="system")
        )
        self.switchesPerEcho.append(meter.switches / result["echoes"])
        self.connectionsPerWorker.append(list(meter.spread.counts))


def workersTable(
    configs: Sequence[WorkersConfig], samples: Mapping[str, WorkersSamples]
) -> list[str]:
    """The workers section's table: medians, ratios to the fewest workers."""
    med = statistics.median
    header = (
        "| reactor | CPUs | workers | echoes/s | CPU µs/echo | of it system"
        " | echoes/CPU-s | vs N=1 | per round vs N=1 | switches/1k echoes"
        f" | conns per worker (of {WORKERS_LOAD.conns}) |"
    )
    lines = [header, "|" + "---|" * 11]
    groups: dict[tuple[str, str], dict[int, WorkersConfig]] = {}
    for config in configs:
        groups.setdefault((config.reactor, config.cpus), {})[config.count] = config
    for (reactor, cpus), byCount in groups.items():
        perCpuSecond = {
            count: [1e6 / cpu for cpu in samples[c.server.name].cpuMicrosPerEcho]
            for count, c in byCount.items()
        }
        ratios = ratiosToFirst(perCpuSecond)
        perRound = roundRatiosToFirst(perCpuSecond)
        for count, config in sorted(byCount.items()):
            sample = samples[config.server.name]
            spread = [Spread(tuple(c)) for c in sample.connectionsPerWorker]
            cells = [
                reactor,
                cpus,
                str(count),
                f"{med(sample.echoesPerSecond):,.0f}",
                f"{med(sample.cpuMicrosPerEcho):.2f}",
                f"{med(sample.systemMicrosPerEcho):.2f}",
                f"{med(perCpuSecond[count]):,.0f}",
                f"{ratios[count]:.2f}x",
                "{:.2f}x ({:.2f}-{:.2f})".format(*perRound[count]),
                f"{med(sample.switchesPerEcho) * 1000:.1f}",
                f"{min(s.least for s in spread)}-{max(s.most for s in spread)}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def idleSpreadTable(spreads: Mapping[int, Spread]) -> list[str]:
    """The idle connections each worker held, by worker count."""
    lines = [
        "| workers | idle connections | fewest per worker | most per worker"
        " | most / mean |",
        "|" + "---|" * 5,
    ]
    for count, spread in sorted(spreads.items()):
        lines.append(
            f"| {count} | {spread.total:,} | {spread.least:,} | {spread.most:,}"
            f" | {spread.imbalance():.3f} |"
        )
    return lines


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


def writeResults(
    output: Path, markdown: Mapping[str, str], raw: dict[str, Any]
) -> None:
    """Write the sections run into results.md and .json, keeping the others."""
    mdPath, jsonPath = output / "results.md", output / "results.json"
    previous = mdPath.read_text() if mdPath.exists() else ""
    mdPath.write_text(mergeSections(previous, markdown))
    try:
        old = json.loads(jsonPath.read_text()) if jsonPath.exists() else {}
    except ValueError:
        old = {}
    if "servers" not in markdown:
        # Only other sections ran: keep the servers' samples.
        raw = {**{k: v for k, v in old.items() if k not in SECTIONS}, **raw}
    for name in SECTIONS:
        if name != "servers" and name not in markdown and name in old:
            raw[name] = old[name]
    jsonPath.write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
