"""Tests for the pure parts of the fault script, C{benchmarks/faults.py}.

Nothing here starts a server, makes a namespace or opens a socket: the
verdicts, the soak's slope, recovery after a blackout, the table, the
supervisor's log lines, the prober's bookkeeping and the script's
options are plain code.  The modules come from the source tree (as in
L{echotwist.test.test_benchmark_run}); an installed C{echotwist.test}
skips these tests.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.commandline import usageError

try:
    from benchmarks import faults, prober
    from benchmarks.faultresults import (
        Row,
        formatTable,
        killProblems,
        leastSquaresSlope,
        networkProblems,
        recoveryAfter,
        reloadProblems,
        soakProblems,
        soakSlope,
    )
    from benchmarks.faultscenarios import NetworkFault, judgeNetwork
    from benchmarks.supervisorlog import (
        Kill,
        LogLine,
        listeningPort,
        reloadTime,
        replacementOf,
        workerIndex,
    )
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"


class SlopeTests(SynchronousTestCase):
    """The soak's memory slope is a least-squares fit after the warm-up."""

    def test_line(self) -> None:
        """Points on a line give its slope."""
        self.assertAlmostEqual(leastSquaresSlope([(0, 1), (1, 3), (2, 5)]), 2.0)

    def test_noise(self) -> None:
        """Noise around a flat line gives a slope near zero."""
        points = [(float(x), 100.0 + (1 if x % 2 else -1)) for x in range(20)]
        self.assertLess(abs(leastSquaresSlope(points)), 0.1)

    def test_tooFew(self) -> None:
        """One point, or points at one x, have no slope."""
        with self.assertRaises(ValueError):
            leastSquaresSlope([(1, 1)])
        with self.assertRaises(ValueError):
            leastSquaresSlope([(1, 1), (1, 2)])

    def test_warmup(self) -> None:
        """Samples before the warm-up are left out; the slope is per minute."""
        samples = [(0.0, 0.0), (60.0, 5000.0)]
        samples += [(120.0 + 10 * i, 10000.0 + 10 * i) for i in range(49)]
        # 10 KiB per 10 s after the warm-up: 60 KiB per minute.
        self.assertAlmostEqual(soakSlope(samples, 120.0) or 0.0, 60.0)

    def test_warmupTooLong(self) -> None:
        """Fewer than three samples after the warm-up give no slope."""
        self.assertIsNone(soakSlope([(0.0, 1.0), (130.0, 2.0), (140.0, 3.0)], 120.0))


class RecoveryTests(SynchronousTestCase):
    """A held connection's recovery is the end of the gap spanning the fault's end."""

    def test_gapSpansEnd(self) -> None:
        """The first echo after the fault ends the gap."""
        self.assertAlmostEqual(
            recoveryAfter([(1.0, 1.5), (10.0, 13.25)], 20.0, 12.0) or 0.0, 1.25
        )

    def test_neverStopped(self) -> None:
        """A connection that echoed across the fault's end recovered at once."""
        self.assertEqual(recoveryAfter([], 20.0, 12.0), 0.0)

    def test_hung(self) -> None:
        """A connection whose last echo came before the fault ended never recovered."""
        self.assertIsNone(recoveryAfter([], 11.0, 12.0))
        self.assertIsNone(recoveryAfter([], None, 12.0))


class VerdictTests(SynchronousTestCase):
    """Each scenario fails on what it must not show, and only on that."""

    def test_killWithinAllowance(self) -> None:
        """Drops up to what the killed workers held, with their unsent sends, pass."""
        kinds = {"closed": 20, "truncated": 4, "unsent": 50}
        self.assertEqual(killProblems(kinds, 0, allowed=24, kills=5, replaced=5), [])

    def test_killBeyondAllowance(self) -> None:
        """More drops than held, refusals and missing replacements all fail."""
        problems = killProblems({"closed": 30}, 7, allowed=24, kills=5, replaced=3)
        self.assertEqual(
            problems,
            [
                "7 refused",
                "30 dropped > 24 held by killed workers",
                "2 of 5 kills not replaced",
            ],
        )

    def test_contentAlwaysFails(self) -> None:
        """A corrupt, duplicated, reordered or excess echo fails every scenario."""
        for kind in ("corrupt", "duplicated", "reordered", "excess"):
            kinds = {kind: 1}
            self.assertIn(f"1 {kind}", killProblems(kinds, 0, 10, 1, 1))
            self.assertIn(f"1 {kind}", reloadProblems(kinds, 0, 1, 1))
            self.assertIn(f"1 {kind}", soakProblems(kinds, 0, 0.0, 64.0))
            self.assertIn(f"1 {kind}", networkProblems(kinds, 0))

    def test_reload(self) -> None:
        """A reload may close drained connections but not truncate an echo."""
        self.assertEqual(reloadProblems({"closed": 5, "unsent": 9}, 0, 5, 5), [])
        self.assertEqual(
            reloadProblems({"truncated": 1}, 0, 5, 4),
            ["1 truncated", "1 of 5 reloads not seen"],
        )

    def test_soak(self) -> None:
        """The soak fails on any error, on growth beyond the limit, or no slope."""
        self.assertEqual(soakProblems({}, 0, 3.0, 64.0), [])
        self.assertEqual(soakProblems({"closed": 1}, 0, 3.0, 64.0), ["1 closed"])
        self.assertEqual(
            soakProblems({}, 0, 100.0, 64.0), ["RSS grows 100.0 KiB/min > 64"]
        )
        self.assertEqual(
            soakProblems({}, 0, None, 64.0), ["too few RSS samples after warm-up"]
        )

    def test_network(self) -> None:
        """Drops only after an idle timeout, stalls only under loss, no hang ever."""
        self.assertEqual(networkProblems({"closed": 1}, 0), ["1 closed"])
        self.assertEqual(
            networkProblems({"closed": 20, "unsent": 3}, 0, dropsAllowed=True), []
        )
        self.assertEqual(networkProblems({"stalled": 1}, 0), ["1 stalled"])
        self.assertEqual(networkProblems({"stalled": 1}, 0, stallsAllowed=True), [])
        self.assertEqual(
            networkProblems({}, 0, recovered=9, held=10),
            ["1 of 10 held connections hung"],
        )

    def test_noProber(self) -> None:
        """A missing prober report is a failure, not zero refusals."""
        self.assertEqual(networkProblems({}, None), ["no prober report"])


class JudgeNetworkTests(SynchronousTestCase):
    """A network fault's row is judged from the prober's held connections."""

    def test_blackout(self) -> None:
        """After a blackout the recovery is the slowest held connection's."""
        row = Row("blackout", echoesPerSecond=500.0, refused=0)
        held = [
            {"gaps": [[9.9, 13.0]], "last_echo": 20.0, "closed": 0},
            {"gaps": [[9.95, 12.5]], "last_echo": 20.0, "closed": 0},
        ]
        judgeNetwork(row, NetworkFault("b", 8.0, blackout=True), held, 10.0, 12.0)
        self.assertEqual(row.recovery, "2/2 in <= 1.00 s")
        self.assertEqual(row.verdict, "PASS")

    def test_hung(self) -> None:
        """A held connection silent after the fault fails the row."""
        row = Row("loss", echoesPerSecond=500.0, refused=0)
        held = [{"gaps": [[9.0, 9.5]], "last_echo": 11.0, "closed": 0}]
        judgeNetwork(row, NetworkFault("l", 8.0, lossProbability=0.05), held, 0, 12.0)
        self.assertEqual(row.recovery, "stall <= 0.50 s")
        self.assertEqual(row.verdict, "FAIL: 1 of 1 held connections hung")


class TableTests(SynchronousTestCase):
    """The table is a markdown pipe table, one row per scenario."""

    def test_layout(self) -> None:
        """A header, a rule and aligned rows; missing figures are dashes."""
        measured = Row(
            "kill",
            echoesPerSecond=1995.4,
            errorKinds={"closed": 3, "unsent": 2, "reordered": 1},
            allowed=4,
            refused=0,
            p50ms=1.234,
            p99ms=99.0,
            recovery="max 0.50 s (5/5)",
            problems=["1 reordered"],
        )
        failed = Row("net", problems=["did not run: no iptables"])
        lines = formatTable([measured, failed])
        self.assertEqual(len(lines), 4)
        self.assertTrue(lines[0].startswith("| scenario | echoes/s | errors |"))
        self.assertEqual(set(lines[1]), {"|", "-"})
        self.assertEqual(len({len(line) for line in lines}), 1)
        cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
        self.assertEqual(
            cells,
            [
                "kill",
                "1,995",
                "6",
                "3 (<= 4)",
                "0",
                "0",
                "1",
                "1.23",
                "99.00",
                "max 0.50 s (5/5)",
                "FAIL: 1 reordered",
            ],
        )
        cells = [cell.strip() for cell in lines[3].strip("|").split("|")]
        self.assertEqual(cells[1:9], ["-"] * 8)
        self.assertEqual(cells[10], "FAIL: did not run: no iptables")

    def test_json(self) -> None:
        """The JSON row carries the counts, the verdict and the details."""
        row = Row("soak", echoesPerSecond=2000.0, errorKinds={"closed": 1}, refused=0)
        row.details["slope_kib_per_min"] = 1.5
        report = row.toJSON()
        self.assertEqual(report["errors"], 1)
        self.assertEqual(report["dropped"], 1)
        self.assertEqual(report["verdict"], "PASS")
        self.assertEqual(report["details"], {"slope_kib_per_min": 1.5})


def lines(*texts: tuple[float, str]) -> list[LogLine]:
    """Log lines from (time, text) pairs."""
    return [LogLine(at, text) for at, text in texts]


class SupervisorLogTests(SynchronousTestCase):
    """The supervisor's and workers' lines are read for port, exits and restarts."""

    def test_port(self) -> None:
        """The port is the supervisor's, once all workers listen."""
        log = lines(
            (0.1, "[worker1] Listening on tcp:127.0.0.1:4000"),
            (
                0.2,
                "[...WorkerPool#info] Listening on tcp:10.203.0.1:4000 with 2 workers",
            ),
        )
        self.assertEqual(listeningPort(log), 4000)
        self.assertIsNone(listeningPort(log[:1]))

    def test_workerIndex(self) -> None:
        """A worker's index comes from its command line."""
        command = ["python", "-m", "echotwist.workers", "2", "default", "tcp:4"]
        self.assertEqual(workerIndex(command), 2)
        self.assertIsNone(workerIndex(["python", "-m", "echotwist.workers"]))

    def test_replacement(self) -> None:
        """The exit and the new worker's listening line, in seconds after the kill."""
        log = lines(
            (1.0, "[worker1] Worker 1 (pid 10) listening"),
            (5.01, "Worker 1 (pid 10) exited: process ended by signal 9.; replacing"),
            (5.2, "[worker2] Worker 2 (pid 30) listening"),
            (5.5, "[worker1] Worker 1 (pid 20) listening"),
        )
        replacement = replacementOf(Kill(5.0, 10, 1), log)
        self.assertAlmostEqual(replacement.exited or 0.0, 0.01)
        self.assertEqual(replacement.why, "process ended by signal 9.; replacing")
        self.assertAlmostEqual(replacement.listening or 0.0, 0.5)
        self.assertEqual(replacement.pid, 20)

    def test_oldWording(self) -> None:
        """The exit line without a pid is read too; no replacement is none."""
        log = lines((5.01, "Worker 1 exited: process ended by signal 9."))
        replacement = replacementOf(Kill(5.0, 10, 1), log)
        self.assertIsNotNone(replacement.exited)
        self.assertIsNone(replacement.listening)
        self.assertIsNone(replacement.pid)

    def test_reload(self) -> None:
        """A reload is done when as many new pids as workers have listened."""
        log = lines(
            (1.0, "Worker 1 (pid 10) listening"),
            (1.0, "Worker 2 (pid 11) listening"),
            (10.3, "Worker 2 (pid 21) listening"),
            (10.5, "Worker 1 (pid 20) listening"),
        )
        self.assertAlmostEqual(reloadTime(10.0, [10, 11], 2, log) or 0.0, 0.5)
        self.assertIsNone(reloadTime(10.0, [10, 11], 3, log))


class ProbeReportTests(SynchronousTestCase):
    """The prober counts every outcome and keeps failures' times, bounded."""

    def test_record(self) -> None:
        """Successes are counted; failures are counted and timed."""
        report = prober.ProbeReport("127.0.0.1", 7, 0.02, 1.0)
        report.record(1.0, "ok")
        report.record(1.02, "refused")
        self.assertEqual(report.attempts, 2)
        self.assertEqual(report.failures, [(1.02, "refused")])
        self.assertEqual(report.toJSON()["counts"]["refused"], 1)

    def test_bounded(self) -> None:
        """Beyond MAX_FAILURES, failures are counted but not kept."""
        report = prober.ProbeReport("127.0.0.1", 7, 0.02, 1.0)
        for i in range(prober.MAX_FAILURES + 3):
            report.record(float(i), "timeout")
        self.assertEqual(len(report.failures), prober.MAX_FAILURES)
        self.assertEqual(report.failuresDropped, 3)
        self.assertEqual(report.counts["timeout"], prober.MAX_FAILURES + 3)

    def test_badArguments(self) -> None:
        """A probe with no time, interval or timeout is refused."""
        with self.assertRaises(ValueError):
            prober.Prober("127.0.0.1", 7, 0)


class ArgumentTests(SynchronousTestCase):
    """The script refuses where it cannot run, and reads its options."""

    def test_refusal(self) -> None:
        """Only Linux, as root, with ip, runs."""
        self.assertIsNone(faults.refusal("linux", 0, True))
        self.assertIn("Linux", faults.refusal("darwin", 0, True) or "")
        self.assertIn("root", faults.refusal("linux", 1000, True) or "")
        self.assertIn("ip", faults.refusal("linux", 0, False) or "")

    def test_defaults(self) -> None:
        """Every scenario runs, with a 10-minute soak and 60 s of kills."""
        args = faults.parseArguments([])
        self.assertEqual(args.scenarios, ["kill", "sighup", "net", "soak"])
        settings = faults.settingsFrom(args, Path("logs"))
        self.assertEqual(settings.soakSeconds, 600.0)
        self.assertEqual(settings.soakWarmup, 120.0)
        self.assertEqual((settings.window, settings.period), (60.0, 10.0))

    def test_quick(self) -> None:
        """--quick shortens everything; --soak-seconds sets the soak."""
        settings = faults.settingsFrom(faults.parseArguments(["--quick"]), Path("l"))
        self.assertLess(settings.window, 60.0)
        self.assertLess(settings.soakSeconds, 60.0)
        args = faults.parseArguments(["--soak-seconds", "300", "--scenarios", "soak"])
        settings = faults.settingsFrom(args, Path("l"))
        self.assertEqual(args.scenarios, ["soak"])
        self.assertEqual((settings.soakSeconds, settings.soakWarmup), (300.0, 60.0))

    def test_unknownScenario(self) -> None:
        """An unknown scenario is a usage error."""
        code, _ = usageError(self, faults.parseArguments, ["--scenarios", "kill,flood"])
        self.assertEqual(code, 2)
