"""End-to-end: C{twistd -r uvloop echo --workers N --listen aiotcp:PORT}.

The real supervisor on the uvloop (or Twisted's asyncio) reactor shares
C{aiotcp:} ports with its workers, which serve them with the event loop's
own server and transports under the unchanged Echo: clients (some
half-closing) get every byte back, both workers serve, SIGTERM drains and
exits 0, and a supervisor killed outright takes its workers with it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import (
    RawClients,
    ServerProcess,
    checkDrainDuringTransfer,
    connect,
    listeningSocket,
    runServer,
    scrapeMetrics,
    startServer,
    withFileLimit,
)

NATIVE = "aiotcp:0:interface=127.0.0.1"


def startWorkers(
    test: SynchronousTestCase,
    *arguments: str,
    listen: tuple[str, ...] = (NATIVE,),
    reactor: str = "uvloop",
    launcher: tuple[str, ...] = (),
) -> tuple[ServerProcess, list[int], dict[str, int]]:
    """Start C{twistd -r REACTOR echo --workers 2} on C{listen}.

    Return the server once it has announced every address, the port of
    each listener (in C{listen}'s order) and each worker's pid by index.
    """
    server = startServer(
        test,
        "--workers",
        "2",
        *arguments,
        listen=listen,
        twistdOptions=("-r", reactor),
        launcher=launcher,
        wait=False,
    )
    announced = server.output.waitForAll(
        r"Listening on tcp:127\.0\.0\.1:(\d+) with 2 workers", len(listen)
    )
    ports = [int(m.group(1)) for m in announced]
    server.port = ports[0]
    pids = {
        m.group(1): int(m.group(2))
        for m in server.output.waitForAll(r"Worker (\d) \(pid (\d+)\) listening", 2)
    }
    return server, ports, pids


def workerCommandLine(pid: int) -> list[str]:
    """The arguments of worker C{pid}, after C{-m echotwist.workers}."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [a.decode() for a in arguments if a]
    return words[words.index("echotwist.workers") + 1 :]


class NativeWorkersTests(SynchronousTestCase):
    """C{--workers 2} on C{aiotcp:} listeners."""

    def test_echoSpreadAndStop(self) -> None:
        """Clients (half-closing too) echo over both uvloop workers; SIGTERM exits 0."""
        server, [port], pids = startWorkers(self)
        for index, pid in pids.items():
            self.assertEqual(
                workerCommandLine(pid)[:3], [index, "uvloop", "aiotcp:4"], pid
            )
        # 24 clients that stay open, all connected at once.
        open_ = RawClients(self, ("127.0.0.1", port), 24)
        payloads = [os.urandom(1000 + 997 * i) for i in range(24)]
        self.assertEqual(open_.exchange(payloads, halfClose=False), payloads)
        # 16 that send 256 KiB each and shut their sending side as soon as it
        # is out (before reading all the echo): every byte must still come
        # back, then the server's close.
        closing = RawClients(self, ("127.0.0.1", port), 16)
        large = [os.urandom(256 * 1024) for _ in range(16)]
        echoed = closing.exchange(large, halfClose=True)
        self.assertEqual([len(e) for e in echoed], [len(p) for p in large])
        self.assertTrue(echoed == large, "echoed bytes differ")
        handled = server.output.waitForAll(r"\[worker(\d)\] Handling client", 40)
        counts = {n: [m.group(1) for m in handled].count(n) for n in ("1", "2")}
        self.assertTrue(all(counts.values()), counts)
        server.output.waitForAll(
            rf"\[worker\d\] Closed client 127\.0\.0\.1/\d+: {256 * 1024} bytes", 16
        )
        self.assertEqual(server.stop(), 0)
        output = server.output.waitClosed()
        self.assertNotIn("Traceback", output)
        self.assertEqual(len(re.findall(r"\[worker\d\] Stopped listening", output)), 2)
        for pid in pids.values():
            self.assertFalse(Path(f"/proc/{pid}").exists(), f"worker {pid} left")

    def test_sigtermDuringTransfer(self) -> None:
        """SIGTERM mid-transfer: a worker drains it intact; every process exits 0."""
        server, [port], pids = startWorkers(self, "--shutdown-timeout=20")
        checkDrainDuringTransfer(self, server, port, list(pids.values()))

    def test_supervisorKilled(self) -> None:
        """Workers of a uvloop supervisor killed outright drain and exit too."""
        server, _, _ = startWorkers(self)
        server.signal(signal.SIGKILL)
        self.assertEqual(server.wait(), -signal.SIGKILL)
        # The workers hold the output pipe until they exit.
        output = server.output.waitClosed()
        self.assertEqual(output.count("Received SIGTERM, draining"), 2)
        self.assertEqual(len(re.findall(r"\[worker\d\] Stopped listening", output)), 2)
        self.assertNotIn("Traceback", output)

    def test_mixedAsyncioMetricsLimits(self) -> None:
        """Under -r asyncio: tcp: beside aiotcp:, per-worker metrics, limits raised."""
        server, ports, pids = startWorkers(
            self,
            "--metrics",
            "tcp:0:interface=127.0.0.1",
            "--max-connections",
            "2000",
            listen=("tcp:0:interface=127.0.0.1", NATIVE),
            reactor="asyncio",
            launcher=tuple(withFileLimit(256, 4096)),
        )
        self.assertNotEqual(ports[0], ports[1])
        for index, pid in pids.items():
            self.assertEqual(
                workerCommandLine(pid)[:5],
                [index, "asyncio", "tcp:4", "aiotcp:5", "metrics=tcp:6"],
            )
            limits = Path(f"/proc/{pid}/limits").read_text()
            self.assertRegex(limits, r"Max open files\s+2064\s+4096\s")
        found = server.output.waitForAll(
            r"\[worker(\d)\] Metrics on (tcp:127\.0\.0\.1:\d+)", 2
        )
        metrics = {m.group(1): m.group(2) for m in found}
        for i in range(10):
            for port in ports:
                with connect(port) as sock:
                    sock.sendall(b"%d" % i)
                    self.assertEqual(sock.recv(16), b"%d" % i)
        server.output.waitForAll(r"\[worker\d\] Closed client", 20)
        total = sum(
            scrapeMetrics(metrics[n])["echotwist_connections_total"] for n in ("1", "2")
        )
        self.assertEqual(total, 20)
        self.assertEqual(server.stop(), 0)
        self.assertNotIn("Traceback", server.output.waitClosed())

    def test_ipv6(self) -> None:
        """An C{aiotcp:} interface with colons is shared as IPv6."""
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        server = startServer(
            self,
            "--workers",
            "2",
            listen=(r"aiotcp:0:interface=\:\:1",),
            twistdOptions=("-r", "uvloop"),
            wait=False,
        )
        port = int(
            server.output.waitFor(
                r"Listening on tcp6:\[::1\]:(\d+) with 2 workers"
            ).group(1)
        )
        with socket.create_connection(("::1", port), 30) as sock:
            sock.sendall(b"six")
            self.assertEqual(sock.recv(16), b"six")
        self.assertEqual(server.stop(), 0)

    def test_portInUse(self) -> None:
        """A taken aiotcp: port ends start-up with one line and status 1."""
        port = listeningSocket(self).getsockname()[1]
        server = startServer(
            self,
            "--workers",
            "2",
            listen=(f"aiotcp:{port}:interface=127.0.0.1",),
            twistdOptions=("-r", "uvloop"),
            wait=False,
        )
        self.assertEqual(server.wait(), 1)
        output = server.output.waitClosed()
        self.assertIn(
            f"twistd echo: cannot listen on aiotcp:{port}:interface=127.0.0.1:", output
        )
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Worker 1", output)

    def test_needsAsyncioReactor(self) -> None:
        """Without an asyncio reactor, aiotcp: workers are one usage line, exit 2."""
        result = runServer("--workers", "2", "--listen", NATIVE)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.splitlines()), 1)
        self.assertIn("aiotcp needs an asyncio reactor", result.stderr)
