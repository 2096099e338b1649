"""End-to-end: C{twistd echo --log-level}, quiet scrapes, process metrics.

A line's absence is checked only after the server has exited (SIGTERM,
exit status 0), so it cannot still be on its way.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from echotwist import __version__
from echotwist.test.e2e.harness import (
    WAIT,
    ServerProcess,
    receiveExactly,
    scrapeMetrics,
    startServer,
)


def echoOnce(server: ServerProcess, word: bytes) -> None:
    """One connection to C{server} that echoes C{word} and closes."""
    with socket.create_connection(("127.0.0.1", server.port), WAIT) as connection:
        connection.sendall(word)
        if receiveExactly(connection, len(word)) != word:
            raise AssertionError(f"{word!r} not echoed")


class LogLevelTests(SynchronousTestCase):
    """C{--log-level}: fewer lines, in one process and in every worker."""

    def test_perConnectionLinesOff(self) -> None:
        """echotwist.protocol=warn: no line per connection; the rest stays."""
        server = startServer(self, "--log-level", "echotwist.protocol=warn")
        for word in (b"one", b"two", b"three"):
            echoOnce(server, word)
        self.assertEqual(server.stop(), 0)
        output = server.output.waitClosed()
        self.assertIn("Listening on tcp:127.0.0.1:", output)
        self.assertNotIn("Handling client", output)
        self.assertNotIn("Closed client", output)

    def test_warn(self) -> None:
        """warn: none of echotwist's info lines, Listening on included."""
        server = startServer(self, "--log-level", "warn", wait=False)
        # Without its Listening line, the port comes from twistd's own line
        # (Twisted's lines are not filtered).
        port = server.output.waitFor(r"EchoFactory starting on (\d+)").group(1)
        with socket.create_connection(("127.0.0.1", int(port)), WAIT) as connection:
            connection.sendall(b"hi")
            self.assertEqual(receiveExactly(connection, 2), b"hi")
        self.assertEqual(server.stop(), 0)
        output = server.output.waitClosed()
        self.assertNotIn("Listening on", output)
        self.assertNotIn("Handling client", output)

    def test_workers(self) -> None:
        """The level reaches every worker of --workers."""
        server = startServer(
            self, "--workers", "2", "--log-level", "echotwist.protocol=warn"
        )
        server.output.waitForAll(r"Worker \d \(pid \d+\) listening", 2)
        for index in range(10):
            echoOnce(server, b"%d" % index)
        self.assertEqual(server.stop(), 0)
        output = server.output.waitClosed()
        self.assertNotIn("Handling client", output)
        self.assertNotIn("Closed client", output)


class MetricsTests(SynchronousTestCase):
    """C{--metrics}: no access log line per scrape, process and build figures."""

    def test_quietScrapes(self) -> None:
        """Scrapes log nothing; process_open_fds, memory and build info are there."""
        server = startServer(self, "--metrics", "tcp:0:interface=127.0.0.1")
        address = server.output.waitFor(r"Metrics on (tcp:127\.0\.0\.1:\d+)").group(1)
        for _ in range(3):
            samples = scrapeMetrics(address)
        self.assertGreater(samples["process_open_fds"], 0)
        self.assertGreater(samples["process_resident_memory_bytes"], 0)
        build = [name for name in samples if name.startswith("echotwist_build_info")]
        self.assertEqual(len(build), 1)
        self.assertIn(f'version="{__version__}"', build[0])
        self.assertEqual(server.stop(), 0)
        self.assertNotIn("/metrics", server.output.waitClosed())
