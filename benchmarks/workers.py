"""The C{workers} section: echotwist C{--workers N}, scaling and spread.

For each reactor, worker count and CPU layout (L{WorkersConfig}): the
server's throughput and CPU per echo at 50x512B over rounds, the
connections each worker held, and a table of medians with ratios to one
worker (L{workersTable}); then the spread of many idle connections over
the workers (L{idleSpreadTable}).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.catalogue import WORKLOADS, Server
from benchmarks.control import (
    WAIT,
    Pinning,
    Running,
    cpusAvailable,
    loadAverage,
    machine,
    pinned,
    pinProcess,
)
from benchmarks.loads import idleSpread, pingpongArguments, pingpongTogether
from benchmarks.meter import Meter
from benchmarks.procstat import Spread, childPids, ratiosToFirst, roundRatiosToFirst

WORKERS_LOAD = WORKLOADS[0]

# The reactors the workers section runs: Twisted's default, the fast
# epoll reactor, and uvloop with the native aiotcp: listener.
WORKER_REACTORS = ("default", "fastepoll", "uvloop")

# Seconds the twin's load runs beyond the measured server's warm-up and
# window, so that it covers them however their starts are delayed.
TWIN_MARGIN = 2.0

# The workers section's layouts (--workers-cpus), as its table names them:
# all on one CPU, one CPU (and load generator) per worker, nothing pinned.
WORKER_LAYOUTS = ("one", "per-worker", "all")


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
    """The workers section's table: medians, ratios to the fewest workers.

    Its I{echoes/s per busy core} is echoes per second of the server's CPU
    time (1e6 / CPU µs per echo): echoes/s divided by the cores the server
    kept busy on average.  A saturated server keeps every core it is
    pinned to busy, so with CPUs C{1} this is its echoes/s and with C{1 per
    worker} its echoes/s / N: a throughput per core, not a measure of CPU
    efficiency apart from throughput (it exceeds echoes/s only where the
    server left its CPU idle).  The I{vs N=1} ratios are ratios of it.
    """
    med = statistics.median
    header = (
        "| reactor | CPUs | workers | echoes/s | CPU µs/echo | of it system"
        " | echoes/s per busy core | vs N=1 | per round vs N=1"
        " | switches/1k echoes"
        f" | conns per worker (of {WORKERS_LOAD.conns}) |"
    )
    lines = [header, "|" + "---|" * 11]
    groups: dict[tuple[str, str], dict[int, WorkersConfig]] = {}
    for config in configs:
        groups.setdefault((config.reactor, config.cpus), {})[config.count] = config
    for (reactor, cpus), byCount in groups.items():
        # Echoes per second of server CPU time: echoes/s per busy core.
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
            " echoes/s per busy core is their echoes/s, and shows what"
            " time-sharing one core between N processes costs, not what more"
            " cores give. "
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
            " times and echoes/s per busy core (echoes/s / N) stay level; this"
            " is the scaling across cores.  With N = 1, a twin (the same server"
            " and load, pinned to"
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
        "- *echoes/s per busy core*: echoes per second of the server's CPU"
        " time (1e6 / CPU µs/echo), that is echoes/s divided by the cores the"
        " server kept busy.  A saturated server keeps the cores it is pinned"
        " to busy, so this is a throughput per core (CPUs `1`: echoes/s;"
        " `1 per worker`: echoes/s / N), not a CPU efficiency apart from"
        " throughput; it exceeds echoes/s only where the server left CPU idle.",
        "- *vs N=1*: echoes/s per busy core over that of one worker, same"
        " reactor and pinning (ratio of the medians). *per round vs N=1*: the"
        " same ratio"
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
