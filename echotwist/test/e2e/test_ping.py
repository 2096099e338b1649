"""End-to-end tests of ping mode: C{python -m echotwist.client --count N}.

Real processes: the client against C{twistd -n echo} and against the
misbehaving doubles of L{echotwist.test.doubles}, all on 127.0.0.1.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.doubles import (
    corruptAfter,
    startDatagramDouble,
    startStreamDouble,
)
from echotwist.test.e2e.harness import (
    makeCertificate,
    runClient,
    startProcess,
    startServer,
)

_PROBE = re.compile(r"^5 bytes from 127\.0\.0\.1: seq=(\d+) time=\d+\.\d{3} ms$")
_RTT = re.compile(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$")


def closedUdpPort() -> int:
    """A UDP port of 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PingEndToEndTests(SynchronousTestCase):
    """C{python -m echotwist.client --count N} against real servers and doubles."""

    def test_tcp(self) -> None:
        """Three verified probes to twistd, one line each, then the summary."""
        server = startServer(self)
        result = runClient(
            "--count", "3", "--interval", "0.05", "127.0.0.1", "hello", str(server.port)
        )
        lines = result.stdout.splitlines()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            lines[0], f"PING 127.0.0.1 port {server.port} over tcp: 5 data bytes"
        )
        lines = lines[1:]
        self.assertEqual(
            [int(m.group(1)) for m in map(_PROBE.match, lines[:3]) if m], [0, 1, 2]
        )
        self.assertEqual(
            lines[3:5],
            [
                "--- 127.0.0.1 echo statistics ---",
                "3 probes sent, 3 received, 0.0% loss",
            ],
        )
        self.assertRegex(lines[5], _RTT)

    def test_shortOptions(self) -> None:
        """C{-c 2 -i 0.05 -W 2 HOST WORD PORT} is a ping of two probes, as ping's."""
        server = startServer(self)
        result = runClient(
            "-c", "2", "-i", "0.05", "-W", "2", "127.0.0.1", "hello", str(server.port)
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("2 probes sent, 2 received, 0.0% loss", result.stdout)

    def test_untilInterrupted(self) -> None:
        """C{-c 0} pings until SIGINT, then prints the statistics and exits 0."""
        server = startServer(self)
        client = startProcess(
            self,
            [sys.executable, "-m", "echotwist.client", "-c", "0", "-i", "0.05",
             "127.0.0.1", "hello", str(server.port)],
        )  # fmt: skip
        client.output.waitForAll(_PROBE, count=3)
        client.signal(signal.SIGINT)
        self.assertEqual(client.wait(), 0, client.output.text())
        text = client.output.waitClosed()
        self.assertIn("--- 127.0.0.1 echo statistics ---", text)
        self.assertRegex(text, r"(\d+) probes sent, \1 received, 0\.0% loss")
        self.assertNotIn("Traceback", text)

    def test_refused(self) -> None:
        """A refused first connection is one error line and exit status 1."""
        double = startStreamDouble(self, corruptAfter(0))
        port = str(double.port)
        double.stop()
        result = runClient("--count", "2", "127.0.0.1", "hello", port)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                1,
                "",
                f"echotwist.client: error: connection refused by 127.0.0.1:{port}\n",
            ),
        )

    def test_corruptEchoIsLoss(self) -> None:
        """A server that corrupts the second probe's echo costs one probe."""
        double = startStreamDouble(self, corruptAfter(6))
        result = runClient(
            "--count", "3", "--interval", "0", "127.0.0.1", "hello", str(double.port)
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        header, *lines = result.stdout.splitlines()
        self.assertTrue(header.startswith("PING 127.0.0.1 port "), header)
        self.assertRegex(lines[0], _PROBE)
        self.assertEqual(
            lines[1],
            "no echo from 127.0.0.1: seq=1 echo differs from what was sent"
            " (5 bytes back for 5 sent)",
        )
        self.assertRegex(lines[2], _PROBE)
        self.assertIn("3 probes sent, 2 received, 33.3% loss", lines)
        # The corrupt stream was dropped and the third probe reconnected.
        self.assertEqual(double.connections, 2)

    def test_udpLoss(self) -> None:
        """Over UDP, probes the server drops time out and count as loss."""
        double = startDatagramDouble(self, lambda n: n % 2 == 0)
        result = runClient(
            "--udp",
            "--count",
            "4",
            "--interval",
            "0",
            "--timeout",
            "0.3",
            "127.0.0.1",
            "hello",
            str(double.port),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        header, *lines = result.stdout.splitlines()
        self.assertEqual(
            header, f"PING 127.0.0.1 port {double.port} over udp: 5 data bytes"
        )
        self.assertEqual(
            [bool(_PROBE.match(line)) for line in lines[:4]],
            [True, False, True, False],
        )
        self.assertEqual(lines[1], "no echo from 127.0.0.1: seq=1 timeout after 0.3 s")
        self.assertIn("4 probes sent, 2 received, 50.0% loss", lines)

    def test_udpAllLost(self) -> None:
        """With no echo at all the summary is printed and the exit status is 1."""
        double = startDatagramDouble(self, lambda n: False)
        result = runClient(
            "--udp",
            "--count",
            "2",
            "--interval",
            "0",
            "--timeout",
            "0.2",
            "127.0.0.1",
            "hello",
            str(double.port),
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("2 probes sent, 0 received, 100.0% loss", result.stdout)
        self.assertEqual(
            result.stderr,
            "echotwist.client: error: no echo from 127.0.0.1 in 2 probes\n",
        )

    def test_udpClosedPort(self) -> None:
        """A closed UDP port: each probe says port unreachable, no traceback,
        exit 1; the one-shot client says it in one line.
        """
        port = closedUdpPort()
        result = runClient(
            "--udp", "-c", "2", "-i", "0", "-W", "5", "127.0.0.1", "hi", str(port)
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("no echo from 127.0.0.1: seq=0 port unreachable", result.stdout)
        self.assertIn("no echo from 127.0.0.1: seq=1 port unreachable", result.stdout)
        self.assertNotIn("Error()", result.stdout)
        oneShot = runClient("--udp", "127.0.0.1", "hi", str(port))
        self.assertEqual(oneShot.returncode, 1)
        self.assertEqual(len(oneShot.stderr.splitlines()), 1, oneShot.stderr)
        self.assertIn("port unreachable", oneShot.stderr)

    def test_tls(self) -> None:
        """--tls --insecure pings a TLS server; without --insecure it is refused."""
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        key, cert = makeCertificate(directory.resolve())
        server = startServer(
            self,
            listen=[f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
        )
        port = str(server.port)
        result = runClient(
            "--tls", "--insecure", "--count", "2", "--interval", "0",
            "127.0.0.1", "hello", port,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("2 probes sent, 2 received, 0.0% loss", result.stdout)
        oneShot = runClient("--tls", "--insecure", "127.0.0.1", "hello", port)
        self.assertEqual((oneShot.returncode, oneShot.stdout), (0, "Received: hello\n"))
        verified = runClient("--tls", "127.0.0.1", "hello", port)
        self.assertEqual(verified.returncode, 1)
        self.assertEqual(len(verified.stderr.splitlines()), 1, verified.stderr)
        self.assertTrue(verified.stderr.startswith("echotwist.client: error: "))

    def test_usage(self) -> None:
        """A bad count or --insecure without --tls is a usage error (status 2)."""
        for arguments in (
            ("--count", "-1", "h", "w"),
            ("--count", "x", "h", "w"),
            ("--interval", "-1", "--count", "1", "h", "w"),
            ("--insecure", "h", "w"),
            ("--udp", "--tls", "h", "w"),
        ):
            result = runClient(*arguments)
            self.assertEqual(result.returncode, 2, arguments)
            self.assertIn("error:", result.stderr.splitlines()[-1])
