"""Unit tests for the one-shot client, its command line and shared connect code.

L{echotwist.client.oneshot}, L{echotwist.client.connect} and
L{echotwist.client.cli}: no sockets, no real time.  Ping mode's own tests
are in L{echotwist.test.test_ping}.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
)
from twisted.internet.error import (
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
    TCPTimedOutError,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import ConnectionCompleter, IOPump
from twisted.trial.unittest import SynchronousTestCase

from echotwist import versionText
from echotwist.client.cli import ECHO_PORT, buildParser, main
from echotwist.client.connect import (
    EchoError,
    checkHostName,
    describeConnectionError,
    describeFailure,
    echoDiffers,
    streamEndpoint,
)
from echotwist.client.oneshot import EchoClientFactory, echoOver, udpEcho
from echotwist.protocol import EchoFactory


class Mangler(Protocol):
    """A broken server: echoes each chunk reversed."""

    def dataReceived(self, data: bytes) -> None:
        """Send C{data} back reversed."""
        assert self.transport is not None
        self.transport.write(data[::-1])


class Hangup(Protocol):
    """A broken server: echoes the first two bytes, then closes."""

    def dataReceived(self, data: bytes) -> None:
        """Send two bytes back and hang up."""
        assert self.transport is not None
        self.transport.write(data[:2])
        self.transport.loseConnection()


class Network:
    """A memory reactor with a server on port 7 and a client endpoint to it."""

    def __init__(self, server: Factory[Protocol] | EchoFactory | None = None) -> None:
        self.reactor = MemoryReactorClock()
        TCP4ServerEndpoint(self.reactor, ECHO_PORT).listen(
            server if server is not None else EchoFactory(clock=self.reactor)
        )
        self.endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", ECHO_PORT)
        self.completer = ConnectionCompleter(self.reactor)

    def echo(self, message: bytes, timeout: float = 10) -> Deferred[bytes]:
        """Start an echo of C{message} through this network."""
        return echoOver(self.reactor, self.endpoint, message, timeout)

    def connect(self) -> IOPump:
        """Complete the pending connection and return its pump."""
        pump = self.completer.succeedOnce()
        assert pump is not None
        return pump


class EchoOverTests(SynchronousTestCase):
    """L{echoOver} against in-memory servers."""

    def test_success(self) -> None:
        """The echo of a real L{Echo} server is the message."""
        network = Network()
        d = network.echo(b"hello world")
        network.connect().flush()
        self.assertEqual(self.successResultOf(d), b"hello world")

    def test_emptyMessage(self) -> None:
        """An empty message is echoed at once, as the seed's client does."""
        network = Network()
        d = network.echo(b"")
        network.connect().flush()
        self.assertEqual(self.successResultOf(d), b"")

    def test_differentEcho(self) -> None:
        """An echo that differs from what was sent fails with L{EchoError}."""
        network = Network(Factory.forProtocol(Mangler))
        d = network.echo(b"abc")
        network.connect().flush()
        failure = self.failureResultOf(d, EchoError)
        self.assertEqual(
            str(failure.value),
            "the echo differs from what was sent (3 bytes back for 3 sent)",
        )

    def test_serverClosesEarly(self) -> None:
        """A server that hangs up before the whole echo fails the echo."""
        network = Network(Factory.forProtocol(Hangup))
        d = network.echo(b"abcdef")
        network.connect().flush()
        failure = self.failureResultOf(d, EchoError)
        self.assertEqual(
            str(failure.value), "the server closed the connection after 2 of 6 bytes"
        )

    def test_connectionRefused(self) -> None:
        """A refused connection fails the echo with the connection error."""
        network = Network()
        d = network.echo(b"abc")
        network.completer.failOnce(Failure(ConnectionRefusedError()))
        self.failureResultOf(d, ConnectionRefusedError)

    def test_timeoutConnecting(self) -> None:
        """No connection within the timeout fails with L{TimeoutError}."""
        network = Network()
        d = network.echo(b"abc", timeout=3)
        network.reactor.advance(2.9)
        self.assertNoResult(d)
        network.reactor.advance(0.2)
        self.failureResultOf(d, TimeoutError)

    def test_timeoutEchoing(self) -> None:
        """A server that never answers fails the echo at the timeout."""
        network = Network(Factory.forProtocol(Protocol))
        d = network.echo(b"abc", timeout=5)
        pump = network.connect()
        pump.flush()
        self.assertNoResult(d)
        network.reactor.advance(5)
        self.failureResultOf(d, TimeoutError)


class ClientProtocolTests(SynchronousTestCase):
    """L{EchoClient} over a L{StringTransport}."""

    def test_piecesAssembled(self) -> None:
        """An echo that arrives in pieces is assembled before it counts."""
        factory = EchoClientFactory(b"abcdef")
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"abcdef")
        protocol.dataReceived(b"ab")
        protocol.dataReceived(b"cd")
        self.assertNoResult(factory.deferred)
        protocol.dataReceived(b"ef")
        self.assertEqual(self.successResultOf(factory.deferred), b"abcdef")
        self.assertTrue(transport.disconnecting)

    def test_tooMuchEcho(self) -> None:
        """More bytes back than were sent is a differing echo."""
        factory = EchoClientFactory(b"ab")
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"abc")
        failure = self.failureResultOf(factory.deferred, EchoError)
        self.assertEqual(
            str(failure.value),
            "the echo differs from what was sent (3 bytes back for 2 sent)",
        )

    def test_connectionFailedThroughConnector(self) -> None:
        """C{connectTCP} users see a failed connection on C{deferred}."""
        factory = EchoClientFactory(b"ab")
        reactor = MemoryReactorClock()
        connector = reactor.connectTCP("127.0.0.1", 7, factory)
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.failureResultOf(factory.deferred, ConnectionRefusedError)

    def test_tlsFailureNamed(self) -> None:
        """A failed certificate check is named as such, not 'server closed'."""
        from OpenSSL import SSL

        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        factory = EchoClientFactory(b"abc")
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(Failure(error))
        failure = self.failureResultOf(factory.deferred, EchoError)
        self.assertIn("TLS certificate verification failed", str(failure.value))


class OneProbe:
    """A datagram prober double whose one probe gets C{reply} (or nothing)."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.sent: list[bytes] = []
        self.closed = False

    def ready(self) -> Deferred[None]:
        """Ready at once."""
        return succeed(None)

    def probe(self, message: bytes) -> Deferred[bytes]:
        """Record C{message}; answer with the reply, if there is one."""
        self.sent.append(message)
        return succeed(self.reply) if self.reply is not None else Deferred()

    def reset(self) -> None:
        """Nothing to forget."""

    def close(self) -> None:
        """Note the close."""
        self.closed = True


class UdpEchoTests(SynchronousTestCase):
    """L{udpEcho} sends one datagram probe and verifies its reply."""

    def test_echo(self) -> None:
        """A matching reply is the result, and the prober is closed."""
        prober = OneProbe(b"hi")
        d = Deferred.fromCoroutine(udpEcho(Clock(), prober, b"hi", 1))
        self.assertEqual(self.successResultOf(d), b"hi")
        self.assertEqual((prober.sent, prober.closed), ([b"hi"], True))

    def test_differs(self) -> None:
        """A reply that differs fails with the one-shot client's wording."""
        prober = OneProbe(b"hX!")
        d = Deferred.fromCoroutine(udpEcho(Clock(), prober, b"hi", 1))
        failure = self.failureResultOf(d, EchoError)
        self.assertEqual(
            str(failure.value),
            "the echo differs from what was sent (3 bytes back for 2 sent)",
        )
        self.assertTrue(prober.closed)

    def test_timeout(self) -> None:
        """No reply within the timeout fails with L{TimeoutError}, closing."""
        clock = Clock()
        prober = OneProbe(None)
        d = Deferred.fromCoroutine(udpEcho(clock, prober, b"hi", 2))
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(prober.closed)


class DescribeFailureTests(SynchronousTestCase):
    """Every failure becomes one clear line."""

    def line(self, error: Exception, host: str = "example.test") -> str:
        """Describe C{error} for an echo with C{host} port 7 and timeout 10."""
        return describeFailure(Failure(error), host, 7, 10)

    def test_lines(self) -> None:
        """Refused, unknown host, timeout, no route and echo errors are named."""
        self.assertEqual(
            self.line(ConnectionRefusedError()),
            "connection refused by example.test:7",
        )
        self.assertEqual(self.line(DNSLookupError("x")), "unknown host 'example.test'")
        self.assertEqual(
            self.line(TimeoutError()), "no echo from example.test:7 within 10 s"
        )
        self.assertEqual(
            self.line(TCPTimedOutError()), "no echo from example.test:7 within 10 s"
        )
        self.assertEqual(self.line(NoRouteError()), "no route to example.test:7")
        self.assertEqual(self.line(EchoError("it broke")), "it broke")

    def test_ipv6Brackets(self) -> None:
        """IPv6 literals are bracketed before the port."""
        self.assertEqual(
            self.line(ConnectionRefusedError(), "::1"), "connection refused by [::1]:7"
        )

    def test_otherErrors(self) -> None:
        """Anything else still gives one line naming the server."""
        line = self.line(OSError("weird"))
        self.assertTrue(line.startswith("cannot echo with example.test:7: "))
        self.assertNotIn("\n", line)


class ConnectTests(SynchronousTestCase):
    """What one-shot and ping share: host checks, endpoints, error phrases."""

    def test_badHostName(self) -> None:
        """A name IDNA cannot encode is an unknown host at once, not a hang."""
        for name in ("foo..bar", "x" * 70 + ".test"):
            self.assertRaises(DNSLookupError, checkHostName, name)
            self.assertRaises(
                DNSLookupError, streamEndpoint, MemoryReactorClock(), name, 7, 1
            )
        checkHostName("localhost")
        checkHostName("::1")

    def test_plainEndpoint(self) -> None:
        """Without --tls the endpoint is a L{HostnameEndpoint}."""
        endpoint = streamEndpoint(MemoryReactorClock(), "localhost", 7, 1)
        self.assertIsInstance(endpoint, HostnameEndpoint)

    def test_tlsVerificationFailure(self) -> None:
        """A failed certificate check is named as such, with the way around it."""
        from OpenSSL import SSL

        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(
            describeConnectionError(Failure(error)),
            "TLS certificate verification failed (--insecure skips it)",
        )

    def test_echoDiffers(self) -> None:
        """A differing echo is one phrase giving both byte counts."""
        self.assertEqual(
            echoDiffers(b"abc", b"ab"),
            "echo differs from what was sent (3 bytes back for 2 sent)",
        )


class ParserTests(SynchronousTestCase):
    """The command line of the client."""

    def parseError(self, *argv: str) -> tuple[int, str]:
        """Parse C{argv}, expecting a usage error; return exit code and stderr."""
        stderr = io.StringIO()
        with redirect_stderr(stderr), self.assertRaises(SystemExit) as caught:
            buildParser().parse_args(list(argv))
        return int(str(caught.exception.code)), stderr.getvalue()

    def test_defaults(self) -> None:
        """The port defaults to 7 (the echo service), the timeout to 10 s."""
        args = buildParser().parse_args(["host", "word"])
        self.assertEqual(
            (args.host, args.word, args.port, args.timeout), ("host", "word", 7, 10.0)
        )

    def test_portAndTimeout(self) -> None:
        """The port and timeout are parsed."""
        args = buildParser().parse_args(["h", "w", "5000", "--timeout", "2.5"])
        self.assertEqual((args.port, args.timeout), (5000, 2.5))

    def test_version(self) -> None:
        """C{--version} prints echotwist's version and exits 0."""
        stdout = io.StringIO()
        with redirect_stdout(stdout), self.assertRaises(SystemExit) as caught:
            buildParser().parse_args(["--version"])
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(stdout.getvalue(), versionText() + "\n")

    def test_badArguments(self) -> None:
        """Missing words, bad ports and bad timeouts exit 2 with the usage line."""
        for argv in (
            (),
            ("host",),
            ("host", "word", "abc"),
            ("host", "word", "0"),
            ("host", "word", "70000"),
            ("host", "word", "7", "extra"),
            ("host", "word", "--timeout", "0"),
            ("host", "word", "--timeout", "soon"),
        ):
            code, stderr = self.parseError(*argv)
            self.assertEqual(code, 2, argv)
            self.assertTrue(stderr.startswith("usage: "), stderr)
            self.assertNotIn("Traceback", stderr)

    def test_numberErrors(self) -> None:
        """A bad number is named in echotwist.parsing's one wording."""
        for options, message in (
            (("abc",), "argument port: invalid port 'abc': not a whole number"),
            (("0",), "argument port: invalid port '0': must be 1 to 65535"),
            (
                ("70000",),
                "argument port: invalid port '70000': must be 1 to 65535",
            ),
            (
                ("--timeout", "0"),
                "argument -W/--timeout: invalid timeout '0': must be more than 0",
            ),
            (
                ("--timeout", "soon"),
                "argument -W/--timeout: invalid timeout 'soon': not a number",
            ),
            (
                ("--timeout", "inf"),
                "argument -W/--timeout: invalid timeout 'inf': not a number",
            ),
            (
                ("--count", "-1"),
                "argument -c/--count: invalid count '-1': must be 0 or more",
            ),
            (
                ("--count", "1.5"),
                "argument -c/--count: invalid count '1.5': not a whole number",
            ),
            (
                ("--count", "1", "--interval", "-1"),
                "argument -i/--interval: invalid interval '-1': must be 0 or more",
            ),
        ):
            argv = ("host", "word", *options)
            code, stderr = self.parseError(*argv)
            self.assertEqual(code, 2, argv)
            self.assertEqual(
                stderr.splitlines()[-1], f"python -m echotwist.client: error: {message}"
            )

    def test_bracketedHost(self) -> None:
        """An IPv6 address may be given in brackets; they are taken off."""
        for host in ("[::1]", "::1"):
            self.assertEqual(buildParser().parse_args([host, "w"]).host, "::1")

    def test_badBrackets(self) -> None:
        """A lone bracket, or brackets around no IPv6 address, is a usage error."""
        for host in ("[::1", "[127.0.0.1]"):
            code, stderr = self.parseError(host, "w")
            self.assertEqual(code, 2)
            self.assertEqual(
                stderr.splitlines()[-1],
                f"python -m echotwist.client: error: argument host: invalid host"
                f" {host!r}: brackets enclose an IPv6 address only",
            )

    def test_numberRanges(self) -> None:
        """The ends of each number's range are accepted."""
        args = buildParser().parse_args(
            ["h", "w", "65535", "--timeout", "0.001", "--count", "1"]
        )
        self.assertEqual((args.port, args.timeout, args.count), (65535, 0.001, 1))
        args = buildParser().parse_args(["h", "w", "1", "--interval", "0"])
        self.assertEqual((args.port, args.interval), (1, 0.0))


class MainTests(SynchronousTestCase):
    """L{main} prints the echo, or one error line with its exit status."""

    def test_received(self) -> None:
        """A successful echo prints 'Received: <word>'."""
        network = Network()
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            d = Deferred.fromCoroutine(_mainWith(network, ["h", "héllo", "7"]))
            network.connect().flush()
            self.successResultOf(d)
        self.assertEqual(stdout.getvalue(), "Received: héllo\n")

    def test_failureExits1(self) -> None:
        """A failed echo prints one error line on stderr and exits 1."""
        network = Network()
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            d = Deferred.fromCoroutine(_mainWith(network, ["h", "x", "7"]))
            network.completer.failOnce(Failure(ConnectionRefusedError()))
            failure = self.failureResultOf(d, SystemExit)
        self.assertEqual(failure.value.code, 1)
        self.assertEqual(
            stderr.getvalue(), "echotwist.client: error: connection refused by h:7\n"
        )

    def refused(self, host: str) -> tuple[list[str], str]:
        """Run C{main} for C{host} port 7 against a refusing server.

        Return the hosts it connected to and what it wrote on stderr.
        """
        network = Network()
        hosts: list[str] = []

        def connect(
            reactor: object, host: str, *args: object, **kwargs: object
        ) -> IStreamClientEndpoint:
            hosts.append(host)
            return network.endpoint

        stderr = io.StringIO()
        with redirect_stderr(stderr):
            d = Deferred.fromCoroutine(
                main(network.reactor, [host, "x", "7"], connect=connect)
            )
            network.completer.failOnce(Failure(ConnectionRefusedError()))
            self.failureResultOf(d, SystemExit)
        return hosts, stderr.getvalue()

    def test_bracketedHostShownOnce(self) -> None:
        """C{[::1]} connects to ::1 and is named C{[::1]:PORT}, bracketed once."""
        for given in ("[::1]", "::1"):
            self.assertEqual(
                self.refused(given),
                (["::1"], "echotwist.client: error: connection refused by [::1]:7\n"),
            )

    def test_intervalNeedsCount(self) -> None:
        """--interval without --count is a usage error (exit 2)."""
        network = Network()
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            d = Deferred.fromCoroutine(
                _mainWith(network, ["--interval", "0.5", "h", "x", "7"])
            )
            failure = self.failureResultOf(d, SystemExit)
        self.assertEqual(failure.value.code, 2)
        self.assertIn("--interval needs --count", stderr.getvalue())

    def interruptPing(self, answer: bool) -> tuple[Deferred[None], str, str]:
        """Ping until interrupted (C{-c 0}), answered or not, then cancel it.

        Return the run and what it wrote to stdout and stderr.
        """
        network = Network(None if answer else Factory.forProtocol(Protocol))
        stdout, stderr = io.StringIO(), io.StringIO()
        with redirect_stdout(stdout), redirect_stderr(stderr):
            d = Deferred.fromCoroutine(
                _mainWith(network, ["-c", "0", "-i", "1", "-W", "0.5", "h", "x", "7"])
            )
            pump = network.connect()
            for _ in range(3):
                pump.flush()
                network.reactor.advance(1)
                if not answer:
                    # Each probe timed out and dropped its connection: the
                    # next one waits for a new connection, made here.
                    pump = network.connect()
            pump.flush()
            d.cancel()
        return d, stdout.getvalue(), stderr.getvalue()

    def test_interruptedPingReportsAndExits0(self) -> None:
        """Ctrl-C ends a ping with its header, lines and statistics, exit 0."""
        d, stdout, stderr = self.interruptPing(answer=True)
        self.successResultOf(d)
        lines = stdout.splitlines()
        self.assertEqual(lines[0], "PING h port 7 over tcp: 1 data bytes")
        self.assertEqual(len([line for line in lines if " seq=" in line]), 4)
        self.assertIn("4 probes sent, 4 received, 0.0% loss", stdout)
        self.assertEqual(stderr, "")

    def test_interruptedPingWithoutEchoesExits1(self) -> None:
        """Ctrl-C after probes that all went unanswered: statistics, exit 1."""
        d, stdout, stderr = self.interruptPing(answer=False)
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 1)
        self.assertIn("4 probes sent, 0 received, 100.0% loss", stdout)
        self.assertEqual(
            stderr, "echotwist.client: error: no echo from h in 4 probes\n"
        )

    def test_shortOptions(self) -> None:
        """-c, -i and -W are ping's short forms of --count, --interval, --timeout."""
        args = buildParser().parse_args(["-c", "2", "127.0.0.1", "hi"])
        self.assertEqual(
            (args.count, args.host, args.word, args.port), (2, "127.0.0.1", "hi", 7)
        )
        args = buildParser().parse_args(["-c", "0", "-i", "0.2", "-W", "3", "h", "w"])
        self.assertEqual((args.count, args.interval, args.timeout), (0, 0.2, 3.0))
        self.assertIsNone(buildParser().parse_args(["h", "w"]).count)


async def _mainWith(network: Network, argv: list[str]) -> None:
    """Run L{main} with its endpoint replaced by C{network}'s."""
    await main(network.reactor, argv, connect=lambda *_, **__: network.endpoint)
