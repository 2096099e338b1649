"""End-to-end attacks on a real C{twistd -n echo}.

Each test attacks a real server on 127.0.0.1 and checks that it keeps
serving other clients (the real client, C{python -m echotwist.client})
and loses nothing that it accepted.  Every wait is bounded (L{e2e.WAIT});
nothing sleeps to synchronise: tests wait for the server's log lines, for
sockets to close, or for processes to exit.
"""

from __future__ import annotations

import re
import select
import signal
import socket
import struct
import time

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import (
    WAIT,
    ServerProcess,
    closedAtOnce,
    closedByPeer,
    connect,
    receiveExactly,
    runClient,
    scrapeMetrics,
    startServer,
    transfer,
    withFileLimit,
)

METRICS = "tcp:0:interface=127.0.0.1"


def metricsAddress(server: ServerProcess) -> str:
    """The metrics endpoint's bound address, from the server's log."""
    return server.output.waitFor(r"Metrics on (\S+)").group(1)


class AdversarialTests(SynchronousTestCase):
    """A real server survives hostile clients and keeps serving the others."""

    def assertServes(self, server: ServerProcess, word: str = "still here") -> None:
        """The real client gets its echo from C{server}."""
        result = runClient("127.0.0.1", word, str(server.port))
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f"Received: {word}\n", ""),
        )

    def test_slowlorisClosedByIdleTimeout(self) -> None:
        """Connections that send little or nothing are aborted after --idle-timeout."""
        server = startServer(self, "--idle-timeout=1")
        attackers = [connect(server.port) for _ in range(20)]
        for sock in attackers[::2]:
            # Half of them start a 'request' and stall, slowloris style.
            sock.sendall(b"GET / HTTP/1.1\r\n")
        self.assertServes(server)
        server.output.waitForAll(r"Idle client 127\.0\.0\.1/\d+", 20)
        for sock in attackers:
            with sock:
                self.assertTrue(closedByPeer(sock))
        self.assertServes(server, "after the idle sweep")

    def test_neverReadingClient(self) -> None:
        """A client that sends without reading cannot grow the server's memory."""
        server = startServer(self, "--idle-timeout=2")
        before = server.rssKiB()
        sock = connect(server.port)
        sock.setblocking(False)
        sent = 0
        chunk = b"n" * 65536
        deadline = time.monotonic() + 10
        # Push until the kernel buffers on both sides are full: the server
        # must have stopped reading, or this would go on to the deadline.
        stalled = 0
        while time.monotonic() < deadline and stalled < 10 and sent < 512 * 2**20:
            try:
                sent += sock.send(chunk)
                stalled = 0
            except BlockingIOError:
                # Wait (bounded) for room; ten waits without room: stalled.
                _, writable, _ = select.select([], [sock], [], 0.1)
                stalled = 0 if writable else stalled + 1
        self.assertServes(server, "while one client never reads")
        grown = server.rssKiB() - before
        port = sock.getsockname()[1]
        server.output.waitFor(rf"Idle client 127\.0\.0\.1/{port}: no traffic for 2 s")
        closed = server.output.waitFor(
            rf"Closed client 127\.0\.0\.1/{port}: (\d+) bytes"
        )
        sock.close()
        self.assertEqual(stalled, 10, f"the server kept reading: {sent} bytes sent")
        self.assertLess(grown, 64 * 1024, f"RSS grew {grown} KiB for {sent} bytes")
        # The server read only what its buffers could hold, not all we sent.
        self.assertLess(int(closed.group(1)), sent)
        self.assertServes(server)

    def test_slowReaderIsNotIdle(self) -> None:
        """A client slowly reading a long echo is not idle: it gets all of it."""
        server = startServer(self, "--idle-timeout=1")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer keeps the echo queued in the server's
        # kernel buffers, where the server sees it drain as we read.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(WAIT)
        sock.connect(("127.0.0.1", server.port))
        payload = bytes(range(256)) * 4096  # 1 MiB
        received = bytearray()
        sent = 0
        deadline = time.monotonic() + WAIT
        with sock:
            while len(received) < len(payload) and time.monotonic() < deadline:
                if sent < len(payload):
                    _, writable, _ = select.select([], [sock], [], 0)
                    if writable:
                        sent += sock.send(payload[sent : sent + 65536])
                        continue
                # Pacing, not synchronisation: this is what a slow reader
                # does, reading about 128 KiB twice per idle timeout.
                time.sleep(0.5)
                chunk = sock.recv(131072)
                if not chunk:
                    break
                received += chunk
        self.assertEqual(bytes(received), payload)
        self.assertNotIn("Idle client", server.output.text())

    def test_resetMidStream(self) -> None:
        """Clients that reset (SO_LINGER 0) mid-transfer leave the server sound."""
        server = startServer(self, "--metrics", METRICS)
        address = metricsAddress(server)
        for i in range(10):
            sock = connect(server.port)
            sock.sendall(bytes([i]) * 200_000)
            receiveExactly(sock, 1000)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.close()
        server.output.waitForAll(r"Closed client 127\.0\.0\.1/\d+", 10)
        self.assertServes(server)
        samples = scrapeMetrics(address)
        self.assertEqual(samples["echotwist_connections_active"], 0)
        self.assertEqual(samples["echotwist_connections_total"], 11)

    def test_connectionFloodPastTheCap(self) -> None:
        """Past --max-connections new clients are closed at once; others unharmed."""
        server = startServer(self, "--max-connections=5", "--metrics", METRICS)
        address = metricsAddress(server)
        held = [connect(server.port) for _ in range(5)]
        for i, sock in enumerate(held):
            sock.sendall(b"held %d" % i)
            self.assertEqual(receiveExactly(sock, len(b"held %d" % i)), b"held %d" % i)
        for _ in range(30):
            self.assertTrue(closedAtOnce(server.port))
        server.output.waitForAll(r"Rejected client 127\.0\.0\.1/\d+: limit", 30)
        for i, sock in enumerate(held):
            sock.sendall(b"again %d" % i)
            self.assertEqual(
                receiveExactly(sock, len(b"again %d" % i)), b"again %d" % i
            )
        samples = scrapeMetrics(address)
        self.assertEqual(samples['echotwist_rejected_total{reason="limit"}'], 30)
        self.assertEqual(samples["echotwist_connections_active"], 5)
        for sock in held:
            sock.close()
        server.output.waitForAll(r"Closed client 127\.0\.0\.1/\d+", 5)
        self.assertServes(server, "after the flood")

    def test_fileDescriptorExhaustion(self) -> None:
        """Out of descriptors: no spinning, nothing lost, serving again after."""
        server = startServer(self, "--metrics", METRICS, launcher=withFileLimit(48))
        address = metricsAddress(server)
        started = time.monotonic()
        clients = [connect(server.port) for _ in range(70)]
        exhausted = server.output.waitFor(r"Out of file descriptors \(EMFILE\) on tcp:")
        # While descriptors are short nothing more is accepted, so the
        # clients logged as handled up to now are exactly the accepted ones.
        handled = {
            int(port)
            for port in re.findall(
                r"Handling client 127\.0\.0\.1/(\d+)",
                server.output.text().split(exhausted.group(0))[0],
            )
        }
        accepted = [s for s in clients if s.getsockname()[1] in handled]
        waiting = [s for s in clients if s.getsockname()[1] not in handled]
        self.assertTrue(accepted and waiting, (len(accepted), len(waiting)))
        for i, sock in enumerate(clients):
            sock.sendall(b"client %02d" % i)
        for sock in accepted:
            with sock:
                i = clients.index(sock)
                self.assertEqual(receiveExactly(sock, 9), b"client %02d" % i)
        # Freeing their descriptors lets the server accept the clients
        # still waiting in the backlog: none of them is lost.
        for sock in waiting:
            with sock:
                i = clients.index(sock)
                self.assertEqual(receiveExactly(sock, 9), b"client %02d" % i)
        self.assertServes(server, "after running out of descriptors")
        elapsed = time.monotonic() - started
        emfile = scrapeMetrics(address)['echotwist_rejected_total{reason="emfile"}']
        # A tight accept loop would fail thousands of times; with backoff
        # starting at 0.1 s there is at most one failed attempt per 0.1 s.
        self.assertGreaterEqual(emfile, 1)
        self.assertLessEqual(emfile, 1 + elapsed / 0.1)
        self.assertIsNone(server.process.poll())

    def test_sigtermDuringTransfer(self) -> None:
        """SIGTERM mid-transfer: the transfer completes intact and twistd exits 0."""
        server = startServer(self, "--shutdown-timeout=20")
        payload = bytes(range(256)) * 16384  # 4 MiB

        def terminate() -> None:
            server.signal(signal.SIGTERM)
            server.output.waitFor(r"Received SIGTERM, draining")
            # New clients are refused at once, while the transfer goes on.
            server.output.waitFor(
                rf"Stopped listening on tcp:127\.0\.0\.1:{server.port}"
            )
            with self.assertRaises(ConnectionRefusedError):
                connect(server.port).close()

        echoed = transfer(server.port, payload, midway=terminate)
        self.assertEqual(len(echoed), len(payload))
        self.assertEqual(echoed, payload)
        self.assertEqual(server.wait(), 0)

    def test_sigtermAbortsAfterShutdownTimeout(self) -> None:
        """Connections still open after --shutdown-timeout are aborted; exit 0."""
        server = startServer(self, "--shutdown-timeout=1", "--idle-timeout=0")
        sock = connect(server.port)
        sock.sendall(b"linger")
        self.assertEqual(receiveExactly(sock, 6), b"linger")
        server.signal(signal.SIGTERM)
        server.output.waitFor(r"Shutdown timeout: aborting 1 connections")
        with sock:
            self.assertTrue(closedByPeer(sock))
        self.assertEqual(server.wait(), 0)
