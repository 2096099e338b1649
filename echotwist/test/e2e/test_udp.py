"""End-to-end tests of UDP echo against a real C{twistd -n echo --udp ...}."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.server.udp import MAX_DATAGRAM
from echotwist.test.e2e.harness import WAIT, startServer

LOOPBACK = "udp:0:interface=127.0.0.1"


@contextmanager
def udpSocket(
    host: str = "127.0.0.1", port: int = 0, family: int = socket.AF_INET
) -> Iterator[socket.socket]:
    """A UDP socket bound to C{host}/C{port}, with a bounded receive wait."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        sock.settimeout(WAIT)
        yield sock
    finally:
        sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already waiting on C{sock}, without waiting for more."""
    received: list[bytes] = []
    sock.setblocking(False)
    try:
        while True:
            received.append(sock.recv(MAX_DATAGRAM + 1))
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(WAIT)


def privilegedSocket() -> socket.socket:
    """A UDP socket on 127.0.0.1 bound to a free port below 1024, or skip."""
    for port in range(1023, 899, -1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", port))
        except PermissionError:
            sock.close()
            raise SkipTest(
                "binding a source port below 1024 needs root"
                " (or CAP_NET_BIND_SERVICE); not available here"
            ) from None
        except OSError:
            sock.close()
            continue
        sock.settimeout(WAIT)
        return sock
    raise SkipTest("no free UDP port between 900 and 1023 on 127.0.0.1")


class UDPEchoTests(SynchronousTestCase):
    """Datagrams come back whole from a real server."""

    def test_wholeDatagrams(self) -> None:
        """Small, largest (65507 bytes) and empty datagrams come back unchanged."""
        server = startServer(self, udp=[LOOPBACK])
        (port,) = server.udpPorts
        largest = os.urandom(MAX_DATAGRAM)
        with udpSocket() as sock:
            for datagram in (b"hello", largest, b"", b"\x00\xff" * 700):
                sock.sendto(datagram, ("127.0.0.1", port))
                reply, source = sock.recvfrom(MAX_DATAGRAM + 1)
                self.assertEqual(
                    (len(reply), source), (len(datagram), ("127.0.0.1", port))
                )
                self.assertEqual(reply, datagram)

    def test_ipv6AndSeveralPorts(self) -> None:
        """C{--udp} repeats, and an IPv6 interface serves IPv6 senders."""
        server = startServer(self, udp=[LOOPBACK, "udp:0:interface=::1"])
        self.assertEqual(len(server.udpPorts), 2)
        self.assertIn(f"udp:[::1]:{server.udpPorts[1]}", server.addresses)
        with udpSocket() as sock4, udpSocket("::1", family=socket.AF_INET6) as sock6:
            sock4.sendto(b"four", ("127.0.0.1", server.udpPorts[0]))
            sock6.sendto(b"six", ("::1", server.udpPorts[1]))
            self.assertEqual((sock4.recv(100), sock6.recv(100)), (b"four", b"six"))

    def test_tcpAndUDPTogether(self) -> None:
        """One server echoes over TCP and UDP at once."""
        server = startServer(self, udp=[LOOPBACK])
        with socket.create_connection(("127.0.0.1", server.port), WAIT) as tcp:
            tcp.sendall(b"stream")
            tcp.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := tcp.recv(100):
                received += chunk
        with udpSocket() as sock:
            sock.sendto(b"datagram", ("127.0.0.1", server.udpPorts[0]))
            self.assertEqual((received, sock.recv(100)), (b"stream", b"datagram"))


class ReflectionGuardTests(SynchronousTestCase):
    """The guard drops what a reflector must not answer, and serves the rest."""

    def test_privilegedSourcePortDropped(self) -> None:
        """A datagram from source port < 1024 gets no reply; others still do."""
        server = startServer(self, udp=[LOOPBACK])
        (port,) = server.udpPorts
        privileged = privilegedSocket()
        self.addCleanup(privileged.close)
        sourcePort = privileged.getsockname()[1]
        with udpSocket() as ordinary:
            privileged.sendto(b"loop me", ("127.0.0.1", port))
            ordinary.sendto(b"fine", ("127.0.0.1", port))
            # The server answers in arrival order: once the later datagram's
            # reply is here, a reply to the earlier one would be too.
            self.assertEqual(ordinary.recv(100), b"fine")
        server.output.waitFor(
            rf"Dropped UDP datagram from 127\.0\.0\.1/{sourcePort}: privileged-port"
        )
        self.assertEqual(drain(privileged), [])

    def flood(self, rate: str, count: int = 50) -> tuple[list[bytes], float]:
        """Send C{count} datagrams from one host to a server with C{--udp-rate}.

        Return the replies that host got, once another host (127.0.0.2)
        has been answered after the flood, and the seconds the flood took.
        """
        server = startServer(self, "--udp-rate", rate, udp=[LOOPBACK])
        address = ("127.0.0.1", server.udpPorts[0])
        with udpSocket() as flooder, udpSocket("127.0.0.2") as other:
            started = time.monotonic()
            for i in range(count):
                flooder.sendto(b"%d" % i, address)
            other.sendto(b"still here", address)
            self.assertEqual(other.recv(100), b"still here")
            elapsed = time.monotonic() - started
            return drain(flooder), elapsed

    def test_rateLimited(self) -> None:
        """Past its burst a source is refused; another host is still served."""
        replies, elapsed = self.flood("5")
        # A burst of 5, plus at most 5 a second of refill while flooding.
        self.assertGreaterEqual(len(replies), 5)
        self.assertLessEqual(len(replies), 5 + int(5 * elapsed) + 1)
        self.assertEqual(replies[:5], [b"0", b"1", b"2", b"3", b"4"])

    def test_noRateLimit(self) -> None:
        """With C{--udp-rate 0} the same flood is answered in full."""
        replies, _ = self.flood("0")
        self.assertEqual(replies, [b"%d" % i for i in range(50)])


class UDPStartupErrorTests(SynchronousTestCase):
    """Bad C{--udp} values end the server with one line, never a traceback."""

    def test_portInUse(self) -> None:
        """A UDP port already bound: one line naming it, exit status 1."""
        with udpSocket() as taken:
            port = taken.getsockname()[1]
            server = startServer(
                self, udp=[f"udp:{port}:interface=127.0.0.1"], wait=False
            )
            self.assertEqual(server.wait(), 1)
        text = server.output.waitClosed()
        self.assertIn(
            f"twistd echo: cannot listen on UDP udp:{port}:interface=127.0.0.1:", text
        )
        self.assertNotIn("Traceback", text)

    def test_badValues(self) -> None:
        """Bad ports and interfaces: a one-line usage error, exit status 2."""
        for value, message in (
            ("abc", "invalid UDP port 'abc'"),
            ("70000", "must be 0 to 65535"),
            ("udp:7:interface=nowhere", "invalid UDP interface 'nowhere'"),
        ):
            server = startServer(self, udp=[value], wait=False)
            self.assertEqual(server.wait(), 2, value)
            text = server.output.waitClosed()
            self.assertRegex(text, rf"(?m)^twistd echo: error: .*{re.escape(message)}")
            self.assertNotIn("Traceback", text)
