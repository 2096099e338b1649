"""End-to-end: supervision and signals with the real C{twistd echo}.

Workers killed with SIGKILL are replaced on the same sockets while a
prober connecting every 20 ms sees no refusal; workers that keep dying
stop the supervisor with exit status 1; SIGHUP reloads the workers
without refusing a connection or cutting a transfer (and a single process
serves on); a signal to the whole process group drains once and exits 0;
JSON logs stay JSON from every process.  Unit tests are in
L{echotwist.test.test_supervision}.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import (
    ServerProcess,
    connect,
    receiveExactly,
    scrapeMetrics,
    startProcess,
    startServer,
    transfer,
    twistdCommand,
)
from echotwist.test.e2e.prober import Prober

_WORKER = r"Worker (\d) \(pid (\d+)\) listening"


def workerPids(server: ServerProcess, count: int = 2, after: int = 0) -> list[int]:
    """Wait for C{count} workers to listen (from output line C{after} on);
    return their pids, in the order of their numbers.  Without C{after},
    wait for the supervisor to know they all do, too.
    """
    if not after:
        server.output.waitFor(r"Listening on \S+ with \d+ workers")
    matches = server.output.waitForAll(_WORKER, count, after=after)
    return [int(m.group(2)) for m in sorted(matches, key=lambda m: m.group(1))]


def gone(pid: int) -> bool:
    """Whether process C{pid} has exited and been reaped."""
    return not Path(f"/proc/{pid}").exists()


class ReplacementTests(SynchronousTestCase):
    """A worker killed outright is replaced; the port never refuses."""

    def test_killedWorkersReplaced(self) -> None:
        """Both workers killed in turn: replaced, counted, nothing refused."""
        server = startServer(
            self, "--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1"
        )
        pids = workerPids(server)
        metrics = {
            m.group(1): m.group(2)
            for m in server.output.waitForAll(r"\[worker(\d)\] Metrics on (tcp:\S+)", 2)
        }
        with Prober(server.port) as prober:
            for number, pid in enumerate(pids, 1):
                mark = len(server.output.lines)
                os.kill(pid, signal.SIGKILL)
                server.output.waitFor(
                    rf"Worker {number} serves again after [\d.]+ s", after=mark
                )
                connect(server.port).close()
        self.assertEqual((prober.refused, prober.failed), (0, []), prober.summary())
        self.assertGreater(prober.echoed, 0)
        for pid in pids:
            self.assertTrue(gone(pid))
        # Each replacement serves the same metrics port, and counts itself.
        for worker, address in metrics.items():
            samples = scrapeMetrics(address)
            self.assertEqual(
                samples[f'echotwist_worker_restarts_total{{worker="{worker}"}}'], 1
            )
        self.assertEqual(server.stop(), 0)
        self.assertNotIn("Traceback", server.output.waitClosed())

    def test_allWorkersKilled(self) -> None:
        """With every worker dead, a new connection waits and is served."""
        server = startServer(self, "--workers", "2")
        pids = workerPids(server)
        mark = len(server.output.lines)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # Nothing serves now; the supervisor's sockets still queue clients.
        with connect(server.port) as client:
            client.sendall(b"queued")
            self.assertEqual(receiveExactly(client, 6), b"queued")
        workerPids(server, after=mark)
        self.assertEqual(server.stop(), 0)

    def test_crashLoopGivesUp(self) -> None:
        """More than --max-restarts exits: one line, every process gone, exit 1."""
        server = startServer(
            self, "--workers", "2", "--max-restarts", "1", "--restart-window", "600"
        )
        pids = workerPids(server)
        mark = len(server.output.lines)
        os.kill(pids[0], signal.SIGKILL)
        replacement = workerPids(server, 1, after=mark)
        os.kill(pids[1], signal.SIGKILL)
        self.assertEqual(server.wait(), 1)
        output = server.output.waitClosed()
        self.assertIn(
            "twistd echo: giving up: 2 unexpected worker exits within 600 s"
            " (see --max-restarts, --restart-window)",
            output.splitlines(),
        )
        self.assertNotIn("Traceback", output)
        for pid in [*pids, *replacement]:
            self.assertTrue(gone(pid), f"worker {pid} left")


class ReloadTests(SynchronousTestCase):
    """SIGHUP reloads the workers; nothing is refused or cut."""

    def test_reloadUnderLoad(self) -> None:
        """New workers take over mid-transfer; the old ones finish it."""
        server = startServer(self, "--workers", "2")
        old = workerPids(server)
        payload = bytes(range(256)) * 8192
        mark = len(server.output.lines)

        def reload() -> None:
            server.signal(signal.SIGHUP)
            server.output.waitFor(r"Reloaded: 2 new workers serve", after=mark)

        with Prober(server.port) as prober:
            echoed = transfer(server.port, payload, midway=reload)
            new = workerPids(server, after=mark)
        self.assertTrue(echoed == payload, "the transfer was cut or altered")
        self.assertEqual((prober.refused, prober.failed), (0, []), prober.summary())
        self.assertEqual(set(old) & set(new), set())
        self.assertEqual(server.stop(), 0)
        output = server.output.waitClosed()
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Reload failed", output)
        for pid in [*old, *new]:
            self.assertTrue(gone(pid), f"worker {pid} left")

    def test_singleProcessServesOn(self) -> None:
        """One process logs SIGHUP and goes on; a transfer in flight is intact."""
        server = startServer(self)
        payload = bytes(range(256)) * 8192

        def hangUp() -> None:
            server.signal(signal.SIGHUP)
            server.output.waitFor(r"Received SIGHUP; one process does not reload")

        echoed = transfer(server.port, payload, midway=hangUp)
        self.assertTrue(echoed == payload, "the transfer was cut or altered")
        connect(server.port).close()
        self.assertEqual(server.stop(), 0)


class GroupSignalTests(SynchronousTestCase):
    """A signal to the whole process group: one drain, exit 0, no traceback."""

    def groupSignal(self, number: int, *twistdOptions: str) -> str:
        """Start C{--workers 2} in a group of its own with a client
        connected, signal the group twice (as the supervisor's own SIGTERM
        or a second Ctrl-C would follow), check the exit; return the output.
        """
        command = twistdCommand(
            "-n",
            "--pidfile=",
            *twistdOptions,
            "echo",
            "--workers",
            "2",
            "--port",
            "tcp:0:interface=127.0.0.1",
        )
        server = startProcess(self, command, newSession=True)
        listening = server.output.waitFor(r"Listening on tcp:127\.0\.0\.1:(\d+)")
        server.port = int(listening.group(1))
        pids = workerPids(server)
        client = connect(server.port)
        self.addCleanup(client.close)
        client.sendall(b"hi")
        self.assertEqual(client.recv(2), b"hi")
        name = signal.Signals(number).name
        os.killpg(server.pid, number)
        # The worker holding the client drains (up to 10 s): signal again.
        server.output.waitFor(r"Draining 1 connections")
        os.killpg(server.pid, number)
        # Handled: said so (or, before this was fixed, a traceback).
        server.output.waitFor(
            rf"Received {name} again; already shutting down|ReactorNotRunning"
        )
        client.close()
        self.assertEqual(server.wait(), 0)
        output = server.output.waitClosed()
        self.assertNotIn("Traceback", output)
        self.assertNotIn("ReactorNotRunning", output)
        for pid in pids:
            self.assertTrue(gone(pid), f"worker {pid} left")
        return output

    def test_sigterm(self) -> None:
        """As systemd and C{timeout} stop a service: each worker drains once."""
        output = self.groupSignal(signal.SIGTERM)
        for number in (1, 2):
            self.assertEqual(
                output.count(f"[worker{number}] Received SIGTERM, draining"), 1
            )

    def test_sigint(self) -> None:
        """Ctrl-C in a terminal: the same orderly stop, exit 0."""
        output = self.groupSignal(signal.SIGINT)
        for number in (1, 2):
            self.assertEqual(
                output.count(f"[worker{number}] Received SIGINT, draining"), 1
            )

    def test_jsonFromEveryProcess(self) -> None:
        """With the JSON logger every line, workers' included, is JSON."""
        output = self.groupSignal(
            signal.SIGTERM, "--logger=echotwist.logging.jsonLogger"
        )
        records = [json.loads(line) for line in output.splitlines()]
        self.assertTrue(all(isinstance(r, dict) for r in records))
        self.assertEqual({r.get("worker") for r in records}, {None, 1, 2})
