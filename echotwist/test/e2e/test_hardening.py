"""End-to-end checks of the hardening options against a real C{twistd}."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import (
    WAIT,
    childEnvironment,
    closedAtOnce,
    connect,
    receiveExactly,
    runClient,
    scrapeMetrics,
    startServer,
)


class HardeningTests(SynchronousTestCase):
    """Address rules, per-IP caps, metrics, JSON logs and a clean exit."""

    def test_allowAndDeny(self) -> None:
        """--allow admits its network, --deny wins inside it (reason denied)."""
        server = startServer(self, "--allow=127.0.0.0/8", "--deny=127.0.0.2")
        result = runClient("127.0.0.1", "allowed", str(server.port))
        self.assertEqual(result.stdout, "Received: allowed\n")
        self.assertTrue(closedAtOnce(server.port, source="127.0.0.2"))
        server.output.waitFor(r"Rejected client 127\.0\.0\.2/\d+: denied")
        with connect(server.port, source="127.0.0.3") as other:
            other.sendall(b"from .3")
            self.assertEqual(receiveExactly(other, 7), b"from .3")

    def test_onlyAllowed(self) -> None:
        """With --allow, clients outside it are refused; the client reports it."""
        server = startServer(self, "--allow=127.0.0.2/32")
        result = runClient("127.0.0.1", "outsider", str(server.port))
        self.assertEqual(result.returncode, 1)
        # Closed at once: seen as a close or as a reset, depending on timing.
        self.assertRegex(
            result.stderr,
            r"^echotwist\.client: error: .*(closed the connection|reset by peer)",
        )
        server.output.waitFor(r"Rejected client 127\.0\.0\.1/\d+: denied")
        with connect(server.port, source="127.0.0.2") as inside:
            inside.sendall(b"inside")
            self.assertEqual(receiveExactly(inside, 6), b"inside")

    def test_maxPerIp(self) -> None:
        """Past --max-per-ip from one address new ones are closed; others served."""
        server = startServer(self, "--max-per-ip=2")
        held = [connect(server.port) for _ in range(2)]
        for sock in held:
            sock.sendall(b"ok")
            self.assertEqual(receiveExactly(sock, 2), b"ok")
        self.assertTrue(closedAtOnce(server.port))
        server.output.waitFor(r"Rejected client 127\.0\.0\.1/\d+: per-ip")
        with connect(server.port, source="127.0.0.4") as elsewhere:
            elsewhere.sendall(b"fine")
            self.assertEqual(receiveExactly(elsewhere, 4), b"fine")
        for sock in held:
            sock.close()

    def test_metrics(self) -> None:
        """/metrics reports connections, bytes by transport and durations."""
        server = startServer(self, "--metrics", "tcp:0:interface=127.0.0.1")
        address = server.output.waitFor(r"Metrics on (tcp:127\.0\.0\.1:\d+)").group(1)
        for word in ("one", "three"):
            self.assertEqual(
                runClient("127.0.0.1", word, str(server.port)).returncode, 0
            )
        server.output.waitForAll(r"Closed client", 2)
        samples = scrapeMetrics(address)
        self.assertEqual(samples["echotwist_connections_total"], 2)
        self.assertEqual(samples["echotwist_connections_active"], 0)
        self.assertEqual(samples['echotwist_echoed_bytes_total{transport="tcp"}'], 8)
        self.assertEqual(samples["echotwist_connection_duration_seconds_count"], 2)
        self.assertEqual(samples['echotwist_rejected_total{reason="emfile"}'], 0)
        self.assertEqual(server.stop(), 0)

    def test_jsonLogs(self) -> None:
        """--logger=echotwist.logging.jsonLogger: one JSON object per line."""
        server = startServer(
            self,
            twistdOptions=["--logger=echotwist.logging.jsonLogger"],
            wait=False,
        )
        listening = server.output.waitFor(r'"message": "Listening on tcp:[^"]+:(\d+)"')
        port = listening.group(1)
        self.assertEqual(runClient("127.0.0.1", "json", port).returncode, 0)
        closing = server.output.waitFor(r'"message": "Closed client')
        record: dict[str, Any] = json.loads(closing.string)
        self.assertEqual(record["host"], "127.0.0.1")
        self.assertTrue(record["port"].isdigit())
        self.assertEqual(record["bytes"], 4)
        self.assertEqual(record["reason"], "done")
        self.assertIsInstance(record["duration"], float)
        self.assertEqual(record["level"], "info")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), 0)
        for line in server.output.lines:
            self.assertIsInstance(json.loads(line), dict, line)

    def test_reactorStopSignals(self) -> None:
        """Pin: a running reactor's SIGTERM and SIGINT handlers are its
        sigTerm and sigInt attributes.

        L{DrainService} relies on this to have the reactor install its
        handlers instead of its own (L{echotwist.internals.signals}).
        """
        script = (
            "import signal, sys\n"
            "from twisted.internet import reactor\n"
            "def ours(number, frame): pass\n"
            "reactor.sigTerm = reactor.sigInt = ours\n"
            "def check():\n"
            "    sys.stdout.write(str(signal.getsignal(signal.SIGTERM) is ours\n"
            "        and signal.getsignal(signal.SIGINT) is ours))\n"
            "    reactor.stop()\n"
            "reactor.callWhenRunning(check)\n"
            "reactor.run()\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=childEnvironment(),
            check=False,
        )
        self.assertEqual((result.stdout, result.returncode), ("True", 0), result.stderr)

    def test_sigtermExitsZero(self) -> None:
        """A drained twistd exits with status 0 on SIGTERM, not -15."""
        server = startServer(self)
        self.assertEqual(server.stop(), 0)
        server.output.waitFor(r"Received SIGTERM, draining")
