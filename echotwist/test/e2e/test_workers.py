"""End-to-end: the real C{twistd echo --workers 2}.

Connections spread over both workers, workers pin, raise their file limit,
time out idle clients and serve metrics, and SIGTERM (or the supervisor's
death) stops them all.  Unit tests of L{echotwist.workers} are in
L{echotwist.test.test_workers}.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.test.e2e.harness import (
    WAIT,
    checkDrainDuringTransfer,
    closedByPeer,
    connect,
    listeningSocket,
    scrapeMetrics,
    startServer,
    withFileLimit,
)
from echotwist.workers.config import kernelSteersByCpu


class EndToEndTests(SynchronousTestCase):
    """The real C{twistd echo --workers 2}."""

    def test_spreadAndStop(self) -> None:
        """Connections reach both workers; SIGTERM stops every process."""
        server = startServer(self, "--workers", "2")
        pids = [
            int(m.group(1))
            for m in server.output.waitForAll(r"Worker \d \(pid (\d+)\) listening", 2)
        ]
        connections = []
        for i in range(40):
            connection = socket.create_connection(("127.0.0.1", server.port), WAIT)
            connection.settimeout(WAIT)
            connections.append(connection)
            connection.sendall(b"%d" % i)
            self.assertEqual(connection.recv(16), b"%d" % i)
        for connection in connections:
            connection.close()
        handled = server.output.waitForAll(r"\[worker(\d)\] Handling client", 40)
        counts = {n: [m.group(1) for m in handled].count(n) for n in ("1", "2")}
        self.assertTrue(all(counts.values()), counts)
        self.assertEqual(server.stop(), 0)
        for pid in pids:
            self.assertFalse(Path(f"/proc/{pid}").exists(), f"worker {pid} left")
        self.assertNotIn(os.getpid(), pids)

    def test_pinnedWorkersSteered(self) -> None:
        """C{--pin-workers}: each worker runs on its own CPU and is given
        the connections made from that CPU.
        """
        cpus = sorted(os.sched_getaffinity(0))[:2]
        if len(cpus) < 2:
            raise SkipTest("--pin-workers spreads over CPUs: needs two")
        if not kernelSteersByCpu(platform.release()):
            raise SkipTest("SO_INCOMING_CPU steers SO_REUSEPORT groups from Linux 6.2")
        server = startServer(self, "--workers", "2", "--pin-workers")
        pinned = server.output.waitForAll(
            r"\[worker(\d)\] Worker \d runs on CPU (\d+)", 2
        )
        self.assertEqual(
            sorted((m.group(1), int(m.group(2))) for m in pinned),
            [("1", cpus[0]), ("2", cpus[1])],
        )
        listening = server.output.waitForAll(r"Worker (\d) \(pid (\d+)\) listening", 2)
        for match in listening:
            status = Path(f"/proc/{match.group(2)}/status").read_text()
            cpu = cpus[int(match.group(1)) - 1]
            self.assertRegex(status, rf"Cpus_allowed_list:\s+{cpu}\n")
        # Connect from each CPU in turn: the handshake is handled on the
        # connecting CPU (loopback), so the worker pinned there accepts.
        everywhere = os.sched_getaffinity(0)
        self.addCleanup(os.sched_setaffinity, 0, everywhere)
        fromCpu = {}
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            for i in range(8):
                connection = socket.create_connection(("127.0.0.1", server.port), WAIT)
                with connection:
                    connection.settimeout(WAIT)
                    connection.sendall(b"%d" % i)
                    self.assertEqual(connection.recv(16), b"%d" % i)
                    fromCpu[connection.getsockname()[1]] = cpu
        os.sched_setaffinity(0, everywhere)
        handled = server.output.waitForAll(
            r"\[worker(\d)\] Handling client 127\.0\.0\.1/(\d+)", 16
        )
        self.assertEqual(
            sorted((fromCpu[int(m.group(2))], m.group(1)) for m in handled),
            [(cpus[0], "1")] * 8 + [(cpus[1], "2")] * 8,
        )
        self.assertEqual(server.stop(), 0)

    def test_fileLimitRaised(self) -> None:
        """Each worker raises its soft open-file limit for --max-connections."""
        server = startServer(
            self,
            "--workers",
            "2",
            "--max-connections",
            "2000",
            launcher=withFileLimit(256, 4096),
        )
        raised = server.output.waitForAll(
            r"\[worker(\d)\] Raised the open-file limit \(RLIMIT_NOFILE\) from 256"
            r" to 2064 for --max-connections 2000",
            2,
        )
        self.assertEqual(sorted(m.group(1) for m in raised), ["1", "2"])
        pids = [
            m.group(1)
            for m in server.output.waitForAll(r"Worker \d \(pid (\d+)\) listening", 2)
        ]
        for pid in pids:
            limits = Path(f"/proc/{pid}/limits").read_text()
            self.assertRegex(limits, r"Max open files\s+2064\s+4096\s")
        self.assertEqual(server.stop(), 0)

    def test_portInUse(self) -> None:
        """A port already taken ends start-up with one line and status 1."""
        port = listeningSocket(self).getsockname()[1]
        server = startServer(
            self,
            "--workers",
            "2",
            listen=(f"tcp:{port}:interface=127.0.0.1",),
            wait=False,
        )
        self.assertEqual(server.wait(), 1)
        server.output.waitFor(rf"twistd echo: cannot listen on tcp:{port}:")
        self.assertNotIn("Traceback", server.output.text())

    def test_fastEpollWorkers(self) -> None:
        """Under C{twistd -r fastepoll} the workers start on it and echo."""
        server = startServer(self, "--workers", "2", twistdOptions=("-r", "fastepoll"))
        server.output.waitForAll(r"Worker \d \(pid \d+\) listening", 2)
        connection = socket.create_connection(("127.0.0.1", server.port), WAIT)
        self.addCleanup(connection.close)
        connection.settimeout(WAIT)
        connection.sendall(b"fast")
        self.assertEqual(connection.recv(16), b"fast")
        self.assertEqual(server.stop(), 0)

    def test_idleTimeout(self) -> None:
        """With C{--idle-timeout 1} the workers abort idle connections."""
        server = startServer(self, "--workers", "2", "--idle-timeout", "1")
        server.output.waitForAll(r"Worker \d \(pid \d+\) listening", 2)
        idle = []
        for i in range(6):
            sock = connect(server.port)
            self.addCleanup(sock.close)
            # An echo proves a worker has accepted it; then it goes quiet.
            sock.sendall(b"%d" % i)
            self.assertEqual(sock.recv(16), b"%d" % i)
            idle.append(sock)
        aborted = server.output.waitForAll(
            r"\[worker\d\] Idle client 127\.0\.0\.1/(\d+): no traffic for 1 s", 6
        )
        self.assertEqual(
            sorted(int(m.group(1)) for m in aborted),
            sorted(sock.getsockname()[1] for sock in idle),
        )
        for sock in idle:
            self.assertTrue(closedByPeer(sock))
        self.assertEqual(server.stop(), 0)

    def test_sigtermDuringTransfer(self) -> None:
        """SIGTERM mid-transfer: a worker drains it intact; every process exits 0."""
        server = startServer(self, "--workers", "2", "--shutdown-timeout=20")
        pids = [
            int(m.group(1))
            for m in server.output.waitForAll(r"Worker \d \(pid (\d+)\) listening", 2)
        ]
        checkDrainDuringTransfer(self, server, server.port, pids)

    def test_supervisorKilled(self) -> None:
        """Workers of a supervisor killed outright drain and exit too."""
        server = startServer(self, "--workers", "2")
        server.output.waitForAll(r"Worker \d \(pid \d+\) listening", 2)
        server.signal(signal.SIGKILL)
        self.assertEqual(server.wait(), -signal.SIGKILL)
        # The workers hold the output pipe until they exit, so it ends only
        # once both have.  (Their pids may linger a moment as they exit, so
        # /proc is no sign of it.)
        output = server.output.waitClosed()
        self.assertEqual(output.count("Received SIGTERM, draining"), 2)
        self.assertEqual(output.count("] Main loop terminated"), 2)
        self.assertNotIn("Traceback", output)

    def test_metricsPerWorker(self) -> None:
        """Each worker serves its own metrics; together they count every client."""
        server = startServer(
            self, "--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1"
        )
        found = server.output.waitForAll(
            r"\[worker(\d)\] Metrics on (tcp:127\.0\.0\.1:\d+)", 2
        )
        addresses = {m.group(1): m.group(2) for m in found}
        self.assertEqual(sorted(addresses), ["1", "2"])
        server.output.waitForAll(r"Worker \d \(pid \d+\) listening", 2)
        for i in range(20):
            with connect(server.port) as sock:
                sock.sendall(b"%d" % i)
                self.assertEqual(sock.recv(16), b"%d" % i)
        closed = server.output.waitForAll(r"\[worker(\d)\] Closed client", 20)
        perWorker = [scrapeMetrics(addresses[n]) for n in ("1", "2")]
        for n, samples in zip(("1", "2"), perWorker, strict=True):
            self.assertEqual(
                samples["echotwist_connections_total"],
                [m.group(1) for m in closed].count(n),
            )
        self.assertEqual(sum(s["echotwist_connections_total"] for s in perWorker), 20)
        self.assertEqual(server.stop(), 0)

    def test_metricsPortInUse(self) -> None:
        """A taken metrics port ends start-up with one line and status 1."""
        port = listeningSocket(self).getsockname()[1]
        server = startServer(
            self,
            "--workers",
            "2",
            "--metrics",
            f"tcp:{port - 1}:interface=127.0.0.1",
            wait=False,
        )
        self.assertEqual(server.wait(), 1)
        # Worker 2's port is the taken one (unless something else holds
        # worker 1's).
        server.output.waitFor(
            rf"twistd echo: cannot listen on tcp:({port - 1}|{port}):"
        )
        self.assertNotIn("Traceback", server.output.text())
        self.assertNotIn("Worker 1", server.output.text())
