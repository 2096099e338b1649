"""End-to-end tests of the one-shot client: C{python -m echotwist.client}.

Real processes on 127.0.0.1; its failures (refused, timeouts, early
closes, differing echoes) are in L{echotwist.test.e2e.test_server}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.doubles import startDatagramDouble
from echotwist.test.e2e.harness import runClient, startServer


class OneShotEndToEndTests(SynchronousTestCase):
    """Without C{--count}: one echo, C{Received: <word>}, exit status 0."""

    def test_oneShotUnchanged(self) -> None:
        """Without --count the client still prints only 'Received: <word>'."""
        server = startServer(self)
        result = runClient("127.0.0.1", "hello", str(server.port))
        self.assertEqual((result.returncode, result.stdout), (0, "Received: hello\n"))

    def test_udpOneShot(self) -> None:
        """Without --count, --udp echoes one datagram and prints it."""
        double = startDatagramDouble(self, lambda n: True)
        result = runClient("--udp", "127.0.0.1", "hello", str(double.port))
        self.assertEqual((result.returncode, result.stdout), (0, "Received: hello\n"))
