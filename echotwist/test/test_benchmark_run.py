"""Tests for the pure parts of the side-by-side benchmark, C{benchmarks/run.py}.

The benchmark is run from the source tree (C{make bench}), as is this
suite (C{make test} runs trial there), so its modules are imported from
the tree; an installed C{echotwist.test}, with no C{benchmarks} package
beside it, skips these tests.  Nothing here starts a server: the
options, the results files' sections and the C{--workers} table are plain
code, and running several load generators at once is tried with
stand-ins that print a result.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import cast

from twisted.trial.unittest import SynchronousTestCase

try:
    from benchmarks import catalogue, control, loads, results, run, workers
    from benchmarks.control import Pinning
    from benchmarks.meter import Meter
    from benchmarks.procstat import Spread
    from benchmarks.sidebyside import Samples, peerTable, serversTable, stealLine
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"

LEGACY = "Machine: x.\n\n| server | ... |\n|---|\n| twisted | 1 |\n"


class ArgumentTests(SynchronousTestCase):
    """The sections and worker counts to run are read and checked."""

    def test_defaults(self) -> None:
        """Both sections run, with 1, 2 and 4 workers."""
        arguments = run.parseArguments(["--loadgen", "lg"])
        self.assertEqual(arguments.sections, ["servers", "workers"])
        self.assertEqual(arguments.workers, [1, 2, 4])
        self.assertEqual(arguments.workers_reactors, ["default", "fastepoll", "uvloop"])

    def test_workersCpus(self) -> None:
        """The workers section can be limited to some layouts."""
        arguments = run.parseArguments(["--loadgen", "lg"])
        self.assertEqual(arguments.workers_cpus, ["one", "per-worker", "all"])
        arguments = run.parseArguments(
            ["--loadgen", "lg", "--workers-cpus", "per-worker"]
        )
        self.assertEqual(arguments.workers_cpus, ["per-worker"])

    def test_workersPinnings(self) -> None:
        """Layouts become pinnings; without two CPUs only the unpinned one runs."""
        machine = Pinning(0, 1)
        everywhere = tuple(control.cpusAvailable())
        self.assertEqual(
            workers.workersPinnings(machine, ["all", "one", "per-worker"], quick=False),
            [
                Pinning(None, None),
                machine,
                Pinning(None, None, everywhere),
            ],
        )
        self.assertEqual(
            workers.workersPinnings(machine, ["per-worker", "all"], quick=True),
            [Pinning(None, None, everywhere)],
        )
        unpinned = Pinning(None, None)
        self.assertEqual(
            workers.workersPinnings(unpinned, ["one", "per-worker"], quick=False),
            [unpinned],
        )

    def test_workersReactors(self) -> None:
        """The workers section can be limited to some reactors."""
        arguments = run.parseArguments(
            ["--loadgen", "lg", "--workers-reactors", "uvloop,fastepoll"]
        )
        self.assertEqual(arguments.workers_reactors, ["uvloop", "fastepoll"])

    def test_onlyWorkers(self) -> None:
        """One section and other worker counts (sorted, deduplicated)."""
        arguments = run.parseArguments(
            ["--loadgen", "lg", "--sections", "workers", "--workers", "8,2,2"]
        )
        self.assertEqual(arguments.sections, ["workers"])
        self.assertEqual(arguments.workers, [2, 8])

    def test_rejected(self) -> None:
        """Unknown sections and bad counts are usage errors, with a reason."""
        for extra, reason in (
            (["--sections", "servers,bogus"], "--sections takes servers, workers"),
            (["--workers", "0"], "--workers takes worker counts 1..16"),
            (["--workers", "two"], "--workers takes worker counts 1..16"),
            (["--workers", "17"], "--workers takes worker counts 1..16"),
            (
                ["--workers-reactors", "select"],
                "--workers-reactors takes default, fastepoll, uvloop",
            ),
            (["--workers-cpus", "two"], "--workers-cpus takes one, per-worker, all"),
        ):
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                self.assertRaises(
                    SystemExit, run.parseArguments, ["--loadgen", "lg", *extra]
                )
            self.assertIn(reason, stderr.getvalue())


class SectionTests(SynchronousTestCase):
    """Running one section replaces only its part of the results."""

    def test_legacyFileIsServers(self) -> None:
        """A results.md without marks is the servers section."""
        self.assertEqual(results.splitSections(LEGACY), {"servers": LEGACY})
        self.assertEqual(results.splitSections(""), {})

    def test_addSection(self) -> None:
        """A new section goes after the servers section, which is kept."""
        merged = results.mergeSections(LEGACY, {"workers": "## W\n\nw table\n"})
        self.assertEqual(
            results.splitSections(merged),
            {"servers": LEGACY.strip() + "\n\n", "workers": "## W\n\nw table\n"},
        )
        self.assertTrue(merged.startswith("<!-- section: servers -->\nMachine"))

    def test_replaceSection(self) -> None:
        """Rerunning the servers keeps the workers section as it was."""
        both = results.mergeSections("", {"workers": "old w", "servers": "old s"})
        merged = results.mergeSections(both, {"servers": "new s"})
        self.assertEqual(
            merged,
            "<!-- section: servers -->\nnew s\n\n<!-- section: workers -->\nold w\n",
        )

    def test_writeResultsKeepsOtherSamples(self) -> None:
        """results.json keeps the samples of the sections not run."""
        output = Path(self.mktemp())
        output.mkdir()
        results.writeResults(
            output, {"servers": "s", "workers": "w"}, {"a 1x": [1], "workers": {"n": 1}}
        )
        results.writeResults(output, {"workers": "w2"}, {"workers": {"n": 2}})
        self.assertEqual(
            json.loads((output / "results.json").read_text()),
            {"a 1x": [1], "workers": {"n": 2}},
        )
        results.writeResults(output, {"servers": "s2"}, {"b 1x": [2]})
        self.assertEqual(
            json.loads((output / "results.json").read_text()),
            {"b 1x": [2], "workers": {"n": 2}},
        )
        self.assertEqual(
            results.splitSections((output / "results.md").read_text()),
            {"servers": "s2\n\n", "workers": "w2\n"},
        )


def samples(
    cpu: list[float], spreads: list[list[int]], rate: float = 1000.0
) -> workers.WorkersSamples:
    """Samples of rounds with these CPU µs per echo and spreads."""
    return workers.WorkersSamples(
        echoesPerSecond=[rate] * len(cpu),
        cpuMicrosPerEcho=cpu,
        systemMicrosPerEcho=[c / 2 for c in cpu],
        switchesPerEcho=[0.0125] * len(cpu),
        connectionsPerWorker=spreads,
    )


class WorkersTableTests(SynchronousTestCase):
    """The --workers table: medians, ratios to one worker, spread range."""

    def test_table(self) -> None:
        """Ratios compare echoes/s per busy core within reactor and pinning."""
        pinning = Pinning(0, 1)
        configs = workers.workersConfigs(
            "/venv/bin/python", [1, 2], [pinning], ("default", "fastepoll")
        )
        data = {
            "workers-default-cpus-1-n1": samples([10.0, 20.0, 12.0], [[50]] * 3),
            "workers-default-cpus-1-n2": samples(
                [15.0, 14.0, 16.0], [[24, 26], [20, 30], [25, 25]]
            ),
            "workers-fastepoll-cpus-1-n1": samples([10.0], [[50]]),
            "workers-fastepoll-cpus-1-n2": samples([8.0], [[25, 25]]),
        }
        lines = workers.workersTable(configs, data)
        cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
        self.assertEqual(
            [" ".join(row) for row in cells],
            [
                "default 1 1 1,000 12.00 6.00 83,333 1.00x 1.00x (1.00-1.00)"
                " 12.5 50-50",
                "default 1 2 1,000 15.00 7.50 66,667 0.80x 0.75x (0.67-1.43)"
                " 12.5 20-30",
                "fastepoll 1 1 1,000 10.00 5.00 100,000 1.00x 1.00x (1.00-1.00)"
                " 12.5 50-50",
                "fastepoll 1 2 1,000 8.00 4.00 125,000 1.25x 1.25x (1.25-1.25)"
                " 12.5 25-25",
            ],
        )
        self.assertEqual(len(lines[0].split("|")), len(lines[2].split("|")))
        self.assertIn("| echoes/s per busy core | vs N=1 |", lines[0])

    def test_commands(self) -> None:
        """Each configuration runs the installed twistd with its workers."""
        configs = workers.workersConfigs(
            "/venv/bin/python",
            [4],
            [Pinning(0, 1), Pinning(None, None)],
        )
        twistd = ["/venv/bin/twistd", "-n", "--pidfile="]
        echo = ["echo", "--workers", "4", "--listen", "tcp:0:interface=127.0.0.1"]
        native = [*echo[:-1], "aiotcp:0:interface=127.0.0.1"]
        pin = ["taskset", "-c", "0"]
        self.assertEqual(
            [c.command() for c in configs],
            [
                [*pin, *twistd, *echo],
                [*pin, *twistd, "-r", "fastepoll", *echo],
                [*pin, *twistd, "-r", "uvloop", *native],
                [*twistd, *echo],
                [*twistd, "-r", "fastepoll", *echo],
                [*twistd, "-r", "uvloop", *native],
            ],
        )
        self.assertEqual(
            [c.loadCpus() for c in configs], [[1], [1], [1], [None], [None], [None]]
        )

    def test_perWorkerCores(self) -> None:
        """One worker per core runs only the counts there are cores for."""
        configs = workers.workersConfigs(
            "/venv/bin/python",
            [1, 2, 4],
            [Pinning(None, None, (0, 1))],
            ["default"],
        )
        self.assertEqual([c.count for c in configs], [1, 2])
        self.assertEqual(
            [c.server.name for c in configs],
            [
                "workers-default-cpus-1-per-worker-n1",
                "workers-default-cpus-1-per-worker-n2",
            ],
        )
        # Started unpinned; the workers pin themselves.
        self.assertEqual(
            configs[1].command(),
            [
                "/venv/bin/twistd",
                "-n",
                "--pidfile=",
                "echo",
                "--workers",
                "2",
                "--pin-workers",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
        )
        self.assertNotIn("--pin-workers", configs[0].command())

    def test_perWorkerPinning(self) -> None:
        """The I-th load generator goes to the I-th core, one worker to the first."""
        one, two = workers.workersConfigs(
            "/venv/bin/python",
            [1, 2],
            [Pinning(None, None, (3, 5))],
            ["default"],
        )
        # One worker is the server process itself.
        self.assertEqual(one.processCpus(100, [100]), [(100, 3)])
        self.assertEqual(one.loadCpus(), [3])
        # --pin-workers pins more.
        self.assertEqual(two.processCpus(100, [101, 102]), [])
        self.assertEqual(two.loadCpus(), [3, 5])

    def test_twin(self) -> None:
        """Only one worker alone on its core gets a twin on the next core."""
        one, two = workers.workersConfigs(
            "/venv/bin/python",
            [1, 2],
            [Pinning(None, None, (3, 5))],
            ["default"],
        )
        self.assertEqual((one.twinCpu(), two.twinCpu()), (5, None))
        (alone,) = workers.workersConfigs(
            "/venv/bin/python", [1], [Pinning(None, None, (3,))], ["default"]
        )
        self.assertIsNone(alone.twinCpu())
        for pinning in Pinning(0, 1), Pinning(None, None):
            (shared,) = workers.workersConfigs(
                "/venv/bin/python", [1], [pinning], ["default"]
            )
            self.assertIsNone(shared.twinCpu())

    def test_sharedCoreNotPinnedLater(self) -> None:
        """Configurations pinned by taskset at start pin nothing afterwards."""
        for pinning in Pinning(0, 1), Pinning(None, None):
            (config,) = workers.workersConfigs(
                "/venv/bin/python", [2], [pinning], ["default"]
            )
            self.assertEqual(config.processCpus(100, [101, 102]), [])

    def test_addRound(self) -> None:
        """A round's meter becomes CPU and switches per echo and a spread."""
        meter = Meter([1, 2])
        ticksPerSecond = os.sysconf("SC_CLK_TCK")
        meter.user, meter.system = 2 * ticksPerSecond, ticksPerSecond
        meter.switches, meter.spread = 500, Spread((4, 6))
        sample = workers.WorkersSamples()
        sample.add({"echoes_per_s": 5000.0, "echoes": 100_000}, meter)
        self.assertEqual(sample.cpuMicrosPerEcho, [30.0])
        self.assertEqual(sample.systemMicrosPerEcho, [10.0])
        self.assertEqual(sample.switchesPerEcho, [0.005])
        self.assertEqual(sample.connectionsPerWorker, [[4, 6]])

    def test_idleSpreadTable(self) -> None:
        """Idle spreads are tabled by worker count with the imbalance."""
        lines = workers.idleSpreadTable(
            {4: Spread((2400, 2600, 2500, 2500)), 2: Spread((4996, 5004))}
        )
        self.assertEqual(
            lines[2:],
            [
                "| 2 | 10,000 | 4,996 | 5,004 | 1.001 |",
                "| 4 | 10,000 | 2,400 | 2,600 | 1.040 |",
            ],
        )


def fakeLoadgen(echoes: int, status: int = 0) -> list[str]:
    """A stand-in load generator: its window's edges, then one result line."""
    script = (
        "import json, sys\n"
        "print('measuring', flush=True)\n"
        "print('done', flush=True)\n"
        f"if {status}: sys.exit({status})\n"
        f"print(json.dumps({{'echoes': {echoes}, 'echoes_per_s': {echoes} / 2}}))\n"
    )
    return [sys.executable, "-c", script]


class FakeRunning:
    """What pingpongTogether reads of a running server: name, pid and port."""

    def __init__(self) -> None:
        self.server = catalogue.Server("fake", (), "")
        self.process = FakeProcess()
        self.port = 1


class FakeProcess:
    """A server process: this test's own, so /proc has it."""

    pid = os.getpid()


class PingpongTogetherTests(SynchronousTestCase):
    """Several load generators at once make one result over one window."""

    def together(self, loadgens: list[list[str]]) -> tuple[dict[str, object], Meter]:
        """Run C{loadgens} against the fake server, 1 s of 64 B echoes."""
        return loads.pingpongTogether(
            loadgens,
            cast(control.Running, FakeRunning()),
            catalogue.Workload("x", 1, 64),
            1.0,
            0.0,
        )

    def test_summed(self) -> None:
        """Echoes and rates add up; each load's own result is kept."""
        result, meter = self.together([fakeLoadgen(1000), fakeLoadgen(3000)])
        self.assertEqual(result["echoes"], 4000)
        self.assertEqual(result["echoes_per_s"], 2000.0)
        self.assertEqual(
            result["loads"],
            [
                {"echoes": 1000, "echoes_per_s": 500.0},
                {"echoes": 3000, "echoes_per_s": 1500.0},
            ],
        )
        self.assertGreaterEqual(cast(float, result["start_skew_s"]), 0.0)
        self.assertEqual(meter.pids, [os.getpid()])

    def test_arguments(self) -> None:
        """Every load generator gets the port, the workload and the timings."""
        self.assertEqual(
            loads.pingpongArguments(4000, catalogue.Workload("x", 50, 512), 3.0, 1.0),
            ["-p", "4000", "-c", "50", "-s", "512", "-d", "3.0", "-w", "1.0"],
        )

    def test_single(self) -> None:
        """One load generator's result is returned as it is."""
        result, _ = self.together([fakeLoadgen(10)])
        self.assertEqual(result, {"echoes": 10, "echoes_per_s": 5.0})

    def test_oneFails(self) -> None:
        """A failed load generator fails the measurement, naming the server."""
        error = self.assertRaises(
            RuntimeError, self.together, [fakeLoadgen(10), fakeLoadgen(10, status=3)]
        )
        self.assertIn("fake x: load generator failed", str(error))


class PeerTableTests(SynchronousTestCase):
    """The side-by-side section's ratios to a peer (uvloop)."""

    def samples(self, rates: dict[str, list[float]]) -> dict[tuple[str, str], Samples]:
        """Samples with the given echoes/s per workload, in WORKLOADS order."""
        return {
            (name, workload.name): Samples(echoesPerSecond=[rate])
            for name, perWorkload in rates.items()
            for workload, rate in zip(catalogue.WORKLOADS, perWorkload, strict=True)
        }

    def test_ratios(self) -> None:
        """Each server's echoes/s over the peer's, per workload."""
        samples = self.samples(
            {"uvloop": [100.0, 10.0, 40.0], "echotwist": [115.0, 9.0, 52.0]}
        )
        lines = peerTable(["uvloop", "echotwist"], samples, "uvloop")
        self.assertEqual(
            lines,
            [
                "| server (echoes/s vs uvloop) | 50x512B | 1x64B | 10x64KiB |",
                "|---|---|---|---|",
                "| uvloop | 1.00x | 1.00x | 1.00x |",
                "| echotwist | 1.15x | 0.90x | 1.30x |",
            ],
        )

    def test_noPeer(self) -> None:
        """Without the peer in the run, no table."""
        samples = self.samples({"echotwist": [1.0, 1.0, 1.0]})
        self.assertEqual(peerTable(["echotwist"], samples, "uvloop"), [])

    def test_failedServer(self) -> None:
        """A server that failed every round shows as failed, not as an error."""
        samples = self.samples({"uvloop": [100.0, 10.0, 40.0]})
        for workload in catalogue.WORKLOADS:
            samples["rloop", workload.name] = Samples()
        lines = peerTable(["uvloop", "rloop"], samples, "uvloop")
        self.assertEqual(lines[-1], "| rloop | - | - | - |")
        samples.update(self.samples({"twisted": [50.0, 5.0, 20.0]}))
        table = serversTable(["twisted", "rloop"], samples, {})
        self.assertTrue(table[-1].startswith("| rloop | failed | - | failed |"))


class StealLineTests(SynchronousTestCase):
    """The host's steal over the side-by-side run's loads."""

    def test_line(self) -> None:
        """Median and most over every server's rounds."""
        samples = {
            ("uvloop", "50x512B"): Samples(steal=[0.0, 3.0]),
            ("echotwist", "50x512B"): Samples(steal=[1.0]),
        }
        self.assertEqual(
            stealLine(samples),
            "Host steal during the loads (the hypervisor's share of the CPU time):"
            " median 1.0 %, at most 3.0 % (compare runs with the same, low steal).",
        )

    def test_notRead(self) -> None:
        """No readings (not Linux): no line."""
        self.assertIsNone(stealLine({("uvloop", "50x512B"): Samples()}))
