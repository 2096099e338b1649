"""Unit tests for the bench's load modes: UDP, TLS, connect at a rate, stream.

No sockets and no real time: UDP travels through the fake network of
L{echotwist.test.test_udp_loops}, TCP and TLS connections are recorded
by a memory reactor.
"""

from __future__ import annotations

import argparse
import socket as socket_
from collections import Counter
from collections.abc import Callable
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IReactorUDP,
)
from twisted.internet.task import Clock
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.bench.arguments import UsageError, buildParser, checkOptions
from echotwist.bench.datagram import DatagramConnection, runDatagram
from echotwist.bench.load import (
    LoadConfig,
    LoadConnection,
    LoadFactory,
    LoadRun,
    SetupError,
    describeConnectFailure,
    resultsOf,
    runConnect,
)
from echotwist.bench.results import Results
from echotwist.bench.timer import CallLaterWaker
from echotwist.internals.timedudp import TimedPort
from echotwist.test.test_timedudp import FakeDatagramSocket
from echotwist.test.test_udp_loops import (
    FakeNetwork,
    FakeReactor,
    FakeUDPPort,
    Peer,
    Reflector,
)

SERVER: Peer = ("127.0.0.1", 7007)


class UdpReactor(FakeReactor):
    """UDP on a fake network, and timers on its clock, as a run needs them."""

    def callLater(
        self, delay: float, f: Callable[..., object], *args: object
    ) -> IDelayedCall:
        """Schedule on the network's clock."""
        return self.network.clock.callLater(delay, f, *args)


class Dropping(Reflector):
    """A reflector that drops the datagrams C{drop} picks (by arrival number)."""

    def __init__(self, drop: Callable[[int], bool]) -> None:
        self.drop = drop
        self.seen = 0

    def datagramReceived(self, datagram: bytes, addr: Peer) -> None:
        """Echo, unless this one is to be lost."""
        self.seen += 1
        if not self.drop(self.seen):
            super().datagramReceived(datagram, addr)


def udpConfig(**changes: object) -> LoadConfig:
    """A 2 s UDP run of 2 sockets, no warm-up, a 0.5 s loss timeout."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": SERVER[1],
        "connections": 2,
        "size": 16,
        "duration": 2.0,
        "warmup": 0.0,
        "connectTimeout": 0.5,
        "udp": True,
        "spin": 0.0,
    }
    values.update(changes)
    return LoadConfig(**values)  # type: ignore[arg-type]


def runUdp(
    server: Reflector | None, **changes: object
) -> tuple[Deferred[Results], FakeNetwork, UdpReactor]:
    """Start a UDP run against C{server} (or nothing) on a fake network."""
    network = FakeNetwork(Clock(), lambda _: 0.001)
    if server is not None:
        network.bind(server, *SERVER)
    reactor = UdpReactor(network, "127.0.0.1")
    clock = network.clock
    d = Deferred.fromCoroutine(
        runDatagram(
            cast(IReactorTime, reactor),
            clock.seconds,
            udpConfig(**changes),
            "127.0.0.1",
            makeWaker=CallLaterWaker,
        )
    )
    return d, network, reactor


class DatagramTests(SynchronousTestCase):
    """UDP load: every echo verified, losses counted, never an error."""

    def test_closedLoop(self) -> None:
        """Against a reflector every datagram comes back: none lost."""
        d, network, reactor = runUdp(Reflector())
        network.run(3)
        results = self.successResultOf(d)
        self.assertGreater(results.echoes, 1000)
        self.assertEqual((results.lost, results.errors), (0, Counter()))
        self.assertEqual(results.toJSON()["loss_percent"], 0.0)
        self.assertTrue(all(port.closed for port in reactor.opened))

    def test_lossCounted(self) -> None:
        """Dropped datagrams are lost after the timeout; the run goes on."""
        # The first datagram (the probe) is answered, then every tenth lost.
        d, network, _ = runUdp(Dropping(lambda n: n % 10 == 0))
        network.run(3)
        results = self.successResultOf(d)
        assert results.lost is not None
        self.assertGreater(results.lost, 0)
        # Every tenth is lost, less those still within their timeout at
        # the end, which are not known lost.
        self.assertTrue(7.0 <= results.lossPercent <= 10.0, results.lossPercent)
        self.assertEqual(results.errors, Counter())
        self.assertIn("lost: ", "\n".join(_lines(results)))

    def test_nothingThere(self) -> None:
        """No echo of the first datagram: one line, naming the target."""
        d, network, reactor = runUdp(None)
        network.run(3)
        error = self.failureResultOf(d, SetupError)
        self.assertEqual(
            str(error.value), "no echo from 127.0.0.1:7007 over UDP: port unreachable"
        )
        self.assertTrue(all(port.closed for port in reactor.opened))

    def connection(self) -> tuple[DatagramConnection, FakeUDPPort, LoadRun, Clock]:
        """One socket of a measuring run, against a server that answers nothing."""
        network = FakeNetwork(Clock())
        network.bind(Dropping(lambda _: True), *SERVER)
        reactor = UdpReactor(network, "127.0.0.1")
        run = LoadRun(
            cast(IReactorTime, reactor),
            network.clock.seconds,
            udpConfig(pipeline=2),
            "127.0.0.1",
            CallLaterWaker,
        )
        run.measuring = True
        connection = DatagramConnection(run, 0, 0)
        port = reactor.listenUDP(0, connection)
        return connection, port, run, network.clock

    def test_reorderedLateAndCorrupt(self) -> None:
        """Echoes may come in any order; a lost one's echo is late; others corrupt."""
        connection, port, run, clock = self.connection()
        connection.start()
        first, second = (datagram for datagram, _ in port.sent)
        clock.advance(0.001)
        connection.datagramReceived(second, SERVER)
        connection.datagramReceived(first, SERVER)
        self.assertEqual(list(run.recorder.samples), [1000, 1000])
        clock.advance(1)
        connection.sweep(clock.seconds(), 0.5)
        self.assertEqual(run.lost, 2)
        lost = port.sent[2][0]
        connection.datagramReceived(lost, SERVER)
        connection.datagramReceived(b"x" * 16, SERVER)
        self.assertEqual((run.late, run.errors), (1, Counter(corrupt=1)))

    def test_dueCheckedAfterTheEcho(self) -> None:
        """A send that fell due while an echo was handled is made after it.

        The echo was received (C{when}) before the send was due; the clock
        read after its work says it is due now.
        """
        network = FakeNetwork(Clock())
        network.bind(Dropping(lambda _: True), *SERVER)
        reactor = UdpReactor(network, "127.0.0.1")
        clock = network.clock
        run = LoadRun(
            cast(IReactorTime, reactor),
            clock.seconds,
            udpConfig(connections=1, rate=1024.0),
            "127.0.0.1",
            CallLaterWaker,
        )
        run.measuring = True
        connection = DatagramConnection(run, 0, 0)
        port = reactor.listenUDP(0, connection)
        run.slots[0] = connection
        run.begin()
        # The second send falls due with the first in flight: held.
        clock.advance(2**-10)
        first = port.sent[0][0]
        # The first echo, received 2**-12 s later, is handled after the
        # third send's time (2 * 2**-10), without a timer firing.
        clock.rightNow = 2 * 2**-10 + 2**-12
        connection.datagramReceivedAt(first, SERVER, 2**-10 + 2**-12)
        # The held second left; the third was reached (and held) at once.
        self.assertEqual(len(port.sent), 2)
        self.assertEqual(list(connection.backlog), [(2 * 2**-10, 2 * 2**-10 + 2**-12)])
        delays = run.delays
        assert delays is not None
        self.assertEqual(list(delays.reached.samples), [0])

    def test_partialReportCountsLoss(self) -> None:
        """A report of the run so far (after a signal) has its losses too."""
        _, _, run, _ = self.connection()
        run.lost = 3
        self.assertEqual(resultsOf(run, 1.0).lost, 3)

    def test_refused(self) -> None:
        """An ICMP port unreachable while measuring is an error."""
        connection, _, run, _ = self.connection()
        connection.connectionRefused()
        self.assertEqual(run.errors, Counter(refused=1))

    def test_droppedByTheReactor(self) -> None:
        """A socket the reactor drops (epoll's EPOLLERR) counts as refused, once."""
        connection, port, run, _ = self.connection()
        connection.port = cast(IListeningPort, port)
        run.slots[0] = connection
        connection.doStop()
        self.assertEqual((run.errors, run.slots[0]), (Counter(refused=1), None))
        connection.abort()
        self.assertEqual(run.errors, Counter(refused=1))

    def test_timedByThePort(self) -> None:
        """On a timed port, a round trip runs from the port's send to its receive."""
        portClock, runClock = Clock(), Clock()
        # The run's own clock is far off: only the port's times may count.
        runClock.advance(100)
        run = LoadRun(
            cast(IReactorTime, runClock),
            runClock.seconds,
            udpConfig(connections=1),
            "127.0.0.1",
            CallLaterWaker,
        )
        run.measuring = True
        connection = DatagramConnection(run, 0, 0)
        port = TimedPort(
            0,
            connection,
            "127.0.0.1",
            65535,
            cast(IReactorUDP, MemoryReactorClock()),
            clock=portClock.seconds,
        )
        socket = FakeDatagramSocket(portClock)
        port.socket = cast(socket_.socket, socket)
        connection.makeConnection(port)
        self.assertEqual(socket.connectedTo, SERVER)
        connection.start()
        # Sent at 0 (the send call takes 1 s); received when the receive
        # returns, at 2.
        socket.incoming = [socket.sent[0]]
        port.doRead()
        self.assertEqual(list(run.recorder.samples), [2_000_000])
        self.assertEqual(connection.inflight[0][2], 2.0)

    def test_silentServer(self) -> None:
        """A server that never answers: one line once the timeout is up."""
        d, network, _ = runUdp(Dropping(lambda _: True))
        network.run(3)
        error = self.failureResultOf(d, SetupError)
        self.assertEqual(
            str(error.value), "no echo from 127.0.0.1:7007 over UDP within 0.5 s"
        )


def _lines(results: Results) -> list[str]:
    from echotwist.bench.results import formatReport

    return formatReport(results)


def tcpRun(**changes: object) -> tuple[MemoryReactorClock, LoadRun]:
    """A run on a memory reactor, TCP or TLS as C{changes} say."""
    reactor = MemoryReactorClock()
    values: dict[str, object] = {
        "host": "localhost",
        "port": 7,
        "connections": 3,
        "size": 8,
        "duration": 1.0,
        "warmup": 0.0,
        "spin": 0.0,
    }
    values.update(changes)
    config = LoadConfig(**values)  # type: ignore[arg-type]
    return reactor, LoadRun(
        reactor, reactor.seconds, config, "127.0.0.1", CallLaterWaker
    )


class TLSTests(SynchronousTestCase):
    """--tls connects with TLS options and counts TLS failures as such."""

    def test_connectsOverTLS(self) -> None:
        """With C{tls}, connections go through connectSSL, verifying the host."""
        reactor, run = tcpRun(tls=True)
        run.connectSlot(0)
        self.assertEqual(reactor.tcpClients, [])
        (host, port, _, options, _, _) = reactor.sslClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 7))
        self.assertEqual(type(options).__name__, "ClientTLSOptions")
        _, insecure = tcpRun(tls=True, insecure=True)
        self.assertEqual(
            type(insecure.tlsOptions()).__name__, "OpenSSLCertificateOptions"
        )

    def test_connectedAfterHandshake(self) -> None:
        """Over TLS a slot is connected when the handshake is done, not before."""
        reactor, run = tcpRun(tls=True)
        connected = run.connectSlot(0)
        factory = reactor.sslClients[0][2]
        assert isinstance(factory, LoadFactory)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        reactor.advance(0)
        self.assertNoResult(connected)
        protocol.handshakeCompleted()
        self.successResultOf(connected)

    def test_handshakeFails(self) -> None:
        """A handshake that fails fails the connection, in plain words."""
        from OpenSSL.SSL import Error

        reactor, run = tcpRun(tls=True)
        connected = run.connectSlot(0)
        factory = reactor.sslClients[0][2]
        protocol = factory.buildProtocol(None)
        assert isinstance(protocol, LoadConnection)
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(Failure(Error([("SSL routines", "", "bad")])))
        failure = self.failureResultOf(connected)
        self.assertTrue(
            describeConnectFailure(failure, "localhost", 7).startswith(
                "TLS with localhost:7 failed: "
            )
        )

    def test_tlsErrorKind(self) -> None:
        """TLS failing on an established connection is counted as C{tls}."""
        from OpenSSL.SSL import Error

        _, run = tcpRun(tls=True)
        connection = LoadConnection(run, 0, 0)
        factory = LoadFactory(run, 0)
        factory.connected.callback(None)
        connection.factory = factory
        connection.makeConnection(StringTransport())
        connection.connectionLost(Failure(Error([])))
        self.assertEqual(run.errors, Counter(tls=1))


class ConnectRateTests(SynchronousTestCase):
    """Connect mode with --rate starts connections on the schedule."""

    def test_rateAndCap(self) -> None:
        """At 100/s, a connection every 10 ms; past C{connections}, they wait."""
        reactor, _ = tcpRun()
        config = LoadConfig(
            host="127.0.0.1",
            port=7,
            mode="connect",
            connections=3,
            size=8,
            duration=1.0,
            warmup=0.0,
            rate=100.0,
            spin=0.0,
        )
        d = Deferred.fromCoroutine(
            runConnect(
                reactor, reactor.seconds, config, "127.0.0.1", makeWaker=CallLaterWaker
            )
        )
        # The probe connection first: answer it.
        probe = reactor.tcpClients[0][2]
        connection = probe.buildProtocol(None)
        assert connection is not None
        transport = StringTransport()
        connection.makeConnection(transport)
        connection.dataReceived(transport.value())
        self.assertEqual(len(reactor.tcpClients), 2)
        reactor.advance(0.01)
        reactor.advance(0.01)
        self.assertEqual(len(reactor.tcpClients), 4)
        # None of the three has finished: the fourth due waits.
        reactor.advance(0.01)
        self.assertEqual(len(reactor.tcpClients), 4)
        self.assertNoResult(d)

    def test_heldTransactionTimedTwice(self) -> None:
        """One due while all slots are busy: reached on time, started late."""
        reactor, run = tcpRun(mode="connect", connections=1, rate=100.0)
        run.measuring = True
        run.connectScheduled(0.0)
        reactor.advance(0.01)
        run.connectScheduled(0.01)
        self.assertEqual(len(reactor.tcpClients), 1)
        # The first transaction ends 2 ms later: the held one starts then.
        reactor.advance(0.002)
        connection = reactor.tcpClients[0][2].buildProtocol(None)
        assert connection is not None
        transport = StringTransportWithDisconnection()
        transport.protocol = connection
        connection.makeConnection(transport)
        connection.dataReceived(transport.value())
        self.assertEqual(len(reactor.tcpClients), 2)
        delays = run.delays
        assert delays is not None
        self.assertEqual(
            [list(r.samples) for r in (delays.made, delays.reached, delays.held)],
            [[0], [0], [2000]],
        )


class ModeArgumentTests(SynchronousTestCase):
    """The modes' defaults and the options that do not go together."""

    def parse(self, *argv: str) -> argparse.Namespace:
        """The parsed command line."""
        return buildParser().parse_args([*argv, "h"])

    def test_defaults(self) -> None:
        """Stream mode has 16 KiB chunks, 64 in flight; UDP a 1 s loss timeout."""
        stream = self.parse("--mode", "stream")
        self.assertEqual(
            (stream.size, stream.pipeline, stream.timeout), (16384, 64, 5.0)
        )
        udp = self.parse("--udp")
        self.assertEqual((udp.size, udp.pipeline, udp.timeout), (512, 1, 1.0))
        given = self.parse("--mode", "stream", "-s", "100", "-P", "2")
        self.assertEqual((given.size, given.pipeline), (100, 2))

    def test_rejected(self) -> None:
        """--udp with another mode or --tls, --insecure alone, too large a datagram."""
        for argv, message in (
            (("--udp", "--mode", "connect"), "--udp applies to --mode pingpong only"),
            (("--udp", "--tls"), "--udp and --tls do not go together"),
            (("--insecure",), "--insecure needs --tls"),
            (("--udp", "-s", "65508"), "--size: at most 65507 with --udp"),
            (("--rate", "5", "--mode", "hold"),
             "--rate applies to --mode pingpong and connect only"),
        ):  # fmt: skip
            error = self.assertRaises(UsageError, checkOptions, self.parse(*argv))
            self.assertEqual(str(error), message)
        checkOptions(self.parse("--rate", "5", "--mode", "connect"))
