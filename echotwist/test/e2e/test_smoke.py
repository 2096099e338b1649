"""A first end-to-end check: the real twistd plugin and the real client."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import runClient, startServer


class SmokeTests(SynchronousTestCase):
    """C{twistd -n echo} and C{python -m echotwist.client} work together."""

    def test_clientGetsEcho(self) -> None:
        """The client prints 'Received: <word>' and exits 0."""
        server = startServer(self)
        result = runClient("127.0.0.1", "hello world", str(server.port))
        self.assertEqual(
            (result.returncode, result.stdout), (0, "Received: hello world\n")
        )
        server.output.waitFor(r"Handling client 127\.0\.0\.1/\d+")
        # SIGTERM drains and exits 0 (echotwist.server.DrainService).
        self.assertEqual(server.stop(), 0)
