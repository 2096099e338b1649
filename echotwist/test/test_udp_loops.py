"""Unit tests: the UDP echo never loops, with itself or with another reflector.

No sockets and no real time: datagrams travel through L{FakeNetwork}, a
table of fake UDP ports that delivers each datagram after a delay on a
L{Clock}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain, count
from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.client.ping import DatagramProber, runPing
from echotwist.client.pingstats import PingStats
from echotwist.server.stats import ServerStats
from echotwist.server.udp import (
    DEFAULT_ECHO_WINDOW,
    DROP_REASONS,
    DatagramEcho,
    RecentEchoes,
    ReflectionGuard,
)

Peer = tuple[str, int]


class FakeNetwork:
    """UDP between fake ports: a datagram to C{d} arrives C{delay(d)} s later.

    A datagram to an address where no port is bound is lost; if it came
    from a port connected to that address, that port's protocol is told
    the destination is unreachable (C{connectionRefused}).
    """

    def __init__(
        self, clock: Clock, delay: Callable[[Peer], float] = lambda _: 0.001
    ) -> None:
        self.clock = clock
        self.delay = delay
        self.ports: dict[Peer, FakeUDPPort] = {}

    def bind(self, protocol: DatagramProtocol, host: str, port: int) -> FakeUDPPort:
        """Bind C{protocol} to C{host}/C{port} and start it."""
        transport = FakeUDPPort(self, host, port)
        self.ports[(host, port)] = transport
        protocol.makeConnection(transport)  # type: ignore[arg-type]  # a fake
        transport.protocol = protocol
        return transport

    def send(self, source: Peer, destination: Peer, datagram: bytes) -> None:
        """Deliver C{datagram} from C{source} (forged or not) after a delay."""
        self.clock.callLater(
            self.delay(destination), self._deliver, source, destination, datagram
        )

    def _deliver(self, source: Peer, destination: Peer, datagram: bytes) -> None:
        port = self.ports.get(destination)
        if port is not None and port.protocol is not None:
            port.received += 1
            port.protocol.datagramReceived(datagram, source)
            return
        # A kernel reports the ICMP port unreachable that comes back to a
        # connected UDP socket as a refusal on that socket.
        sender = self.ports.get(source)
        if (
            sender is not None
            and sender.protocol is not None
            and sender.connected == destination
        ):
            sender.protocol.connectionRefused()

    def run(self, limit: float = 10.0) -> None:
        """Deliver datagrams (and run timers) in time order for C{limit} s at most."""
        end = self.clock.seconds() + limit
        while calls := self.clock.getDelayedCalls():
            due = min(call.getTime() for call in calls)
            if due > end:
                break
            self.clock.advance(max(0.0, due - self.clock.seconds()))


class FakeUDPPort:
    """A bound UDP port on a L{FakeNetwork}, counting what it sends."""

    def __init__(self, network: FakeNetwork, host: str, port: int) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.protocol: DatagramProtocol | None = None
        self.connected: Peer | None = None
        self.sent: list[tuple[bytes, Peer]] = []
        self.received = 0
        self.closed = False

    def getHost(self) -> IPv4Address | IPv6Address:
        """The bound address."""
        if ":" in self.host:
            return IPv6Address("UDP", self.host, self.port)
        return IPv4Address("UDP", self.host, self.port)

    def write(self, datagram: bytes, addr: Peer | None = None) -> None:
        """Send C{datagram} to C{addr}, or to the connected peer."""
        destination = addr if addr is not None else self.connected
        assert destination is not None
        self.sent.append((datagram, destination))
        self.network.send((self.host, self.port), destination, datagram)

    def connect(self, host: str, port: int) -> None:
        """Send to C{host}/C{port} when no address is given."""
        self.connected = (host, port)

    def stopListening(self) -> None:
        """Unbind and stop the protocol (once: Twisted's UDP port breaks if twice)."""
        assert not self.closed, "stopListening called twice"
        self.closed = True
        self.network.ports.pop((self.host, self.port), None)
        if self.protocol is not None:
            self.protocol.doStop()
            self.protocol = None


class Reflector(DatagramProtocol):
    """Any other UDP echo service: answers every datagram, unguarded."""

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        """Send C{datagram} back to C{addr}."""
        assert self.transport is not None
        self.transport.write(datagram, addr)


def echoServer(
    network: FakeNetwork,
    *addresses: Peer,
    guard: ReflectionGuard | None = None,
) -> tuple[ServerStats, ReflectionGuard, list[FakeUDPPort]]:
    """An echotwist UDP echo on C{addresses}, sharing one guard and stats."""
    stats = ServerStats()
    if guard is None:
        guard = ReflectionGuard(network.clock)
    ports = [
        network.bind(DatagramEcho(guard, stats), host, port) for host, port in addresses
    ]
    return stats, guard, ports


class OwnAddressTests(SynchronousTestCase):
    """A datagram "from" one of the server's own addresses is never answered."""

    def test_specificInterface(self) -> None:
        """Bound to 127.0.0.1:7007, a datagram from 127.0.0.1:7007 is dropped."""
        network = FakeNetwork(Clock())
        stats, _, (port,) = echoServer(network, ("127.0.0.1", 7007))
        network.send(("127.0.0.1", 7007), ("127.0.0.1", 7007), b"self")
        network.run()
        self.assertEqual(port.sent, [])
        self.assertEqual(stats.udpDropped, {"own-address": 1})

    def test_specificInterfaceOthersServed(self) -> None:
        """Another host on that port, or that host on another port, is answered."""
        network = FakeNetwork(Clock())
        _, guard, _ = echoServer(network, ("127.0.0.1", 7007))
        self.assertIsNone(guard.check("127.0.0.2", 7007, b"x"))
        self.assertIsNone(guard.check("127.0.0.1", 7008, b"x"))

    def test_wildcard(self) -> None:
        """Bound to every address, port 7007 from any host is dropped."""
        for bound in ("0.0.0.0", "::"):
            protocol = DatagramEcho(ReflectionGuard(Clock()), ServerStats())
            port = FakeUDPPort(FakeNetwork(Clock()), bound, 7007)
            protocol.makeConnection(port)  # type: ignore[arg-type]  # a fake
            for host in ("127.0.0.1", "192.0.2.1", "::ffff:192.0.2.1", "::1"):
                protocol.datagramReceived(b"x", (host, 7007))
            protocol.datagramReceived(b"x", ("192.0.2.1", 7008))
            self.assertEqual(port.sent, [(b"x", ("192.0.2.1", 7008))], bound)
            self.assertEqual(protocol.stats.udpDropped, {"own-address": 4}, bound)

    def test_mappedIPv4(self) -> None:
        """An IPv4-mapped IPv6 source is the IPv4 address it maps."""
        network = FakeNetwork(Clock())
        _, guard, _ = echoServer(network, ("127.0.0.1", 7007))
        self.assertEqual(guard.check("::ffff:127.0.0.1", 7007, b"x"), "own-address")

    def test_anotherOfOurPorts(self) -> None:
        """A datagram forged from our port B to our port A gets no reply at all."""
        network = FakeNetwork(Clock())
        stats, _, (a, b) = echoServer(network, ("127.0.0.1", 7007), ("::1", 7008))
        network.send(("::1", 7008), ("127.0.0.1", 7007), b"ping-pong")
        network.run()
        self.assertEqual((a.sent, b.sent), ([], []))
        self.assertEqual(stats.udpDropped, {"own-address": 1})

    def test_forgottenWhenStopped(self) -> None:
        """Once a port stops listening, its address is no longer ours."""
        network = FakeNetwork(Clock())
        _, guard, (a, _) = echoServer(network, ("127.0.0.1", 7007), ("127.0.0.1", 7008))
        a.stopListening()
        self.assertIsNone(guard.check("127.0.0.1", 7007, b"x"))
        self.assertEqual(guard.check("127.0.0.1", 7008, b"x"), "own-address")


class ReflectedEchoTests(SynchronousTestCase):
    """Our echo sent back by another reflector within the window is dropped."""

    def setUp(self) -> None:
        """One server on 127.0.0.1:7007 with a fresh clock."""
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.stats, self.guard, (self.port,) = echoServer(
            self.network, ("127.0.0.1", 7007)
        )

    def receive(self, datagram: bytes, peer: Peer = ("192.0.2.1", 40000)) -> None:
        """Hand C{datagram} from C{peer} to the server at once."""
        protocol = self.port.protocol
        assert protocol is not None
        protocol.datagramReceived(datagram, peer)

    def test_droppedWithinWindow(self) -> None:
        """The datagram just echoed to a peer, back from it, is dropped and counted."""
        self.receive(b"loop")
        self.clock.advance(DEFAULT_ECHO_WINDOW * 0.9)
        self.receive(b"loop")
        self.assertEqual(len(self.port.sent), 1)
        self.assertEqual(self.stats.udpDropped, {"reflected-echo": 1})

    def test_sameClientRepeating(self) -> None:
        """One port repeating: 0.05 s after its echo it is dropped, 0.15 s after not."""
        self.receive(b"probe")
        self.clock.advance(0.05)
        self.receive(b"probe")
        self.assertEqual(self.stats.udpDropped, {"reflected-echo": 1})
        self.clock.advance(0.1)
        self.receive(b"probe")
        self.assertEqual([d for d, _ in self.port.sent], [b"probe", b"probe"])

    def test_answeredAfterWindow(self) -> None:
        """Once the window has passed, the same datagram is answered again."""
        self.receive(b"again")
        self.clock.advance(DEFAULT_ECHO_WINDOW / 2)
        self.receive(b"again")
        self.clock.advance(DEFAULT_ECHO_WINDOW)
        self.receive(b"again")
        self.assertEqual([d for d, _ in self.port.sent], [b"again", b"again"])
        self.assertEqual(self.stats.udpDropped, {"reflected-echo": 1})

    def test_differentPayloadEchoed(self) -> None:
        """A different datagram from the same peer is echoed; a repeat is not."""
        for datagram in (b"one", b"two", b"one", b""):
            self.receive(datagram)
        self.receive(b"")
        self.assertEqual([d for d, _ in self.port.sent], [b"one", b"two", b""])
        self.assertEqual(self.stats.udpDropped, {"reflected-echo": 2})

    def test_otherPeersServed(self) -> None:
        """The same datagram from another host or port is answered."""
        self.receive(b"same", ("192.0.2.1", 40000))
        self.receive(b"same", ("192.0.2.1", 40001))
        self.receive(b"same", ("192.0.2.2", 40000))
        self.assertEqual(len(self.port.sent), 3)

    def test_notAgainstTheRate(self) -> None:
        """A reflected echo spends none of its host's datagrams a second."""
        guard = ReflectionGuard(self.clock, rate=2)
        guard.echoed("192.0.2.1", 40000, b"x")
        for _ in range(5):
            self.assertEqual(guard.check("192.0.2.1", 40000, b"x"), "reflected-echo")
        self.assertIsNone(guard.check("192.0.2.1", 40000, b"y"))
        self.assertIsNone(guard.check("192.0.2.1", 40000, b"z"))

    def test_memoryBound(self) -> None:
        """At most C{maxEchoes} echoes are remembered; the oldest goes first."""
        guard = ReflectionGuard(self.clock, maxEchoes=3)
        protocol = DatagramEcho(guard, ServerStats())
        port = FakeUDPPort(self.network, "127.0.0.1", 7008)
        protocol.makeConnection(port)  # type: ignore[arg-type]  # a fake
        peers = [("192.0.2.1", 40000 + i) for i in range(4)]
        for peer in peers:
            protocol.datagramReceived(b"x", peer)
        self.assertEqual(len(guard.echoes), 3)
        # The first peer's echo was forgotten; the last three are remembered.
        self.assertIsNone(guard.check(*peers[0], b"x"))
        self.assertEqual(
            [guard.check(*peer, b"x") for peer in peers[1:]], ["reflected-echo"] * 3
        )

    def test_countedInTheMetrics(self) -> None:
        """Both new reasons are among those the metrics always publish."""
        self.assertIn("own-address", DROP_REASONS)
        self.assertIn("reflected-echo", DROP_REASONS)


class RecentEchoesTests(SynchronousTestCase):
    """L{RecentEchoes} remembers each echo for a window, in a bounded table."""

    def test_window(self) -> None:
        """An echo is returning until the window has passed, not after."""
        clock = Clock()
        echoes = RecentEchoes(clock, window=0.5)
        echoes.remember("h", 1, b"x")
        clock.advance(0.4999)
        self.assertTrue(echoes.isReturning("h", 1, b"x"))
        clock.advance(0.0001)
        self.assertFalse(echoes.isReturning("h", 1, b"x"))

    def test_everyEchoKept(self) -> None:
        """Two datagrams echoed to one peer are both remembered, not just the last."""
        echoes = RecentEchoes(Clock())
        echoes.remember("h", 1, b"first")
        echoes.remember("h", 1, b"second")
        self.assertTrue(echoes.isReturning("h", 1, b"first"))
        self.assertTrue(echoes.isReturning("h", 1, b"second"))

    def test_expiredForgotten(self) -> None:
        """Remembering an echo forgets those older than the window."""
        clock = Clock()
        echoes = RecentEchoes(clock, window=0.5)
        for i in range(100):
            echoes.remember("h", i + 1024, b"x")
        clock.advance(0.5)
        echoes.remember("h", 1, b"x")
        self.assertEqual(len(echoes), 1)

    def test_tableIsBounded(self) -> None:
        """However many echoes in one window, at most C{maxEchoes} are kept."""
        echoes = RecentEchoes(Clock(), maxEchoes=100)
        for i in range(10_000):
            echoes.remember(f"10.0.{i // 256}.{i % 256}", 5000, b"x")
        self.assertEqual(len(echoes), 100)
        self.assertTrue(echoes.isReturning("10.0.39.15", 5000, b"x"))
        self.assertFalse(echoes.isReturning("10.0.0.0", 5000, b"x"))

    def test_repeatMovesToTheEnd(self) -> None:
        """Echoing a datagram again renews it: it is the newest, last to go."""
        echoes = RecentEchoes(Clock(), maxEchoes=2)
        echoes.remember("h", 1, b"a")
        echoes.remember("h", 1, b"b")
        echoes.remember("h", 1, b"a")
        echoes.remember("h", 1, b"c")
        self.assertEqual(
            [echoes.isReturning("h", 1, d) for d in (b"a", b"b", b"c")],
            [True, False, True],
        )

    def test_clockGoingBackwards(self) -> None:
        """An echo is not kept for as long as the clock stepped back."""
        clock = Clock()
        clock.advance(100)
        echoes = RecentEchoes(clock, window=0.5)
        echoes.remember("h", 1, b"x")
        clock.rightNow = 99.9
        self.assertTrue(echoes.isReturning("h", 1, b"x"))
        clock.rightNow = 0.0
        self.assertFalse(echoes.isReturning("h", 1, b"x"))

    def test_badArguments(self) -> None:
        """A window of zero or less, or an empty table, is refused."""
        self.assertRaises(ValueError, RecentEchoes, Clock(), 0)
        self.assertRaises(ValueError, RecentEchoes, Clock(), 1, 0)


class LoopTests(SynchronousTestCase):
    """One forged datagram makes at most a handful of replies, then silence."""

    def test_forgedFromItself(self) -> None:
        """A datagram forged with the server's own address gets no reply."""
        network = FakeNetwork(Clock())
        stats, _, (port,) = echoServer(network, ("127.0.0.1", 40001))
        network.send(("127.0.0.1", 40001), ("127.0.0.1", 40001), b"forged")
        network.run()
        self.assertEqual((len(port.sent), port.received), (0, 1))
        self.assertEqual(stats.udpDropped, {"own-address": 1})

    def test_againstAnotherReflector(self) -> None:
        """Set against an unguarded echo service, each side replies once."""
        network = FakeNetwork(Clock())
        stats, _, (ours,) = echoServer(network, ("127.0.0.1", 40001))
        other = network.bind(Reflector(), "127.0.0.1", 40002)
        network.send(("127.0.0.1", 40002), ("127.0.0.1", 40001), b"forged")
        network.run()
        self.assertEqual((len(ours.sent), len(other.sent)), (1, 1))
        self.assertEqual(stats.udpDropped, {"reflected-echo": 1})

    def test_againstAnotherEchotwist(self) -> None:
        """Two echotwist servers on different ports: one reply each."""
        network = FakeNetwork(Clock())
        _, _, (a,) = echoServer(network, ("127.0.0.1", 40001))
        _, _, (b,) = echoServer(network, ("127.0.0.1", 40002))
        network.send(("127.0.0.1", 40002), ("127.0.0.1", 40001), b"forged")
        network.run()
        self.assertEqual((len(a.sent), len(b.sent)), (1, 1))

    def test_manyForgedDatagrams(self) -> None:
        """Ten different forged datagrams at once: still one reply each way each."""
        network = FakeNetwork(Clock())
        _, _, (ours,) = echoServer(network, ("127.0.0.1", 40001))
        other = network.bind(Reflector(), "127.0.0.1", 40002)
        for i in range(10):
            network.send(("127.0.0.1", 40002), ("127.0.0.1", 40001), b"%d" % i)
        network.run()
        self.assertEqual((len(ours.sent), len(other.sent)), (10, 10))

    def test_slowRoundTripBroken(self) -> None:
        """A loop with a 90 ms round trip, within the window, is broken at once."""
        network = FakeNetwork(Clock(), delay=lambda _: 0.045)
        stats, _, (ours,) = echoServer(network, ("127.0.0.1", 40001))
        other = network.bind(Reflector(), "127.0.0.1", 40002)
        network.send(("127.0.0.1", 40002), ("127.0.0.1", 40001), b"lan")
        network.run()
        self.assertEqual((len(ours.sent), len(other.sent)), (1, 1))
        self.assertEqual(stats.udpDropped, {"reflected-echo": 1})

    def test_slowerLoopAtMostTenTimesASecond(self) -> None:
        """A loop slower than the window goes on, but at most 10 times a second."""
        self.assertEqual(DEFAULT_ECHO_WINDOW, 0.1)
        network = FakeNetwork(Clock(), delay=lambda _: DEFAULT_ECHO_WINDOW / 2 + 0.001)
        stats, _, (ours,) = echoServer(network, ("127.0.0.1", 40001))
        network.bind(Reflector(), "127.0.0.1", 40002)
        network.send(("127.0.0.1", 40002), ("127.0.0.1", 40001), b"slow")
        network.run(limit=10.0)
        # Not broken by this rule (--udp-rate still caps it): about 98
        # round trips of 0.102 s in ten seconds, none dropped.
        self.assertEqual(stats.udpDropped, {})
        self.assertGreater(len(ours.sent), 90)
        self.assertLessEqual(len(ours.sent), 10 / DEFAULT_ECHO_WINDOW + 1)


class FakeReactor:
    """Enough of a reactor for L{DatagramProber}: UDP on a L{FakeNetwork}, its clock.

    Every C{listenUDP} binds a port of C{host} as the system picks a free
    ephemeral port for port 0: the next of C{ports} if given, else the
    next from 50000 on.  C{opened} and C{interfaces} record them,
    C{resolved} the names looked up.
    """

    def __init__(
        self, network: FakeNetwork, host: str, ports: Iterable[int] = ()
    ) -> None:
        self.network = network
        self.host = host
        self.ports = chain(ports, count(50000))
        self.opened: list[FakeUDPPort] = []
        self.interfaces: list[str] = []
        self.resolved: list[str] = []

    def seconds(self) -> float:
        """The network's clock."""
        return self.network.clock.seconds()

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> FakeUDPPort:
        """Bind C{protocol} to a new port of this client's address."""
        assert port == 0, "the client lets the system pick its port"
        number = next(self.ports)
        assert (self.host, number) not in self.network.ports, "port in use"
        bound = self.network.bind(protocol, self.host, number)
        self.opened.append(bound)
        self.interfaces.append(interface)
        return bound

    def resolve(self, name: str) -> Deferred[str]:
        """Every name is an address already."""
        self.resolved.append(name)
        return succeed(name)


def ping(
    network: FakeNetwork, count: int, interval: float, timeout: float = 2.0
) -> tuple[Deferred[PingStats], FakeReactor, list[str]]:
    """Start echotwist's UDP ping of one word from 127.0.0.1 to 127.0.0.1:7007."""
    reactor = FakeReactor(network, "127.0.0.1")
    prober = DatagramProber(cast(IReactorUDP, reactor), "127.0.0.1", 7007)
    lines: list[str] = []
    d = Deferred.fromCoroutine(
        runPing(
            network.clock,
            prober,
            host="127.0.0.1",
            message=b"same every time",
            count=count,
            interval=interval,
            timeout=timeout,
            output=lines.append,
        )
    )
    return d, reactor, lines


class PingTests(SynchronousTestCase):
    """echotwist's UDP ping sends one word from a new port each time: all answered."""

    def test_shortIntervalWithJitter(self) -> None:
        """Probes 0.2 s apart, every other arriving 0.15 s late, all come back."""
        clock = Clock()
        # Every other probe takes 0.15 s to arrive, the others none: the
        # server sees probes 0.05 s apart, within its window.  Replies
        # take no time.
        toServer = iter([0.15, 0.0] * 3)
        network = FakeNetwork(
            clock, delay=lambda to: next(toServer) if to[1] == 7007 else 0.0
        )
        stats, _, (server,) = echoServer(network, ("127.0.0.1", 7007))
        d, _, lines = ping(network, count=6, interval=0.2)
        network.run(limit=30)
        result: PingStats = self.successResultOf(d)
        self.assertEqual((result.sent, result.lost), (6, 0), lines)
        self.assertEqual(stats.udpDropped, {})
        self.assertEqual(len({peer for _, peer in server.sent}), 6)

    def test_backToBack(self) -> None:
        """With no interval at all, each probe is answered."""
        network = FakeNetwork(Clock())
        stats, _, _ = echoServer(network, ("127.0.0.1", 7007))
        d, _, lines = ping(network, count=5, interval=0.0)
        network.run(limit=30)
        result: PingStats = self.successResultOf(d)
        self.assertEqual((result.sent, result.lost), (5, 0), lines)
        self.assertEqual(stats.udpDropped, {})
