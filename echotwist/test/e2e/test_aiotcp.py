"""End-to-end: C{twistd -r uvloop echo --listen aiotcp:...} and the real client.

Unit tests of L{echotwist.internals.aiotcp} are in
L{echotwist.test.test_aiotcp}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import runClient, startServer


class EndToEndTests(SynchronousTestCase):
    """The real C{twistd -r uvloop echo --listen aiotcp:...} and client."""

    def test_clientGetsEcho(self) -> None:
        """The client gets its echo from the uvloop-native listener."""
        server = startServer(
            self,
            listen=("aiotcp:0:interface=127.0.0.1",),
            twistdOptions=("-r", "uvloop"),
        )
        server.output.waitFor("AsyncioSelectorReactor")
        result = runClient("127.0.0.1", "hello native", str(server.port))
        self.assertEqual(
            (result.returncode, result.stdout), (0, "Received: hello native\n")
        )
        server.output.waitFor(r"Closed client 127\.0\.0\.1/\d+: 12 bytes echoed")
        self.assertEqual(server.stop(), 0)
