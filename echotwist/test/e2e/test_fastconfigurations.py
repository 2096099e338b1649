"""End-to-end: the fast paths keep every byte, flow control and half-close.

A client sends 4 MiB in one go from a thread, then shuts its sending side,
while the test reads: the whole payload must come back unchanged, followed
by the server's close.  This runs against the default listener (Twisted's
TCP transport with the write fast path), the same on the fast epoll
reactor, and the uvloop-native one.
"""

from __future__ import annotations

import os
import socket
import threading

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import WAIT, ServerProcess, startServer

PAYLOAD = os.urandom(4 * 1024 * 1024)


def echoWithHalfClose(port: int) -> bytes:
    """Send L{PAYLOAD}, half-close, and return everything read until EOF."""
    connection = socket.create_connection(("127.0.0.1", port), WAIT)
    connection.settimeout(WAIT)
    failures: list[BaseException] = []

    def send() -> None:
        try:
            connection.sendall(PAYLOAD)
            connection.shutdown(socket.SHUT_WR)
        except OSError as e:
            failures.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    chunks: list[bytes] = []
    try:
        while True:
            chunk = connection.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sender.join(WAIT)
        connection.close()
    if failures:
        raise failures[0]
    return b"".join(chunks)


class FastPathEndToEndTests(SynchronousTestCase):
    """Large echoes with a half-close, on real sockets."""

    def check(self, server: ServerProcess) -> None:
        """The payload comes back whole and the server closes afterwards."""
        received = echoWithHalfClose(server.port)
        self.assertEqual(len(received), len(PAYLOAD))
        self.assertTrue(received == PAYLOAD, "echoed bytes differ")
        server.output.waitFor(rf"Closed client 127\.0\.0\.1/\d+: {len(PAYLOAD)} bytes")

    def test_defaultListener(self) -> None:
        """Twisted's TCP transport with the write fast path."""
        self.check(startServer(self))

    def test_uvloopListener(self) -> None:
        """Uvloop's native transport under Echo."""
        self.check(
            startServer(
                self,
                listen=("aiotcp:0:interface=127.0.0.1",),
                twistdOptions=("-r", "uvloop"),
            )
        )

    def test_fastEpollReactor(self) -> None:
        """Twisted's TCP transport on the fast epoll reactor."""
        self.check(startServer(self, twistdOptions=("-r", "fastepoll")))
