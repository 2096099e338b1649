"""End-to-end: C{haproxy:} listeners (PROXY protocol v1/v2) in a real
C{twistd}, and the shipped HAProxy configuration in front of three of
them (skipped where C{haproxy} is not installed).
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.e2e.harness import (
    PROJECT_ROOT,
    RawClients,
    ServerProcess,
    closedByPeer,
    connect,
    listeningSocket,
    receiveExactly,
    runServer,
    startProcess,
    startServer,
)

PROXIED = "haproxy:tcp:0:interface=127.0.0.1"
PLAIN = "tcp:0:interface=127.0.0.1"
HAPROXY_CONFIG = PROJECT_ROOT / "contrib" / "haproxy" / "echotwist.cfg"


def proxiedPort(server: ServerProcess) -> int:
    """The port of the server's C{haproxy:} listener, from its log."""
    [address] = [a for a in server.addresses if a.startswith("haproxy:")]
    return int(address.rsplit(":", 1)[1])


def v1(source: str, sourcePort: int, port: int) -> bytes:
    """A PROXY v1 header for a TCP4 client at C{source}:C{sourcePort}."""
    return f"PROXY TCP4 {source} 127.0.0.1 {sourcePort} {port}\r\n".encode()


def v2(source: str, sourcePort: int, port: int) -> bytes:
    """A PROXY v2 header for a TCP6 client at C{source}:C{sourcePort}."""
    body = socket.inet_pton(socket.AF_INET6, source)
    body += socket.inet_pton(socket.AF_INET6, "::1") + struct.pack(
        "!HH", sourcePort, port
    )
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x21" + struct.pack("!H", len(body)) + body


def echoes(port: int, prefix: bytes, word: bytes) -> bool:
    """Whether C{word}, sent after C{prefix}, comes back on a new connection."""
    with connect(port) as sock:
        sock.sendall(prefix + word)
        return receiveExactly(sock, len(word)) == word


class ProxyListenerTests(SynchronousTestCase):
    """A C{haproxy:} listener serves the client its header names."""

    def test_clientFromTheHeader(self) -> None:
        """v1 and v2 clients are echoed and logged by the header's address;
        a plain listener beside it serves as before.
        """
        server = startServer(self, listen=(PROXIED, PLAIN))
        self.assertTrue(server.addresses[0].startswith("haproxy:tcp:127.0.0.1:"))
        port = proxiedPort(server)
        self.assertTrue(echoes(port, v1("192.0.2.7", 5555, port), b"hello v1"))
        self.assertTrue(echoes(port, v2("2001:db8::7", 6666, port), b"hello v2"))
        self.assertTrue(echoes(server.port, b"", b"plain"))
        server.output.waitFor(r"Handling client 192\.0\.2\.7/5555$")
        server.output.waitFor(r"Handling client 2001:db8::7/6666$")
        server.output.waitFor(r"Closed client 2001:db8::7/6666: 8 bytes echoed")
        server.output.waitFor(r"Handling client 127\.0\.0\.1/\d+$")
        server.stop()
        server.output.waitFor(rf"Stopped listening on haproxy:tcp:127\.0\.0\.1:{port}")

    def test_limitsJudgeTheClient(self) -> None:
        """--deny and --max-per-ip apply to the header's address, not the proxy's."""
        server = startServer(
            self, "--deny", "192.0.2.66/32", "--max-per-ip", "1", listen=(PROXIED,)
        )
        port = proxiedPort(server)
        with connect(port) as denied:
            denied.sendall(v1("192.0.2.66", 1000, port) + b"x")
            self.assertTrue(closedByPeer(denied))
        server.output.waitFor(r"Rejected client 192\.0\.2\.66/1000: denied")
        with connect(port) as first:
            first.sendall(v1("192.0.2.7", 1001, port) + b"first")
            self.assertEqual(receiveExactly(first, 5), b"first")
            with connect(port) as second:
                second.sendall(v1("192.0.2.7", 1002, port) + b"second")
                self.assertTrue(closedByPeer(second))
            server.output.waitFor(r"Rejected client 192\.0\.2\.7/1002: per-ip")
            # Another client through the same proxy address is served.
            self.assertTrue(echoes(port, v1("192.0.2.8", 1003, port), b"other"))

    def test_halfClose(self) -> None:
        """A client that shuts its sending side gets all of a 4 MiB echo,
        then the server's close.
        """
        server = startServer(self, listen=(PROXIED,))
        port = proxiedPort(server)
        payload = bytes(range(256)) * 16384
        # The client sends all it can before reading, so when it shuts its
        # side the server still holds echo it has not sent.
        clients = RawClients(self, ("127.0.0.1", port), 1)
        [echoed] = clients.exchange([v1("192.0.2.7", 5555, port) + payload], True)
        self.assertEqual(len(echoed), len(payload))
        self.assertTrue(echoed == payload, "echoed bytes differ")

    def test_noHeader(self) -> None:
        """A connection that starts without a PROXY header is refused, logged."""
        server = startServer(self, listen=(PROXIED,))
        port = proxiedPort(server)
        with connect(port) as sock:
            sock.sendall(b"hello\r\n")
            self.assertTrue(closedByPeer(sock))
        server.output.waitFor(
            r"Refused connection from 127\.0\.0\.1/\d+: no PROXY header$"
        )

    def test_badDescriptions(self) -> None:
        """A haproxy: listener around TLS, or around nothing, is one line, exit 2."""
        for listen, why in (
            ("haproxy:ssl:0:privateKey=k.pem", "cannot wrap ssl:"),
            ("haproxy:", "needs the listener it wraps"),
        ):
            done = runServer("--listen", listen)
            self.assertEqual(done.returncode, 2, done.stderr)
            [line] = done.stderr.splitlines()
            self.assertIn(why, line)


class HAProxyTests(SynchronousTestCase):
    """HAProxy with contrib/haproxy/echotwist.cfg in front of three servers."""

    if shutil.which("haproxy") is None:
        skip = "haproxy is not installed (apt-get install haproxy)"

    def setUp(self) -> None:
        """Start three echo servers and HAProxy on a socket bound to port 0."""
        self.servers = [startServer(self, listen=(PROXIED,)) for _ in range(3)]
        bound = listeningSocket(self, backlog=128)
        self.port: int = bound.getsockname()[1]
        # A short path: a UNIX socket's is at most 107 bytes.
        directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, directory, True)
        environment = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            # HAProxy listens on the socket this test bound (port 0).
            "ECHOTWIST_BIND": f"fd@{bound.fileno()}",
            "ECHOTWIST_STATS": f"{directory}/stats.sock",
        }
        for number, server in enumerate(self.servers, 1):
            environment[f"ECHOTWIST_SERVER{number}"] = (
                f"127.0.0.1:{proxiedPort(server)}"
            )
        self.haproxy = startProcess(
            self,
            ["haproxy", "-db", "-f", str(HAPROXY_CONFIG)],
            env=environment,
            passFds=(bound.fileno(),),
        )
        # Every server has passed a health check: each has echoed the word.
        for server in self.servers:
            server.output.waitFor(r"Closed client 127\.0\.0\.1/\d+: 22 bytes echoed")

    def test_realClientAddresses(self) -> None:
        """Connections through HAProxy are echoed, spread over the servers,
        and each server logs the client's own address and port.
        """
        clients = [connect(self.port) for _ in range(6)]
        ports = [sock.getsockname()[1] for sock in clients]
        for number, sock in enumerate(clients):
            with sock:
                word = f"hello {number}".encode()
                sock.sendall(word)
                self.assertEqual(receiveExactly(sock, len(word)), word)
        # leastconn with six connections open at once: two each.  Each
        # client's own port is in the log of the server that served it.
        anyClient = "|".join(map(str, ports))
        logged = [
            int(match.group(1))
            for server in self.servers
            for match in server.output.waitForAll(
                rf"Handling client 127\.0\.0\.1/({anyClient})$", 2
            )
        ]
        self.assertEqual(sorted(logged), sorted(ports))

    def test_hungHostTakenOut(self) -> None:
        """A server that accepts but does not echo (stopped) is taken out by
        the echo health check, and clients are served by the others.
        """
        stopped = self.servers[1]
        stopped.signal(signal.SIGSTOP)
        self.addCleanup(stopped.signal, signal.SIGCONT)
        down = self.haproxy.output.waitFor(r"Server echotwist/echo2 is DOWN", 15)
        # The check connected (the kernel accepts for a stopped process)
        # and failed on the echo.
        self.assertIn("Layer7 timeout", down.string)
        self.assertIn("expect string 'echotwist-health-check'", down.string)
        for number in range(6):
            self.assertTrue(echoes(self.port, b"", f"after {number}".encode()))
        stopped.signal(signal.SIGCONT)
        self.haproxy.output.waitFor(r"Server echotwist/echo2 is UP", 15)
        output = self.haproxy.output.text()
        self.assertNotRegex(output, r"echo[13] is DOWN")
