"""Unit tests for the client's ping mode: statistics, probes and the probe loop.

No sockets and no real time; C{python -m echotwist.client --count N}
against real servers is in L{echotwist.test.e2e.test_ping}.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.client.connect import EchoError
from echotwist.client.ping import (
    MAX_DECLINED,
    PORT_REST,
    DatagramProbe,
    DatagramProber,
    StreamProbe,
    runPing,
)
from echotwist.client.pingstats import (
    PingStats,
    headerLine,
    probeLine,
    summaryLines,
)
from echotwist.test.test_udp_loops import FakeNetwork, FakeReactor, Peer, Reflector


class PingStatsTests(SynchronousTestCase):
    """L{PingStats} counts and summarises like C{ping}."""

    def test_summary(self) -> None:
        """min/avg/max/mdev of 1, 2 and 3 ms, mdev being the standard deviation."""
        stats = PingStats()
        for rtt in (0.001, 0.003, 0.002):
            stats.probeSent()
            stats.probeAnswered(rtt)
        summary = stats.summary()
        assert summary is not None
        expected = (0.001, 0.002, 0.003, math.sqrt(2 / 3) / 1000)
        for got, want in zip(summary, expected, strict=True):
            self.assertAlmostEqual(got, want)

    def test_loss(self) -> None:
        """One answer out of four probes is 75% loss."""
        stats = PingStats()
        for _ in range(4):
            stats.probeSent()
        stats.probeAnswered(0.5)
        self.assertEqual((stats.lost, stats.lossPercent), (3, 75.0))

    def test_noAnswers(self) -> None:
        """Without answers there is no round-trip line and 100% loss."""
        stats = PingStats()
        stats.probeSent()
        self.assertIsNone(stats.summary())
        self.assertEqual(
            summaryLines("h", stats),
            ["--- h echo statistics ---", "1 probes sent, 0 received, 100.0% loss"],
        )

    def test_header(self) -> None:
        """The header names host, port, transport and size, as ping's does."""
        self.assertEqual(
            headerLine("127.0.0.1", 5000, "udp", 5),
            "PING 127.0.0.1 port 5000 over udp: 5 data bytes",
        )

    def test_lines(self) -> None:
        """Probe and summary lines have ping's shape, times in ms."""
        stats = PingStats()
        stats.probeSent()
        stats.probeAnswered(0.0125)
        self.assertEqual(
            probeLine(5, "example", 3, 0.0125),
            "5 bytes from example: seq=3 time=12.500 ms",
        )
        self.assertEqual(
            summaryLines("example", stats)[-1],
            "rtt min/avg/max/mdev = 12.500/12.500/12.500/0.000 ms",
        )


class FakeProber:
    """A prober whose probes the test answers by hand."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes, Deferred[bytes]]] = []
        self.resets = 0
        self.closed = False
        self.readyResult: Deferred[None] | None = None

    def ready(self) -> Deferred[None]:
        """Ready at once, unless the test set another result."""
        result, self.readyResult = self.readyResult, None
        return result if result is not None else succeed(None)

    def probe(self, message: bytes) -> Deferred[bytes]:
        """Record the probe and when it was sent."""
        d: Deferred[bytes] = Deferred()
        self.sent.append((self.clock.seconds(), message, d))
        return d

    def reset(self) -> None:
        """Count resets."""
        self.resets += 1

    def close(self) -> None:
        """Note the close."""
        self.closed = True


class RunPingTests(SynchronousTestCase):
    """L{runPing} times, verifies and paces probes by the injected clock."""

    def start(
        self, count: int = 3, interval: float = 1.0, timeout: float = 0.5
    ) -> tuple[Clock, FakeProber, list[str], Deferred[PingStats]]:
        """Start a ping of C{b'hi'} with a fake prober and clock."""
        clock = Clock()
        prober = FakeProber(clock)
        lines: list[str] = []
        d = Deferred.fromCoroutine(
            runPing(
                clock,
                prober,
                host="h",
                message=b"hi",
                count=count,
                interval=interval,
                timeout=timeout,
                output=lines.append,
            )
        )
        return clock, prober, lines, d

    def test_answeredTimedOutAndCorrupt(self) -> None:
        """An echo is timed, a timeout and a wrong echo are losses with a reset."""
        clock, prober, lines, d = self.start()
        clock.advance(0.010)
        prober.sent[0][2].callback(b"hi")
        clock.advance(0.990)
        clock.advance(0.5)
        clock.advance(0.5)
        prober.sent[2][2].callback(b"hX")
        stats = self.successResultOf(d)
        self.assertEqual([t for t, _, _ in prober.sent], [0.0, 1.0, 2.0])
        self.assertEqual(
            lines,
            [
                "2 bytes from h: seq=0 time=10.000 ms",
                "no echo from h: seq=1 timeout after 0.5 s",
                "no echo from h: seq=2 echo differs from what was sent"
                " (2 bytes back for 2 sent)",
            ],
        )
        self.assertEqual((stats.sent, stats.received, prober.resets), (3, 1, 2))
        self.assertTrue(prober.closed)

    def test_slowEchoDelaysNextProbe(self) -> None:
        """A probe is never sent before the previous one is answered."""
        clock, prober, _, d = self.start(count=2, interval=0.1, timeout=5)
        clock.advance(0.3)
        self.assertEqual(len(prober.sent), 1)
        prober.sent[0][2].callback(b"hi")
        self.assertEqual([t for t, _, _ in prober.sent], [0.0, 0.3])
        prober.sent[1][2].callback(b"hi")
        self.assertEqual(self.successResultOf(d).received, 2)

    def test_firstConnectFails(self) -> None:
        """When the first connection fails the ping fails with that error."""
        clock = Clock()
        prober = FakeProber(clock)
        prober.readyResult = fail(ConnectionRefusedError())
        d = Deferred.fromCoroutine(
            runPing(
                clock,
                prober,
                host="h",
                message=b"hi",
                count=2,
                interval=1,
                timeout=1,
                output=lambda line: None,
            )
        )
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertTrue(prober.closed)

    def test_headerOnceConnected(self) -> None:
        """The header comes once the first connection is up, before any probe."""
        clock = Clock()
        prober = FakeProber(clock)
        ready: Deferred[None] = Deferred()
        prober.readyResult = ready
        lines: list[str] = []
        Deferred.fromCoroutine(
            runPing(
                clock,
                prober,
                host="h",
                message=b"hi",
                count=1,
                interval=1,
                timeout=1,
                output=lines.append,
                header="PING h",
            )
        )
        self.assertEqual(lines, [])
        ready.callback(None)
        prober.sent[0][2].callback(b"hi")
        self.assertEqual(lines, ["PING h", "2 bytes from h: seq=0 time=0.000 ms"])

    def test_countZeroRunsUntilCancelled(self) -> None:
        """Count 0 probes on and on; cancelling ends it and closes the prober."""
        clock, prober, lines, d = self.start(count=0, interval=1, timeout=0.5)
        for _ in range(50):
            prober.sent[-1][2].callback(b"hi")
            clock.advance(1)
        self.assertEqual(len(prober.sent), 51)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(prober.closed)
        self.assertEqual(len(lines), 50)

    def test_laterConnectFailsIsLoss(self) -> None:
        """A failed reconnection is a lost probe, and the ping goes on."""
        clock, prober, lines, d = self.start(count=3, interval=1, timeout=0.5)
        prober.sent[0][2].callback(b"hi")
        prober.readyResult = fail(ConnectionRefusedError())
        clock.advance(1)
        clock.advance(1)
        prober.sent[1][2].callback(b"hi")
        stats = self.successResultOf(d)
        self.assertEqual((stats.sent, stats.received), (3, 2))
        self.assertEqual(len(prober.sent), 2)
        self.assertIn("cannot connect", lines[1])


class StreamProbeTests(SynchronousTestCase):
    """L{StreamProbe} collects one echo from pieces and notices early closes."""

    def connect(self) -> tuple[StreamProbe, StringTransportWithDisconnection]:
        """A L{StreamProbe} on a string transport."""
        protocol = StreamProbe()
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_pieces(self) -> None:
        """The echo fires once as many bytes as were sent are back."""
        protocol, transport = self.connect()
        d = protocol.probe(b"hello")
        self.assertEqual(transport.value(), b"hello")
        protocol.dataReceived(b"he")
        self.assertNoResult(d)
        protocol.dataReceived(b"llo")
        self.assertEqual(self.successResultOf(d), b"hello")

    def test_closedEarly(self) -> None:
        """A close with the echo incomplete fails the probe, saying how far it got."""
        protocol, transport = self.connect()
        d = protocol.probe(b"hello")
        protocol.dataReceived(b"he")
        transport.loseConnection()
        failure = self.failureResultOf(d, EchoError)
        self.assertEqual(
            str(failure.value), "the server closed the connection after 2 of 5 bytes"
        )

    def test_failedConnection(self) -> None:
        """A connection that fails (not closes) says why."""
        protocol, _transport = self.connect()
        d = protocol.probe(b"hello")
        protocol.connectionLost(Failure(ValueError("wrong version number")))
        failure = self.failureResultOf(d, EchoError)
        self.assertEqual(
            str(failure.value),
            "the connection failed after 0 of 5 bytes: wrong version number",
        )


class DatagramProbeTests(SynchronousTestCase):
    """L{DatagramProbe} matches a reply to the probe in flight only."""

    def test_lateReply(self) -> None:
        """A reply after the probe was forgotten is counted late, not matched."""
        protocol = DatagramProbe()
        d: Deferred[bytes] = Deferred()
        protocol.waiting = d
        protocol.datagramReceived(b"one", ("127.0.0.1", 7))
        self.assertEqual(self.successResultOf(d), b"one")
        protocol.datagramReceived(b"two", ("127.0.0.1", 7))
        self.assertEqual(protocol.late, 1)

    def test_refused(self) -> None:
        """An ICMP port unreachable fails the probe in flight."""
        protocol = DatagramProbe()
        d: Deferred[bytes] = Deferred()
        protocol.waiting = d
        protocol.connectionRefused()
        failure: Failure = self.failureResultOf(d, EchoError)
        self.assertEqual(str(failure.value), "port unreachable")

    def test_closedUnderIt(self) -> None:
        """The socket closed by the reactor (how Linux's ICMP error ends a
        connected UDP port under epoll) fails the probe in flight as
        unreachable; closed with no probe waiting, nothing fails.
        """
        protocol = DatagramProbe()
        d: Deferred[bytes] = Deferred()
        protocol.waiting = d
        protocol.stopProtocol()
        failure: Failure = self.failureResultOf(d, EchoError)
        self.assertEqual(str(failure.value), "port unreachable")
        protocol.stopProtocol()
        self.assertIsNone(protocol.waiting)


SERVER = ("192.0.2.7", 7007)


class DatagramProberTests(SynchronousTestCase):
    """L{DatagramProber} sends each probe from a UDP socket of its own.

    The client is 127.0.0.1 on a L{FakeNetwork} (its ports from 50000 on),
    the server an echo at 192.0.2.7:7007 unless a test leaves it out.
    """

    def start(
        self,
        count: int,
        *,
        replyDelays: list[float] | None = None,
        server: bool = True,
        host: str = SERVER[0],
        ports: Iterable[int] = (),
        interval: float = 1.0,
    ) -> tuple[FakeNetwork, FakeReactor, list[str], Deferred[PingStats]]:
        """Ping C{b'hi'} (timeout 1 s) from C{ports}; replies take C{replyDelays}."""
        clock = Clock()
        delays = iter(replyDelays or [])

        def delay(to: Peer) -> float:
            return 0.001 if to == SERVER else next(delays, 0.001)

        network = FakeNetwork(clock, delay)
        if server:
            network.bind(Reflector(), *SERVER)
        reactor = FakeReactor(network, "127.0.0.1", ports)
        prober = DatagramProber(cast(IReactorUDP, reactor), host, SERVER[1])
        lines: list[str] = []
        d = Deferred.fromCoroutine(
            runPing(
                clock,
                prober,
                host="h",
                message=b"hi",
                count=count,
                interval=interval,
                timeout=1.0,
                output=lines.append,
            )
        )
        return network, reactor, lines, d

    def test_portPerProbe(self) -> None:
        """Each probe leaves from a new port; the host is resolved once."""
        network, reactor, lines, d = self.start(count=3)
        network.run()
        self.assertEqual(self.successResultOf(d).received, 3, lines)
        self.assertEqual([port.port for port in reactor.opened], [50000, 50001, 50002])
        self.assertEqual(
            [(port.sent, port.connected) for port in reactor.opened],
            [([(b"hi", SERVER)], SERVER)] * 3,
        )
        self.assertEqual(reactor.resolved, [SERVER[0]])
        self.assertEqual(reactor.interfaces, [""] * 3)

    def test_recentPortDeclined(self) -> None:
        """A port handed out again within PORT_REST of its probe is not used."""
        network, reactor, _, d = self.start(
            count=3, interval=0.2, ports=[50000, 50001, 50000, 50002]
        )
        network.run()
        self.assertEqual(self.successResultOf(d).received, 3)
        self.assertEqual(
            [(port.port, len(port.sent), port.closed) for port in reactor.opened],
            [(50000, 1, True), (50001, 1, True), (50000, 0, True), (50002, 1, True)],
        )

    def test_restedPortTaken(self) -> None:
        """Once PORT_REST has passed, a port may serve another probe."""
        network, reactor, _, d = self.start(
            count=2, interval=PORT_REST + 0.1, ports=[50000, 50000]
        )
        network.run()
        self.assertEqual(self.successResultOf(d).received, 2)
        self.assertEqual([len(port.sent) for port in reactor.opened], [1, 1])

    def test_declinedAtMostMax(self) -> None:
        """After MAX_DECLINED recent ports in a row, the next is taken anyway."""
        recent = list(range(50000, 50000 + MAX_DECLINED + 1))
        network, reactor, _, d = self.start(
            count=len(recent) + 1, interval=0.0, ports=recent * 2
        )
        network.run()
        self.assertEqual(self.successResultOf(d).received, len(recent) + 1)
        self.assertEqual(len(reactor.opened), 2 * len(recent))
        self.assertEqual(
            [port.port for port in reactor.opened if port.sent], [*recent, recent[-1]]
        )
        self.assertEqual({port.closed for port in reactor.opened}, {True})

    def test_ipv6(self) -> None:
        """An IPv6 address is not resolved; each probe's port binds C{::}."""
        network, reactor, _, d = self.start(count=2, server=False, host="::1")
        network.run()
        self.successResultOf(d)
        self.assertEqual((reactor.resolved, reactor.interfaces), ([], ["::", "::"]))

    def test_closedAfterEachProbe(self) -> None:
        """A probe's socket is closed once its reply is in, before the next opens."""
        network, reactor, _, d = self.start(count=2)
        (first,) = reactor.opened
        # The probe reaches the server at 1 ms, the reply the client at 2 ms.
        network.clock.advance(0.001)
        self.assertFalse(first.closed)
        network.clock.advance(0.001)
        self.assertTrue(first.closed)
        self.assertEqual(len(reactor.opened), 1)
        network.clock.advance(0.998)
        self.assertEqual([port.closed for port in reactor.opened], [True, False])
        network.run()
        self.assertEqual(self.successResultOf(d).received, 2)
        self.assertEqual([port.closed for port in reactor.opened], [True, True])
        self.assertEqual(set(network.ports), {SERVER})

    def test_lateReplyLost(self) -> None:
        """A reply after its probe timed out is lost, not taken for the next probe's."""
        # Probe 0 times out at 1 s and probe 1 leaves then; probe 0's reply
        # comes at 1.5 s, probe 1's only after the ping is over.
        network, reactor, lines, d = self.start(count=2, replyDelays=[1.5, 10.0])
        network.run(limit=3.0)
        stats = self.successResultOf(d)
        self.assertEqual(
            lines,
            [
                "no echo from h: seq=0 timeout after 1 s",
                "no echo from h: seq=1 timeout after 1 s",
            ],
        )
        self.assertEqual(stats.received, 0)
        self.assertEqual([port.received for port in reactor.opened], [0, 0])
        self.assertEqual([port.closed for port in reactor.opened], [True, True])

    def test_unreachable(self) -> None:
        """Port unreachable fails that probe only, and its socket is closed."""
        network, reactor, lines, d = self.start(count=2, server=False)
        network.clock.advance(0.001)
        self.assertTrue(reactor.opened[0].closed)
        network.run()
        self.successResultOf(d)
        self.assertEqual(
            lines,
            [
                "no echo from h: seq=0 port unreachable",
                "no echo from h: seq=1 port unreachable",
            ],
        )
        self.assertEqual([port.closed for port in reactor.opened], [True, True])

    def test_closedWhenStoppedEarly(self) -> None:
        """Closing the prober with a probe in flight closes that probe's socket."""
        network = FakeNetwork(Clock())
        reactor = FakeReactor(network, "127.0.0.1")
        prober = DatagramProber(cast(IReactorUDP, reactor), *SERVER)
        prober.close()
        self.successResultOf(prober.ready())
        d = prober.probe(b"hi")
        prober.close()
        prober.close()
        self.assertTrue(reactor.opened[0].closed)
        self.assertNoResult(d)
