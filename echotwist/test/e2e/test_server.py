"""End-to-end tests: the real C{twistd -n echo} and the real client.

Every server here is a C{twistd} subprocess listening on port 0 of a
loopback address; every client is either the real C{python -m
echotwist.client} or plain sockets driven by a selector in this process.
Every wait is bounded (see L{echotwist.test.e2e}); nothing sleeps.
"""

from __future__ import annotations

import os
import random
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.internals.speedups import builtSpeedups
from echotwist.test.e2e.harness import (
    WAIT,
    OneConnectionServer,
    RawClients,
    ServerProcess,
    childEnvironment,
    closedPort,
    listeningSocket,
    pushWithoutReading,
    receiveExactly,
    runClient,
    runServer,
    startServer,
    writeSelfSignedPEM,
)

log = Logger()

MiB = 2**20


def requireIPv6Loopback() -> None:
    """Skip the calling test when this machine cannot bind C{::1}."""
    if not socket.has_ipv6:
        raise SkipTest("Python was built without IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        raise SkipTest(f"no IPv6 loopback here: {e}") from None


def assertNoTraceback(
    test: SynchronousTestCase, result: subprocess.CompletedProcess[str]
) -> None:
    """Fail when either output of C{result} holds a Python traceback."""
    test.assertNotIn("Traceback", result.stdout + result.stderr)


class ClientEchoTests(SynchronousTestCase):
    """The real client gets its word back from the real server."""

    def assertEchoes(self, server: ServerProcess, host: str, word: str) -> None:
        """Run the client against C{server} at C{host}; it must echo C{word}."""
        result = runClient(host, word, str(server.port))
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f"Received: {word}\n", ""),
        )

    def test_ipv4(self) -> None:
        """Over 127.0.0.1 the client prints the word and exits 0."""
        server = startServer(self)
        self.assertEchoes(server, "127.0.0.1", "hello")
        server.output.waitFor(r"Closed client 127\.0\.0\.1/\d+: 5 bytes echoed")

    def test_utf8Word(self) -> None:
        """A UTF-8 word with multi-byte characters comes back unchanged."""
        server = startServer(self)
        word = "héllo wörld ✓ эхо 🙂"
        self.assertEchoes(server, "127.0.0.1", word)
        # The server counts bytes, not characters.
        size = len(word.encode("utf-8"))
        server.output.waitFor(rf"Closed client 127\.0\.0\.1/\d+: {size} bytes echoed")

    def test_outputCannotShowWord(self) -> None:
        """A word the output encoding cannot hold is shown escaped, not a traceback."""
        server = startServer(self)
        result = runClient(
            "127.0.0.1",
            "caf\u00e9 \u2713",
            str(server.port),
            env=childEnvironment(PYTHONIOENCODING="ascii"),
        )
        assertNoTraceback(self, result)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, "Received: caf\\xe9 \\u2713\n", ""),
        )

    def test_ipv6(self) -> None:
        """A server on C{tcp6:0:interface=::1} echoes to the client given C{::1}."""
        requireIPv6Loopback()
        server = startServer(self, listen=(r"tcp6:0:interface=\:\:1",))
        self.assertTrue(server.addresses[0].startswith("tcp6:[::1]:"))
        self.assertEchoes(server, "::1", "over six")
        server.output.waitFor(r"Handling client ::1/\d+")

    def test_portAndListenTogether(self) -> None:
        """C{--port} and C{--listen} combined: the server echoes on both."""
        requireIPv6Loopback()
        server = startServer(
            self,
            "--port",
            "tcp:0:interface=127.0.0.1",
            listen=(r"tcp6:0:interface=\:\:1",),
            wait=False,
        )
        server.waitListening(2)
        for host, address in zip(("127.0.0.1", "::1"), server.addresses, strict=True):
            port = address.rsplit(":", 1)[1]
            result = runClient(host, "both", port)
            self.assertEqual(
                (result.returncode, result.stdout), (0, "Received: both\n"), host
            )

    def test_localhost(self) -> None:
        """The client resolves C{localhost} (from /etc/hosts) and gets its echo."""
        # Resolving a name that the hosts file lacks could send a DNS query
        # off the machine; these tests stay on the loopback interface.
        hosts = Path("/etc/hosts")
        if not hosts.exists() or not re.search(
            r"^\s*(127\.\S+|::1)\s.*\blocalhost\b", hosts.read_text(), re.MULTILINE
        ):
            raise SkipTest("localhost is not in /etc/hosts")
        server = startServer(self)
        self.assertEchoes(server, "localhost", "by name")


class TLSTests(SynchronousTestCase):
    """The server echoes over TLS on a C{tls:PATH:PORT} endpoint."""

    def test_tlsEndpoint(self) -> None:
        """C{--listen tls:DIR:0:interface=127.0.0.1} serves a verified TLS echo."""
        # Absolute: the server runs in another directory.
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        trusted = writeSelfSignedPEM(directory)
        path = str(directory).replace(":", "\\:")
        server = startServer(self, listen=(f"tls:{path}:0:interface=127.0.0.1",))
        context = ssl.create_default_context(cafile=str(trusted))
        payload = random.Random(443).randbytes(64 * 1024)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        self.addCleanup(raw.close)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(payload)
            echoed = receiveExactly(tls, len(payload))
        self.assertTrue(echoed == payload, "the TLS echo differs")
        server.output.waitFor(r"Handling client 127\.0\.0\.1/\d+")
        self.assertNotIn("Traceback", server.output.text())


class FlowControlTests(SynchronousTestCase):
    """A client that never reads cannot grow the server's memory."""

    def test_neverReadingClient(self) -> None:
        """Up to 300 MiB pushed unread grow the server by a few MiB; others echo."""
        server = startServer(self)
        # Warm the server up with one full echo, so what is measured is the
        # cost of the unread data, not of loading the code that echoes.
        warm = random.Random(0).randbytes(MiB)
        warmer = RawClients(self, ("127.0.0.1", server.port), 1)
        self.assertTrue(warmer.exchange([warm], halfClose=True) == [warm])
        rssBefore = server.rssKiB()
        peakBefore = server.peakRssKiB()

        hog = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        self.addCleanup(hog.close)
        limit = 300 * MiB
        pushed = pushWithoutReading(hog, limit)
        rssAfter = server.rssKiB()
        peakAfter = server.peakRssKiB()

        # The highest the server can have been while the data was pushed
        # is its lifetime peak now, so this bounds the growth from above.
        growth = peakAfter - rssBefore
        log.info(
            "never-reading client: pushed {pushed} bytes ({pushedMiB:.1f} MiB)"
            " before sending blocked; server RSS {rssBefore} KiB before,"
            " {rssAfter} KiB after (grew {rssGrowth} KiB); peak RSS"
            " {peakBefore} KiB before, {peakAfter} KiB after; growth bound"
            " {growth} KiB",
            pushed=pushed,
            pushedMiB=pushed / MiB,
            rssBefore=rssBefore,
            rssAfter=rssAfter,
            rssGrowth=rssAfter - rssBefore,
            peakBefore=peakBefore,
            peakAfter=peakAfter,
            growth=growth,
        )
        # The server stopped reading long before the limit: the bytes that
        # were accepted sit in the kernel's socket buffers, not in Python.
        self.assertLess(pushed, limit)
        self.assertLessEqual(growth, 16 * 1024, f"server grew by {growth} KiB")

        # With the hog still connected and stuck, another client is served.
        result = runClient("127.0.0.1", "still here", str(server.port))
        self.assertEqual(
            (result.returncode, result.stdout), (0, "Received: still here\n")
        )

        hogPort = hog.getsockname()[1]
        hog.close()
        server.output.waitFor(rf"Closed client 127\.0\.0\.1/{hogPort}:")
        self.assertNotIn("Traceback", server.output.text())


class HalfCloseTests(SynchronousTestCase):
    """A client that shuts its sending side still gets every byte back."""

    def test_eightMiBThenShutdown(self) -> None:
        """8 MiB of random bytes then SHUT_WR: all come back, then the server closes."""
        server = startServer(self)
        payload = random.Random(862).randbytes(8 * MiB)
        clients = RawClients(self, ("127.0.0.1", server.port), 1)
        # exchange() returns only once the server has closed its side.
        [echoed] = clients.exchange([payload], halfClose=True)
        self.assertEqual(len(echoed), len(payload))
        self.assertTrue(echoed == payload, "the echo differs from the payload")
        server.output.waitFor(
            rf"Closed client 127\.0\.0\.1/\d+: {8 * MiB} bytes echoed"
        )

    def test_manySizesThenShutdown(self) -> None:
        """Payloads of many sizes, each followed by SHUT_WR, all come back whole."""
        # A server that closes as soon as it reads end-of-input loses the
        # echo it has not sent yet only when the end arrives at the wrong
        # moment; many short half-closed connections make that near-certain
        # (each is a coin toss), where one long one may miss it.
        server = startServer(self)
        sizes = random.Random(7).sample(range(1, 200_000), 32)
        for size in sizes:
            payload = random.Random(size).randbytes(size)
            clients = RawClients(self, ("127.0.0.1", server.port), 1)
            [echoed] = clients.exchange([payload], halfClose=True)
            self.assertEqual(
                len(echoed), size, f"{len(echoed)} of {size} bytes came back"
            )
            self.assertTrue(echoed == payload, f"the {size}-byte echo differs")


class ConcurrencyTests(SynchronousTestCase):
    """Many clients are served at the same time."""

    def test_twoHundredClients(self) -> None:
        """200 open connections all get their echoes; the server goes on serving."""
        count = 200
        server = startServer(self)
        clients = RawClients(self, ("127.0.0.1", server.port))
        # In batches the server's listen queue holds, each one accepted
        # (logged) before the next, so no handshake waits for a retry.
        batch = 40
        for connected in range(batch, count + 1, batch):
            clients.connect(batch)
            server.output.waitForAll(r"Handling client 127\.0\.0\.1/", connected)
        self.assertEqual(len(clients.sockets), count)
        # Distinct payloads, so bytes crossing between connections show up.
        payloads = [
            f"client {i}:".encode() + random.Random(i).randbytes(1000 + 37 * i)
            for i in range(count)
        ]
        # Every connection stays open until every echo is back: a server
        # that served one client at a time could not finish this.
        echoed = clients.exchange(payloads, halfClose=False)
        wrong = [i for i in range(count) if echoed[i] != payloads[i]]
        self.assertEqual(wrong, [])
        # Now all half-close: each gets end-of-stream and nothing more.
        self.assertEqual(clients.exchange([b""] * count, halfClose=True), [b""] * count)
        server.output.waitForAll(r"Closed client 127\.0\.0\.1/", count)

        result = runClient("127.0.0.1", "after the crowd", str(server.port))
        self.assertEqual(
            (result.returncode, result.stdout), (0, "Received: after the crowd\n")
        )
        self.assertNotIn("Traceback", server.output.text())


class ServerBadInputTests(SynchronousTestCase):
    """Bad server options end with one line on stderr and a non-zero exit."""

    def assertRefuses(
        self, arguments: list[str], status: int, pattern: str
    ) -> subprocess.CompletedProcess[str]:
        """Run C{twistd -n echo ARGUMENTS}; it must fail as described."""
        result = runServer(*arguments)
        assertNoTraceback(self, result)
        self.assertEqual(result.returncode, status, result.stderr)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertRegex(lines[0], pattern)
        return result

    def test_portNotANumber(self) -> None:
        """C{--port abc} is a usage error (exit 2)."""
        self.assertRefuses(
            ["--port", "abc"], 2, r"^twistd echo: error: invalid port 'abc'"
        )

    def test_portOutOfRange(self) -> None:
        """C{--port 70000} is a usage error (exit 2)."""
        self.assertRefuses(
            ["--port", "70000"],
            2,
            r"^twistd echo: error: invalid port '70000': must be 0 to 65535",
        )

    def test_unknownEndpointType(self) -> None:
        """C{--listen foo:1} names an endpoint type that does not exist (exit 2)."""
        self.assertRefuses(
            ["--listen", "foo:1"],
            2,
            r"^twistd echo: error: unknown endpoint type 'foo' in 'foo:1'",
        )

    def test_unreadableKey(self) -> None:
        """An C{ssl:} endpoint whose key file is missing is a usage error."""
        self.assertRefuses(
            ["--listen", "ssl:0:interface=127.0.0.1:privateKey=/nonexistent/k.pem"],
            2,
            r"^twistd echo: error: invalid endpoint 'ssl:.*No such file",
        )

    def test_portInUse(self) -> None:
        """A port another socket holds ends start-up with exit 1."""
        taken = listeningSocket(self)
        port = taken.getsockname()[1]
        description = f"tcp:{port}:interface=127.0.0.1"
        result = self.assertRefuses(
            ["--listen", description],
            1,
            rf"^twistd echo: cannot listen on {re.escape(description)}:"
            r".*[Aa]ddress already in use",
        )
        self.assertNotIn("Listening on", result.stdout)


class ClientBadInputTests(SynchronousTestCase):
    """Every client failure is one line on stderr and a non-zero exit."""

    def assertFails(self, arguments: list[str], status: int, pattern: str) -> list[str]:
        """Run the client with C{arguments}; it must fail as described.

        Return its standard error as lines.
        """
        result = runClient(*arguments)
        assertNoTraceback(self, result)
        self.assertEqual(
            (result.returncode, result.stdout), (status, ""), result.stderr
        )
        lines = result.stderr.splitlines()
        self.assertRegex(lines[-1], pattern)
        return lines

    def assertUsage(self, arguments: list[str], pattern: str) -> None:
        """The client prints its usage line and one error line, and exits 2."""
        lines = self.assertFails(
            arguments, 2, r"^python -m echotwist\.client: error: " + pattern
        )
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r"^usage: python -m echotwist\.client ")

    def assertOneLine(self, arguments: list[str], message: str) -> None:
        """The client prints C{message} as its only line and exits 1."""
        lines = self.assertFails(
            arguments, 1, "^" + re.escape(f"echotwist.client: error: {message}") + "$"
        )
        self.assertEqual(len(lines), 1, lines)

    def test_noArguments(self) -> None:
        """Without host and word the client shows its usage and exits 2."""
        self.assertUsage([], r"the following arguments are required: host, word")

    def test_badPort(self) -> None:
        """A port that is not a number, or out of range, is a usage error."""
        self.assertUsage(["127.0.0.1", "hi", "abc"], r"argument port: invalid port")
        self.assertUsage(["127.0.0.1", "hi", "70000"], r"argument port: invalid port")

    def test_connectionRefused(self) -> None:
        """A port nothing listens on: one line, exit 1."""
        port = closedPort()
        self.assertOneLine(
            ["127.0.0.1", "hi", str(port)], f"connection refused by 127.0.0.1:{port}"
        )

    def test_timeout(self) -> None:
        """A server that accepts the connection but never answers times out."""
        port = listeningSocket(self).getsockname()[1]
        self.assertOneLine(
            ["127.0.0.1", "hi", str(port), "--timeout", "1"],
            f"no echo from 127.0.0.1:{port} within 1 s",
        )

    def test_connectTimeout(self) -> None:
        """A connection the server never completes times out with the same line."""
        # With a full listen queue the kernel drops the client's handshake,
        # so the client is still connecting when its time runs out.
        full = listeningSocket(self, backlog=0)
        port = full.getsockname()[1]
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.addCleanup(filler.close)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        self.assertOneLine(
            ["127.0.0.1", "hi", str(port), "--timeout", "1"],
            f"no echo from 127.0.0.1:{port} within 1 s",
        )

    def test_timeoutWhileResolving(self) -> None:
        """A timeout that ends name resolution is reported as a timeout."""
        # Even an address literal is resolved (getaddrinfo in a thread),
        # which takes longer than 0.1 ms; whichever stage the time runs out
        # in, nothing answers on this socket, so the line is the same.
        port = listeningSocket(self).getsockname()[1]
        self.assertOneLine(
            ["127.0.0.1", "hi", str(port), "--timeout", "0.0001"],
            f"no echo from 127.0.0.1:{port} within 0.0001 s",
        )

    def test_serverClosesEarly(self) -> None:
        """A server that closes after part of the echo: one line, exit 1."""
        word = b"hello world"

        def closeEarly(connection: socket.socket) -> None:
            # Read all that is sent first, so the close is a clean FIN and
            # not a reset that could discard the partial echo.
            self.assertEqual(receiveExactly(connection, len(word)), word)
            connection.sendall(word[:5])
            connection.shutdown(socket.SHUT_WR)

        server = OneConnectionServer(self, closeEarly)
        self.assertOneLine(
            ["127.0.0.1", word.decode(), str(server.port)],
            "the server closed the connection after 5 of 11 bytes",
        )

    def test_echoDiffers(self) -> None:
        """A server that returns altered bytes: one line, exit 1."""
        word = b"hello world"

        def alter(connection: socket.socket) -> None:
            self.assertEqual(receiveExactly(connection, len(word)), word)
            connection.sendall(word.swapcase())
            # Wait for the client to hang up before closing our side.
            self.assertEqual(receiveExactly(connection, 1), b"")

        server = OneConnectionServer(self, alter)
        self.assertOneLine(
            ["127.0.0.1", word.decode(), str(server.port)],
            "the echo differs from what was sent (11 bytes back for 11 sent)",
        )


class InstalledCommandTests(SynchronousTestCase):
    """The installed commands work outside the source tree."""

    def setUp(self) -> None:
        """Find the installed C{twistd}; make an empty directory to run in."""
        self.twistd = Path(sys.executable).parent / "twistd"
        if not self.twistd.exists():
            raise SkipTest(
                f"no twistd script beside {sys.executable}: the package is not"
                " installed in this interpreter's environment (make test does)"
            )
        self.cwd = Path(self.mktemp())
        self.cwd.mkdir()
        # Without PYTHONPATH and away from the source tree, only what pip
        # installed can be found.
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def runHere(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run C{command} in the empty directory, without PYTHONPATH."""
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=WAIT,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def test_twistdListsEcho(self) -> None:
        """C{twistd --help} from the installed script lists the C{echo} plugin."""
        result = self.runHere(str(self.twistd), "--help")
        assertNoTraceback(self, result)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"(?m)^\s+echo\s+\S")

    def test_twistdEchoHelp(self) -> None:
        """C{twistd echo --help} from the installed script shows the options."""
        result = self.runHere(str(self.twistd), "echo", "--help")
        assertNoTraceback(self, result)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--listen=", result.stdout)
        self.assertIn("--port=", result.stdout)

    def test_clientHelp(self) -> None:
        """C{python -m echotwist.client --help} works from the installed package."""
        result = self.runHere(sys.executable, "-m", "echotwist.client", "--help")
        assertNoTraceback(self, result)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"^usage: python -m echotwist\.client ")


class DefaultReactorTests(SynchronousTestCase):
    """Without C{-r}, the plugin runs on the fastest reactor; C{-r} still rules."""

    def reactorOf(self, *twistdOptions: str) -> str:
        """The reactor class C{twistd -n OPTIONS echo} logs, after it echoed."""
        server = startServer(self, twistdOptions=twistdOptions)
        with socket.create_connection(("127.0.0.1", server.port), WAIT) as client:
            client.sendall(b"fast")
            self.assertEqual(receiveExactly(client, 4), b"fast")
        self.assertEqual(server.stop(), 0)
        return server.output.waitFor(r"reactor class: (\S+)\.").group(1)

    def test_fastestByDefault(self) -> None:
        """C{twistd -n echo} runs on the fast epoll reactor on Linux."""
        if not sys.platform.startswith("linux"):
            raise SkipTest("the fast epoll reactor is Linux only")
        self.assertEqual(
            self.reactorOf(), "echotwist.internals.fastepoll.FastEPollReactor"
        )

    def echoPathOf(self, **environment: str) -> str:
        """The echo path C{twistd -n echo} logs, after echoing 1 MiB intact."""
        server = startServer(self, env=childEnvironment(**environment))
        message = random.randbytes(1 << 20)
        with socket.create_connection(("127.0.0.1", server.port), WAIT) as client:
            client.sendall(message)
            self.assertEqual(receiveExactly(client, len(message)), message)
        self.assertEqual(server.stop(), 0)
        return server.output.waitFor(r"Echo path (in [^\n]*)").group(1)

    def test_echoPathInC(self) -> None:
        """Where the speedups are built, the default command echoes in C."""
        if builtSpeedups is None:
            raise SkipTest(
                "the C speedups are not built in this tree (make install-test"
                " builds them; test_speedups checks that they compile)"
            )
        self.assertEqual(self.echoPathOf(), "in C (echotwist.internals._speedups)")

    def test_echoPathInPython(self) -> None:
        """C{ECHOTWIST_PURE_PYTHON=1}: the same echo, in Python."""
        self.assertEqual(
            self.echoPathOf(ECHOTWIST_PURE_PYTHON="1"),
            "in Python (ECHOTWIST_PURE_PYTHON is set)",
        )

    def test_askedForReactor(self) -> None:
        """C{twistd -r poll -n echo} gets the poll reactor it asked for."""
        self.assertEqual(
            self.reactorOf("-r", "poll"), "twisted.internet.pollreactor.PollReactor"
        )
