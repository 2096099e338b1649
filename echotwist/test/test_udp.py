"""Unit tests for L{echotwist.server.udp} and its listening service."""

from __future__ import annotations

import errno
import io

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist.endpoints import BadEndpoint
from echotwist.server.listening import DatagramListeningService
from echotwist.server.stats import ServerStats
from echotwist.server.udp import (
    MAX_DATAGRAM,
    READ_SIZE,
    DatagramEcho,
    ReflectionGuard,
    TokenBuckets,
    UDPListen,
    classifySource,
    parseUDP,
    shouldLogDrop,
)


class ParseUDPTests(SynchronousTestCase):
    """L{parseUDP} accepts C{PORT} and C{udp:PORT:interface=ADDR} only."""

    def test_bareNumber(self) -> None:
        """A bare number is that port on every IPv4 address."""
        self.assertEqual(parseUDP("7"), UDPListen("7", 7, ""))

    def test_udpWithInterface(self) -> None:
        """C{udp:PORT:interface=ADDR} gives the port and the address."""
        self.assertEqual(
            parseUDP("udp:5000:interface=127.0.0.1"),
            UDPListen("udp:5000:interface=127.0.0.1", 5000, "127.0.0.1"),
        )

    def test_portKeyword(self) -> None:
        """C{udp:port=N} works like C{udp:N}, and C{udp:N} alone means all IPv4."""
        self.assertEqual(parseUDP("udp:port=9").port, 9)
        self.assertEqual(parseUDP("udp:9").interface, "")

    def test_ipv6Interface(self) -> None:
        """An IPv6 interface may be escaped, bracketed or written as it is."""
        for text in (
            r"udp:0:interface=\:\:1",
            "udp:0:interface=::1",
            "udp:0:interface=[::1]",
            "udp:0:interface=0:0:0:0:0:0:0:1",
        ):
            self.assertEqual(parseUDP(text).interface, "::1", text)

    def test_rejected(self) -> None:
        """Bad ports, bad interfaces and other shapes raise L{BadEndpoint}."""
        for text in (
            "",
            "abc",
            "70000",
            "-1",
            "udp:abc",
            "udp:70000",
            "udp:",
            "udp:5000:interface=foo",
            "udp:5000:interface=",
            "udp:5000:backlog=3",
            "tcp:5000",
            "5000:x",
        ):
            self.assertRaises(BadEndpoint, parseUDP, text)

    def test_messageNamesTheProblem(self) -> None:
        """The error message quotes the bad value."""
        error = self.assertRaises(BadEndpoint, parseUDP, "udp:1:interface=nope")
        self.assertIn("'nope'", str(error))


class ClassifySourceTests(SynchronousTestCase):
    """L{classifySource} refuses sources a reflector must not answer."""

    def test_ordinarySources(self) -> None:
        """Unicast sources on unprivileged ports may be answered."""
        for host, port in (
            ("127.0.0.1", 1024),
            ("192.0.2.1", 65535),
            ("::1", 40000),
            ("::ffff:192.0.2.1", 5000),
            ("fe80::1%eth0", 5000),
        ):
            self.assertIsNone(classifySource(host, port), (host, port))

    def test_privilegedPorts(self) -> None:
        """Source ports 0 to 1023 (echo, chargen, qotd...) are dropped."""
        for port in (0, 7, 13, 17, 19, 1023):
            self.assertEqual(classifySource("127.0.0.1", port), "privileged-port")

    def test_broadcast(self) -> None:
        """The limited broadcast address is dropped, mapped into IPv6 too."""
        self.assertEqual(classifySource("255.255.255.255", 5000), "broadcast")
        self.assertEqual(classifySource("::ffff:255.255.255.255", 5000), "broadcast")

    def test_multicast(self) -> None:
        """IPv4 and IPv6 multicast sources are dropped."""
        for host in ("224.0.0.1", "239.255.255.250", "ff02::1", "::ffff:224.0.0.1"):
            self.assertEqual(classifySource(host, 5000), "multicast", host)

    def test_unspecified(self) -> None:
        """Unspecified and unparsable source addresses are dropped."""
        for host in ("0.0.0.0", "::", "not-an-address"):
            self.assertEqual(classifySource(host, 5000), "unspecified", host)


class TokenBucketsTests(SynchronousTestCase):
    """L{TokenBuckets} limits each key's rate in a table of bounded size."""

    def test_burstThenRefill(self) -> None:
        """A key spends its burst, is refused, and earns tokens back with time."""
        clock = Clock()
        buckets = TokenBuckets(clock, rate=10)
        self.assertEqual(
            [buckets.allow("a") for _ in range(12)], [True] * 10 + [False] * 2
        )
        clock.advance(0.1)
        self.assertEqual([buckets.allow("a"), buckets.allow("a")], [True, False])
        clock.advance(100)
        self.assertEqual(sum(buckets.allow("a") for _ in range(20)), 10)

    def test_keysAreIndependent(self) -> None:
        """One key using up its tokens does not affect another."""
        buckets = TokenBuckets(Clock(), rate=2)
        for _ in range(5):
            buckets.allow("a")
        self.assertTrue(buckets.allow("b"))

    def test_fractionalRate(self) -> None:
        """A rate below one a second still allows one datagram, then waits."""
        clock = Clock()
        buckets = TokenBuckets(clock, rate=0.5)
        self.assertEqual([buckets.allow("a"), buckets.allow("a")], [True, False])
        clock.advance(1.9)
        self.assertFalse(buckets.allow("a"))
        clock.advance(0.1)
        self.assertTrue(buckets.allow("a"))

    def test_clockGoingBackwards(self) -> None:
        """A clock stepping backwards mints no tokens."""
        clock = Clock()
        clock.advance(100)
        buckets = TokenBuckets(clock, rate=1)
        self.assertTrue(buckets.allow("a"))
        clock.rightNow = 0.0
        self.assertFalse(buckets.allow("a"))

    def test_tableIsBounded(self) -> None:
        """However many keys arrive, at most C{maxKeys} buckets are kept."""
        buckets = TokenBuckets(Clock(), rate=1, maxKeys=100)
        for i in range(10_000):
            buckets.allow(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(len(buckets), 100)

    def test_leastRecentlyUsedIsEvicted(self) -> None:
        """A key in use survives a flood of new keys longer than idle ones."""
        buckets = TokenBuckets(Clock(), rate=1, maxKeys=3)
        buckets.allow("busy")
        buckets.allow("idle")
        buckets.allow("busy")
        buckets.allow("new1")
        buckets.allow("new2")
        # "idle" was forgotten (it is back with a full bucket); "busy",
        # used more recently, still has an empty one.
        self.assertFalse(buckets.allow("busy"))
        self.assertTrue(buckets.allow("idle"))

    def test_badArguments(self) -> None:
        """A rate of zero or less, or an empty table, is refused."""
        self.assertRaises(ValueError, TokenBuckets, Clock(), 0)
        self.assertRaises(ValueError, TokenBuckets, Clock(), 1, None, 0)

    @given(
        rate=st.integers(min_value=1, max_value=50),
        steps=st.lists(st.floats(min_value=0, max_value=2), max_size=60),
    )
    def test_neverMoreThanBurstPlusRateTimesTime(
        self, rate: int, steps: list[float]
    ) -> None:
        """Over any interval a key gets at most burst + rate x elapsed tokens."""
        clock = Clock()
        buckets = TokenBuckets(clock, rate=rate)
        allowed = 0
        for step in steps:
            clock.advance(step)
            allowed += buckets.allow("k")
        self.assertLessEqual(allowed, rate + rate * clock.seconds() + 1e-9)


class ReflectionGuardTests(SynchronousTestCase):
    """L{ReflectionGuard} combines the address checks with a per-host rate."""

    def test_addressChecksFirst(self) -> None:
        """A privileged source port is dropped for that reason, not the rate."""
        guard = ReflectionGuard(Clock(), rate=1)
        self.assertEqual(guard.check("127.0.0.1", 19, b"x"), "privileged-port")
        self.assertIsNone(guard.check("127.0.0.1", 4000, b"x"))

    def test_ratePerHostNotPerPort(self) -> None:
        """Changing the source port does not earn a source more datagrams."""
        guard = ReflectionGuard(Clock(), rate=3)
        results = [guard.check("192.0.2.1", 2000 + i, b"x") for i in range(5)]
        self.assertEqual(results, [None, None, None, "rate", "rate"])
        self.assertIsNone(guard.check("192.0.2.2", 2000, b"x"))

    def test_zeroRateIsNoLimit(self) -> None:
        """With rate 0, no datagram is dropped for its rate."""
        guard = ReflectionGuard(Clock(), rate=0)
        self.assertEqual(
            {guard.check("192.0.2.1", 5000, b"%d" % i) for i in range(10_000)}, {None}
        )


class ShouldLogDropTests(SynchronousTestCase):
    """L{shouldLogDrop} picks the 1st, 10th, 100th... drop."""

    def test_powersOfTen(self) -> None:
        """Exactly the powers of ten up to 100000 are logged."""
        logged = [n for n in range(1, 100_001) if shouldLogDrop(n)]
        self.assertEqual(logged, [1, 10, 100, 1000, 10_000, 100_000])


class FakeDatagramTransport:
    """Record datagrams written, or fail the way a real port can."""

    def __init__(self, error: Exception | None = None) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.error = error

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Record C{datagram} to C{addr}, or raise the configured error."""
        if self.error is not None:
            raise self.error
        self.written.append((datagram, addr))


def echoWith(
    rate: float = 0, error: Exception | None = None
) -> tuple[DatagramEcho, FakeDatagramTransport, ServerStats, Clock]:
    """A L{DatagramEcho} on a fake transport, its stats and its clock."""
    clock = Clock()
    stats = ServerStats()
    protocol = DatagramEcho(ReflectionGuard(clock, rate=rate), stats)
    transport = FakeDatagramTransport(error)
    protocol.transport = transport  # type: ignore[assignment]  # a fake, not an IUDPTransport
    return protocol, transport, stats, clock


class DatagramEchoTests(SynchronousTestCase):
    """L{DatagramEcho} echoes allowed datagrams whole and counts the rest."""

    @given(st.binary(max_size=2000))
    def test_echoesWhole(self, datagram: bytes) -> None:
        """Any datagram, empty included, goes back unchanged to its sender."""
        protocol, transport, stats, _ = echoWith()
        protocol.datagramReceived(datagram, ("192.0.2.1", 40000))
        self.assertEqual(transport.written, [(datagram, ("192.0.2.1", 40000))])
        self.assertEqual(stats.bytesEchoed["udp"], len(datagram))

    def test_largestDatagram(self) -> None:
        """A 65507-byte datagram comes back whole, counted in bytes."""
        protocol, transport, stats, _ = echoWith()
        datagram = bytes(range(256)) * (MAX_DATAGRAM // 256) + b"x" * (
            MAX_DATAGRAM % 256
        )
        protocol.datagramReceived(datagram, ("::1", 40000))
        self.assertEqual(transport.written, [(datagram, ("::1", 40000))])
        self.assertEqual(stats.bytesEchoed, {"udp": MAX_DATAGRAM})

    def test_replyNeverLargerThanRequest(self) -> None:
        """Every reply is exactly as long as the datagram it answers."""
        protocol, transport, _, _ = echoWith()
        sizes = [0, 1, 7, 512, 1500, 9000, MAX_DATAGRAM]
        for size in sizes:
            protocol.datagramReceived(b"a" * size, ("192.0.2.1", 40000))
        self.assertEqual([len(d) for d, _ in transport.written], sizes)

    def test_dropsCountedByReason(self) -> None:
        """Guarded sources are not answered; each drop is counted by reason."""
        protocol, transport, stats, _ = echoWith(rate=1)
        for addr in (
            ("192.0.2.1", 19),
            ("255.255.255.255", 5000),
            ("224.0.0.9", 5000),
            ("0.0.0.0", 5000),
            ("192.0.2.1", 5000),
            ("192.0.2.1", 5001),
        ):
            protocol.datagramReceived(b"x", addr)
        self.assertEqual(transport.written, [(b"x", ("192.0.2.1", 5000))])
        self.assertEqual(
            stats.udpDropped,
            {
                "privileged-port": 1,
                "broadcast": 1,
                "multicast": 1,
                "unspecified": 1,
                "rate": 1,
            },
        )
        self.assertEqual(stats.bytesEchoed["udp"], 1)

    def test_rateRecovers(self) -> None:
        """A rate-limited source is answered again once time has passed."""
        protocol, transport, stats, clock = echoWith(rate=2)
        for datagram in (b"1", b"2", b"3", b"4"):
            protocol.datagramReceived(datagram, ("192.0.2.1", 5000))
        clock.advance(0.5)
        protocol.datagramReceived(b"5", ("192.0.2.1", 5000))
        self.assertEqual([d for d, _ in transport.written], [b"1", b"2", b"5"])
        self.assertEqual(stats.udpDropped["rate"], 2)

    def test_dropsLoggedSparingly(self) -> None:
        """A flood of drops leaves the 1st, 10th and 100th in the log only."""
        protocol, _, _, _ = echoWith()
        with capturedLogs() as events:
            for _ in range(150):
                protocol.datagramReceived(b"x", ("192.0.2.1", 7))
        counts = [e["count"] for e in events if e.get("reason") == "privileged-port"]
        self.assertEqual(counts, [1, 10, 100])
        self.assertEqual(events[0]["host"], "192.0.2.1")

    def test_sendFailures(self) -> None:
        """A reply the socket cannot send is counted as a drop, not raised."""
        for error in (
            MessageLengthError("message too long"),
            OSError(errno.EAGAIN, "busy"),
            OSError(errno.ENOBUFS, "no buffer space"),
        ):
            protocol, _, stats, _ = echoWith(error=error)
            protocol.datagramReceived(b"x", ("192.0.2.1", 5000))
            self.assertEqual(stats.udpDropped, {"send-failed": 1})
            self.assertEqual(stats.bytesEchoed["udp"], 0)

    def test_otherErrorsPropagate(self) -> None:
        """An unexpected socket error is not swallowed."""
        protocol, _, _, _ = echoWith(error=OSError(errno.EBADF, "bad fd"))
        self.assertRaises(OSError, protocol.datagramReceived, b"x", ("192.0.2.1", 5000))


@implementer(IReactorUDP)
class UDPReactor:
    """A reactor that records C{listenUDP} calls."""

    def __init__(self, failWith: Exception | None = None) -> None:
        self.udpPorts: list[tuple[int, DatagramProtocol, str, int]] = []
        self.failWith = failWith
        self.stopped: list[int] = []

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> IListeningPort:
        """Record the call; return a fake port bound to C{port} (or fail)."""
        if self.failWith is not None:
            raise self.failWith
        self.udpPorts.append((port, protocol, interface, maxPacketSize))
        return FakeUDPPort(self, port, interface)


@implementer(IListeningPort)
class FakeUDPPort:
    """A bound UDP port as far as the service looks at one."""

    def __init__(self, reactor: UDPReactor, port: int, interface: str) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface

    def getHost(self) -> IPv4Address | IPv6Address:
        """The address bound (port 0 pretends to get 4321)."""
        port = self.port or 4321
        if ":" in self.interface:
            return IPv6Address("UDP", self.interface, port)
        return IPv4Address("UDP", self.interface or "0.0.0.0", port)

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> None:
        """Record that the port was closed."""
        self.reactor.stopped.append(self.port)


class DatagramListeningServiceTests(SynchronousTestCase):
    """L{DatagramListeningService} binds at start, logs, and stops."""

    def service(
        self, text: str, reactor: UDPReactor
    ) -> tuple[DatagramListeningService, io.StringIO]:
        """A service for C{--udp TEXT} on C{reactor}, with its error stream."""
        errors = io.StringIO()
        protocol = DatagramEcho(ReflectionGuard(Clock()), ServerStats())
        return (
            DatagramListeningService(reactor, parseUDP(text), protocol, errors),
            errors,
        )

    def test_listensWithoutTruncating(self) -> None:
        """The port is bound in privilegedStartService, reading 65535 bytes."""
        reactor = UDPReactor()
        service, _ = self.service("udp:7007:interface=::1", reactor)
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
        self.assertEqual(
            [(p, i, m) for p, _, i, m in reactor.udpPorts], [(7007, "::1", READ_SIZE)]
        )
        self.assertGreaterEqual(READ_SIZE, MAX_DATAGRAM)
        self.assertIn("udp:[::1]:7007", [e.get("address") for e in events])
        self.successResultOf(service.stopService())
        self.assertEqual(reactor.stopped, [7007])

    def test_bareNumberMeansAllIPv4(self) -> None:
        """C{--udp 7} binds port 7 with an empty (all IPv4) interface."""
        reactor = UDPReactor()
        service, _ = self.service("7", reactor)
        service.startService()
        self.assertEqual([(p, i) for p, _, i, _ in reactor.udpPorts], [(7, "")])

    def test_cannotListen(self) -> None:
        """A port in use is one line on the error stream and exit status 1."""
        reactor = UDPReactor(
            CannotListenError("", 7, OSError(98, "Address already in use"))
        )
        service, errors = self.service("7", reactor)
        with capturedLogs():
            exit = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertEqual(exit.code, 1)
        self.assertEqual(
            errors.getvalue(),
            "twistd echo: cannot listen on UDP 7: [Errno 98] Address already in use\n",
        )

    def test_stopWhenNotStarted(self) -> None:
        """Stopping a service that never listened succeeds at once."""
        service, _ = self.service("7", UDPReactor())
        self.assertIsNone(self.successResultOf(service.stopService()))
