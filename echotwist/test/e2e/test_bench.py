"""End-to-end tests of C{python -m echotwist.bench}: real processes, loopback.

Every run is short (about a second) and bounded by the e2e helpers'
timeouts; servers are real C{twistd} processes or the misbehaving
doubles of L{echotwist.test.doubles}.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.test.doubles import (
    corruptAfter,
    duplicateAfter,
    stallAt,
    startStreamDouble,
    swallowAfter,
)
from echotwist.test.e2e.harness import (
    PROJECT_ROOT,
    WAIT,
    OutputReader,
    childEnvironment,
    makeCertificate,
    runModule,
    startServer,
)

SHORT = ("--duration", "1", "--warmup", "0.2")


def bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the bench to completion."""
    return runModule("echotwist.bench", *arguments)


def report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object the bench printed."""
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


class BenchAgainstServerTests(SynchronousTestCase):
    """Each mode against a real C{twistd -n echo}."""

    def setUp(self) -> None:
        """One server for the test."""
        self.server = startServer(self)
        self.port = str(self.server.port)

    def test_closedLoopJSON(self) -> None:
        """A closed-loop run reports verified echoes, percentiles and no errors."""
        result = bench("--json", "-c", "4", "-s", "100", *SHORT, "127.0.0.1", self.port)
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertGreater(values["echoes"], 0)
        self.assertGreater(values["echoes_per_s"], 0)
        self.assertEqual(values["errors"], 0)
        self.assertLessEqual(values["p50_us"], values["p99_us"])
        self.assertLessEqual(values["p99_us"], values["max_us"])
        self.assertEqual(
            sorted(values["machine"]),
            ["cpus", "kernel", "python", "reactor", "steal_percent"],
        )
        # The host's steal during the run, read from Linux's /proc/stat.
        self.assertTrue(0 <= values["machine"]["steal_percent"] <= 100)
        # The fast epoll reactor, as twistd echo's default on Linux.
        self.assertEqual(values["machine"]["reactor"], "FastEPollReactor")

    def test_readableReport(self) -> None:
        """Piped, a line per second stays in the output, then the readable report."""
        result = bench(
            "-c", "2", "-P", "2", "-d", "2s", "-w", "200ms", "-L",
            f"127.0.0.1:{self.port}",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        interval = (
            r"^ +\d+\.\d s  [\d,]+ echoes/s  p50 \d+  p99 \d+  max \d+ us  errors 0$"
        )
        self.assertRegex(lines[0], interval)
        self.assertRegex(lines[1], interval)
        self.assertRegex(lines[2], r"^pingpong: 2 connections, 512 bytes, pipeline 2")
        self.assertRegex(lines[3], r"^\d+ echoes: [\d,]+/s, [\d.]+ MB/s$")
        self.assertRegex(
            lines[4],
            r"^latency: p50 \d+  p90 \d+  p99 \d+  p99\.9 \d+  p99\.99 \d+  max \d+ us"
            r" \(mean [\d.]+, stdev [\d.]+\)$",
        )
        self.assertEqual(lines[5], "errors: 0")
        self.assertRegex(
            lines[6], rf"^target: 127\.0\.0\.1:{self.port}, started 20\d\d-\d\d-\d\dT"
        )
        self.assertRegex(lines[7], r"^machine: \d+ CPUs, ")
        self.assertEqual(lines[9], "Latency distribution, value in us:")
        self.assertRegex(lines[-3], r"^#\[Mean    = ")

    def test_csvAndCompare(self) -> None:
        """--csv is one header and one row; compare sets two JSON runs side by side."""
        csvRun = bench("--csv", "-c", "2", *SHORT, "127.0.0.1", self.port)
        self.assertEqual(csvRun.returncode, 0, csvRun.stderr)
        header, row = csvRun.stdout.splitlines()
        self.assertIn("echoes_per_s", header.split(","))
        self.assertEqual(len(header.split(",")), len(row.split(",")))
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        files = []
        for connections in ("1", "2"):
            run = bench("--json", "-c", connections, *SHORT, "127.0.0.1", self.port)
            path = directory / f"c{connections}.json"
            path.write_text(run.stdout)
            files.append(str(path))
        compared = bench("compare", *files)
        self.assertEqual(compared.returncode, 0, compared.stderr)
        lines = compared.stdout.splitlines()
        self.assertRegex(lines[1], r"^echoes/s +[\d,]+ +[\d,]+ +[+-]\d+\.\d%$")
        self.assertEqual(lines[-1], f"B: {files[1]}")
        bad = bench("compare", files[0], str(directory / "missing.json"))
        self.assertEqual(
            (bad.returncode, bad.stderr),
            (
                1,
                f"echotwist.bench: error: cannot read {directory}/missing.json:"
                " No such file or directory\n",
            ),
        )

    def test_openLoop(self) -> None:
        """--rate reports the target, the achieved rate and both latencies."""
        result = bench(
            "--json", "--rate", "300", "-c", "3", *SHORT, "127.0.0.1", self.port
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertEqual(values["target_rate"], 300)
        self.assertGreater(values["achieved_rate"], 0)
        self.assertLessEqual(values["uncorrected"]["p50_us"], values["p50_us"])
        self.assertLessEqual(values["send_delay"]["p50_us"], values["p50_us"])
        # Each send's schedule delay is at most its send delay.
        for key in ("p50_us", "p99_us", "max_us"):
            self.assertLessEqual(
                values["schedule_delay"][key], values["send_delay"][key]
            )
        # Held sends are among those due in the window.
        self.assertLessEqual(
            values["held_sends"], values["target_rate"] * values["seconds"] + 1
        )
        self.assertEqual(values["parameters"]["rate"], 300)
        self.assertEqual(
            values["target"],
            {"host": "127.0.0.1", "port": int(self.port), "address": "127.0.0.1"},
        )

    def test_connectMode(self) -> None:
        """--mode connect counts connect/echo/close transactions."""
        result = bench("--json", "--mode", "connect", "-c", "2", *SHORT,
                       "127.0.0.1", self.port)  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertEqual(values["mode"], "connect")
        self.assertGreater(values["echoes"], 0)
        self.assertEqual(values["errors"], 0)

    def test_holdMode(self) -> None:
        """--mode hold holds every connection, from several source addresses."""
        result = bench("--json", "--mode", "hold", "-c", "30", "--sources", "3",
                       "--duration", "0.5", "127.0.0.1", self.port)  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertEqual(
            (values["echoes"], values["answered"], values["errors"]), (30, 30, 0)
        )
        hosts = {
            m.group(1)
            for m in (
                self.server.output.waitFor(rf"Handling client (127\.0\.0\.{n})/", 5)
                for n in (1, 2, 3)
            )
        }
        self.assertEqual(hosts, {"127.0.0.1", "127.0.0.2", "127.0.0.3"})

    def test_holdProcesses(self) -> None:
        """Hold-mode load processes each bind to a source address of their own."""
        result = bench("--json", "--mode", "hold", "--processes", "2", "-c", "6",
                       "--duration", "0.3", "127.0.0.1", self.port)  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertEqual(
            (values["echoes"], values["answered"], values["errors"]), (6, 6, 0)
        )
        for n in (1, 2):
            self.server.output.waitFor(rf"Handling client 127\.0\.0\.{n}/", 5)

    def test_processes(self) -> None:
        """--processes 2 runs two load processes and merges them."""
        result = bench("--json", "--processes", "2", "-c", "4", *SHORT,
                       "127.0.0.1", self.port)  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertEqual((values["processes"], values["connections"]), (2, 4))
        self.assertGreater(values["echoes"], 0)
        self.assertNotIn("histogram", values)

    def test_hlogAndMerge(self) -> None:
        """Two runs' interval logs merge: echoes and errors add exactly."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        logs = [str(directory / f"run{i}.hlog") for i in (1, 2)]
        runs = [
            report(
                bench(
                    "--json", "-c", "2", *SHORT, "--hlog", log, "127.0.0.1", self.port
                )
            )
            for log in logs
        ]
        self.assertTrue(Path(logs[0]).read_text().startswith("#[Histogram log format"))
        merged = bench("merge", "--json", *logs)
        self.assertEqual(merged.returncode, 0, merged.stderr)
        values = report(merged)
        self.assertEqual(values["runs"], 2)
        self.assertEqual(values["echoes"], runs[0]["echoes"] + runs[1]["echoes"])
        self.assertEqual(values["errors"], 0)
        self.assertGreaterEqual(
            values["max_us"], max(runs[0]["max_us"], runs[1]["max_us"])
        )

    def test_plot(self) -> None:
        """--plot writes a PNG picture of the latency distribution."""
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SkipTest("matplotlib is not installed (echotwist[plot])") from None
        path = Path(self.mktemp() + ".png").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        result = bench("-c", "2", *SHORT, "--plot", str(path), "127.0.0.1", self.port)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")


class LoadModeTests(SynchronousTestCase):
    """TLS, UDP, connect at a rate and stream against a real twistd."""

    def test_tls(self) -> None:
        """--tls --insecure loads a TLS listener; verified, a self-signed one fails."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        key, cert = makeCertificate(directory)
        server = startServer(
            self,
            listen=[f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
        )
        target = f"127.0.0.1:{server.port}"
        result = bench("--json", "--tls", "--insecure", "-c", "2", *SHORT, target)
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertGreater(values["echoes"], 0)
        self.assertTrue(values["parameters"]["tls"])
        verified = bench("--tls", "-c", "2", *SHORT, target)
        self.assertEqual(verified.returncode, 1)
        self.assertRegex(
            verified.stderr, rf"^echotwist\.bench: error: TLS with {target} failed: "
        )
        self.assertEqual(len(verified.stderr.splitlines()), 1, verified.stderr)

    def test_udp(self) -> None:
        """--udp echoes datagrams and counts loss (none against twistd --udp)."""
        server = startServer(self, "--udp-rate", "0", udp=["udp:0:interface=127.0.0.1"])
        target = f"127.0.0.1:{server.udpPorts[0]}"
        result = bench("--json", "--udp", "-c", "2", *SHORT, target)
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertGreater(values["echoes"], 0)
        self.assertEqual((values["lost"], values["errors"]), (0, 0))
        nothing = bench("--udp", "--timeout", "300ms", *SHORT, "127.0.0.1:9")
        self.assertEqual(nothing.returncode, 1)
        self.assertEqual(
            nothing.stderr,
            "echotwist.bench: error: no echo from 127.0.0.1:9 over UDP:"
            " port unreachable\n",
        )

    def test_connectRate(self) -> None:
        """--mode connect --rate opens connections on schedule, both latencies."""
        server = startServer(self)
        result = bench(
            "--json", "--mode", "connect", "--rate", "200", "-c", "20", *SHORT,
            f"127.0.0.1:{server.port}",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertEqual(values["target_rate"], 200)
        self.assertGreater(values["echoes"], 0)
        self.assertLessEqual(values["uncorrected"]["p50_us"], values["p50_us"])

    def test_stream(self) -> None:
        """--mode stream keeps 16 KiB chunks in flight and reports MB/s."""
        server = startServer(self)
        result = bench(
            "--json", "--mode", "stream", "-c", "2", *SHORT,
            f"127.0.0.1:{server.port}",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertEqual((values["size"], values["pipeline"]), (16384, 64))
        self.assertGreater(values["MB_per_s"], 0)
        self.assertEqual(values["errors"], 0)


class BenchAgainstBrokenServerTests(SynchronousTestCase):
    """A server that corrupts, duplicates or drops data is reported, exit 1."""

    def errorsFrom(self, *arguments: str) -> dict[str, int]:
        """Run the bench against C{arguments}; check the failure; its error kinds."""
        result = bench("--json", *arguments)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertRegex(result.stderr, r"^echotwist.bench: error: \d+ errors \(")
        values = report(result)
        self.assertGreater(values["errors"], 0)
        kinds = values["error_kinds"]
        assert isinstance(kinds, dict)
        return kinds

    def test_corrupt(self) -> None:
        """A flipped byte is a corrupt echo."""
        double = startStreamDouble(self, corruptAfter(5000))
        kinds = self.errorsFrom("-c", "1", *SHORT, "127.0.0.1", str(double.port))
        # Each replacement connection is corrupted again once it is 5000
        # bytes in, so there is at least one error and only of this kind.
        self.assertEqual(set(kinds), {"corrupt"})

    def test_duplicated(self) -> None:
        """A chunk echoed twice is a duplicated echo."""
        double = startStreamDouble(self, duplicateAfter(5000))
        kinds = self.errorsFrom("-c", "1", *SHORT, "127.0.0.1", str(double.port))
        self.assertEqual(set(kinds), {"duplicated"})

    def test_swallowed(self) -> None:
        """An echo that never comes back is a stalled echo."""
        double = startStreamDouble(self, swallowAfter(5000))
        kinds = self.errorsFrom("-c", "1", *SHORT, "127.0.0.1", str(double.port))
        self.assertEqual(kinds, {"stalled": 1})

    def test_connectModeCorrupt(self) -> None:
        """Connect mode verifies each transaction's echo too."""
        double = startStreamDouble(self, corruptAfter(3))
        result = bench("--json", "--mode", "connect", "-c", "1", *SHORT,
                       "127.0.0.1", str(double.port))  # fmt: skip
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.strip(),
            f"echotwist.bench: error: cannot echo with 127.0.0.1:{double.port}"
            " (corrupt)",
        )


class HoldAgainstBrokenServerTests(SynchronousTestCase):
    """Hold mode verifies each connection's set-up echo."""

    def test_corrupt(self) -> None:
        """Connections whose first echo is corrupt are not held; all bad: exit 1."""
        double = startStreamDouble(self, corruptAfter(3))
        result = bench("--mode", "hold", "-c", "3", "--duration", "0.2",
                       "127.0.0.1", str(double.port))  # fmt: skip
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                1,
                "",
                "echotwist.bench: error: cannot hold connections to"
                f" 127.0.0.1:{double.port} (corrupt)\n",
            ),
        )

    def test_silent(self) -> None:
        """A server that never echoes times the set-up out, counted as errors."""
        double = startStreamDouble(self, swallowAfter(0))
        result = bench("--mode", "hold", "-c", "2", "--timeout", "0.2",
                       "--duration", "0.2", "127.0.0.1", str(double.port))  # fmt: skip
        self.assertEqual(result.returncode, 1)
        self.assertIn("(timeout)", result.stderr)

    def test_silentAfterFirstEcho(self) -> None:
        """Connections that stop answering during the hold fail the run at the end.

        Each connection's first echo comes back, so all are held; the
        final echo after the hold never does.  The two load processes'
        counts merge.
        """
        double = startStreamDouble(self, swallowAfter(512))
        result = bench("--mode", "hold", "--processes", "2", "-c", "2",
                       "--timeout", "0.3", "--duration", "0.2",
                       "127.0.0.1", str(double.port))  # fmt: skip
        self.assertEqual(result.returncode, 1)
        lines = result.stdout.splitlines()
        self.assertRegex(lines[1], r"^2 connections held for 0\.\d\d s \(set up in ")
        self.assertRegex(
            lines[2],
            r"^0 answered a final echo after the hold, 2 did not \(checked in ",
        )
        self.assertEqual(
            result.stderr,
            "echotwist.bench: error: 2 errors (hold_final_timeout 2)\n",
        )


class CoordinatedOmissionTests(SynchronousTestCase):
    """The open loop shows a server stall that the actual-send timing hides."""

    def test_stall(self) -> None:
        """A 300 ms stall: every message due meanwhile carries it, corrected."""
        double = startStreamDouble(self, stallAt(512 * 100, 0.3))
        result = bench("--json", "--rate", "200", "-c", "1", "--duration", "1.5",
                       "--warmup", "0", "127.0.0.1", str(double.port))  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        values = report(result)
        self.assertGreaterEqual(values["max_us"], 300000)
        self.assertGreater(values["p90_us"], values["uncorrected"]["p90_us"])


class BenchCommandLineTests(SynchronousTestCase):
    """Usage errors and unreachable servers give one clear line."""

    def test_refused(self) -> None:
        """No server: one line, exit 1."""
        double = startStreamDouble(self, corruptAfter(0))
        port = str(double.port)
        double.stop()
        result = bench("-c", "2", *SHORT, "127.0.0.1", port)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                1,
                "",
                f"echotwist.bench: error: connection refused by 127.0.0.1:{port}\n",
            ),
        )

    def test_usage(self) -> None:
        """Bad options exit 2 with an error line, not a traceback."""
        for arguments in (
            ("-c", "0", "h"),
            ("--duration", "x", "h"),
            ("--mode", "hold", "--rate", "5", "h"),
            ("--sources", "2", "::1"),
            ("h", "70000"),
        ):
            result = bench(*arguments)
            self.assertEqual(result.returncode, 2, (arguments, result.stderr))
            self.assertIn("error:", result.stderr.splitlines()[-1])
            self.assertNotIn("Traceback", result.stderr)

    def test_mergeBadFile(self) -> None:
        """Merging a file that is not a log is one error line, exit 1."""
        path = Path(self.mktemp()).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a log\n")
        result = bench("merge", str(path))
        self.assertEqual(
            (result.returncode, result.stderr),
            (1, f"echotwist.bench: error: {path} holds no interval histograms\n"),
        )


class InstalledTests(SynchronousTestCase):
    """The installed package (not just the source tree) carries the bench."""

    def test_installedBench(self) -> None:
        """C{python -m echotwist.bench --help} works outside the source tree."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(
            [sys.executable, "-m", "echotwist.bench", "--help"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=str(directory),
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("usage: python -m echotwist.bench", result.stdout)


class ProgressTests(SynchronousTestCase):
    """The live progress line appears on a terminal, and only there."""

    def test_terminal(self) -> None:
        """On a pseudo-terminal the progress line is drawn, then the report."""
        server = startServer(self)
        primary, secondary = pty.openpty()
        self.addCleanup(os.close, primary)
        process = subprocess.Popen(
            [sys.executable, "-m", "echotwist.bench", "-c", "2", "--duration",
             "1.2", "--warmup", "0", "--interval", "0.3", "127.0.0.1",
             str(server.port)],
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=subprocess.PIPE,
            cwd=str(PROJECT_ROOT),
            env=childEnvironment(),
        )  # fmt: skip
        os.close(secondary)
        self.addCleanup(process.kill)
        output = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal.
                break
            if not chunk:
                break
            output += chunk
        self.assertEqual(process.wait(WAIT), 0)
        self.assertRegex(output, rb"echoes/s  p50 \d+  p99 \d+  max \d+ us  errors 0")
        self.assertIn(b"errors: 0", output)


class MissingExtraTests(SynchronousTestCase):
    """Without the bench extra the bench says what to install."""

    def test_noHdrHistogram(self) -> None:
        """With hdrhistogram unimportable: one line naming the extra, exit 1."""
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import runpy, sys; sys.modules['hdrh'] = None;"
                " runpy.run_module('echotwist.bench', run_name='__main__')",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=str(PROJECT_ROOT),
            env=childEnvironment(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        self.assertEqual(
            (result.returncode, result.stderr),
            (
                1,
                "echotwist.bench: error: needs hdrh (the 'bench' extra):"
                " pip install 'echotwist[bench]'\n",
            ),
        )


class InterruptTests(SynchronousTestCase):
    """Signals end a run (and its load processes) with a non-zero exit."""

    def setUp(self) -> None:
        """One server; the runs asked for outlast every wait of the test."""
        self.server = startServer(self)

    def startBench(self, *arguments: str, warmup: str = "0") -> subprocess.Popen[str]:
        """Start a 120-second bench run (never allowed to finish), killed at cleanup."""
        process = subprocess.Popen(
            [sys.executable, "-m", "echotwist.bench", *arguments, "-w", warmup,
             "-d", "120", "127.0.0.1", str(self.server.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(PROJECT_ROOT),
            env=childEnvironment(),
            start_new_session=True,
        )  # fmt: skip

        def kill() -> None:
            # The whole session: children included, should any be left.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=WAIT)

        self.addCleanup(kill)
        return process

    def followLog(self) -> tuple[str, OutputReader]:
        """A FIFO to give the bench as C{--hlog}, and its lines as they come.

        The bench flushes each interval's line as it is measured, so a line
        in the log means the run has measured something.  This test keeps
        a write end of its own open, so the reader sees no end of file
        before the bench has opened the FIFO (nor blocks opening it).
        """
        # Absolute: the bench runs in the project's root.
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        path = directory / "run.hlog"
        os.mkfifo(path)
        readEnd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        ownWriteEnd = os.open(path, os.O_WRONLY)
        os.set_blocking(readEnd, True)
        stream = os.fdopen(readEnd, encoding="utf-8")
        reader = OutputReader(stream)

        def close() -> None:
            # Runs after the bench is killed (cleanups run last first).
            os.close(ownWriteEnd)
            reader.waitClosed()
            stream.close()

        self.addCleanup(close)
        return str(path), reader

    def assertInterrupted(self, process: subprocess.Popen[str], code: int) -> str:
        """The bench ended with C{code} and an error line, no traceback."""
        out, err = process.communicate(timeout=WAIT)
        self.assertEqual(process.returncode, code, err)
        self.assertNotIn("Traceback", err)
        self.assertRegex(err.splitlines()[-1], r"^echotwist\.bench: error: interrupted")
        return out

    def test_sigint(self) -> None:
        """SIGINT after an interval was measured: its report, exit 130, one line."""
        path, log = self.followLog()
        process = self.startBench("--json", "-c", "2", "--hlog", path)
        log.waitFor(r"^[0-9.]+,[0-9.]+,")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
        self.assertEqual(process.returncode, 130, err)
        report = json.loads(out)
        self.assertEqual(report["mode"], "pingpong")
        self.assertGreater(report["seconds"], 0)
        self.assertRegex(
            err,
            r"^echotwist\.bench: error: interrupted by SIGINT: report of"
            r" [0-9]+\.[0-9] s\n$",
        )

    def test_sigintBeforeMeasuring(self) -> None:
        """SIGINT during the warm-up: no report, exit 130, one line saying so."""
        process = self.startBench("--json", "-c", "2", warmup="120")
        self.server.output.waitForAll(r"Handling client", count=2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
        self.assertEqual(
            (process.returncode, out, err),
            (
                130,
                "",
                "echotwist.bench: error: interrupted by SIGINT before anything"
                " was measured\n",
            ),
        )

    def test_sigtermStopsChildren(self) -> None:
        """SIGTERM to a --processes parent: exit 143, and its children stop."""
        process = self.startBench("--json", "-c", "2", "--processes", "2")
        self.server.output.waitForAll(r"Handling client", count=2)
        process.send_signal(signal.SIGTERM)
        self.assertInterrupted(process, 143)
        self.server.output.waitForAll(r"Closed client", count=2)

    def test_childrenEndWithKilledParent(self) -> None:
        """Children whose parent was killed outright stop loading the server."""
        process = self.startBench("--json", "-c", "2", "--processes", "2")
        self.server.output.waitForAll(r"Handling client", count=2)
        process.kill()
        process.wait(WAIT)
        self.server.output.waitForAll(r"Closed client", count=2)
