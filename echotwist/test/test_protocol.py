"""Unit tests for L{echotwist.protocol}: no sockets, no real time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransportWithDisconnection
from twisted.logger import capturedLogs
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from echotwist.protocol import Echo, EchoFactory, describeAddress
from echotwist.test.transports import FakeSocket, flush, server


@implementer(ITCPTransport)
class TCPStringTransport(StringTransportWithDisconnection):
    """A string transport that says it is TCP and records TCP_NODELAY."""

    noDelay = False
    keepAlive = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Record TCP_NODELAY."""
        self.noDelay = enabled

    def getTcpNoDelay(self) -> bool:
        """Report TCP_NODELAY."""
        return self.noDelay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """Record SO_KEEPALIVE."""
        self.keepAlive = enabled

    def getTcpKeepAlive(self) -> bool:
        """Report SO_KEEPALIVE."""
        return self.keepAlive

    def loseWriteConnection(self) -> None:
        """Half-close is not exercised here."""


def connect(
    clock: Clock | None = None,
) -> tuple[EchoFactory, Echo, TCPStringTransport]:
    """Connect a new L{Echo} to a L{StringTransportWithDisconnection}."""
    factory = EchoFactory(clock=clock or Clock())
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
    assert isinstance(protocol, Echo)
    transport = TCPStringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return factory, protocol, transport


class OrderRecordingTransport(TCPStringTransport):
    """A TCP string transport that records unregistering and closing, in order."""

    # Twisted's string transports are not annotated: their methods are
    # untyped calls to mypy.

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.calls: list[str] = []

    def unregisterProducer(self) -> None:
        """Record, then unregister."""
        self.calls.append("unregisterProducer")
        super().unregisterProducer()  # type: ignore[no-untyped-call]

    def loseConnection(self) -> None:
        """Record, then close."""
        self.calls.append("loseConnection")
        super().loseConnection()  # type: ignore[no-untyped-call]


def connectOverTCP(
    room: int | None = None,
) -> tuple[EchoFactory, Echo, tcp.Server, FakeSocket, MemoryReactor]:
    """Connect a new L{Echo} to Twisted's own C{tcp.Server} over a fake socket.

    The socket takes at most C{room} bytes until told otherwise, so the
    transport's real buffering and producer handling run; no system calls.
    """
    factory = EchoFactory(clock=Clock())
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert isinstance(protocol, Echo)
    socket = FakeSocket(room=room)
    transport, reactor = server(socket, protocol)
    protocol.makeConnection(transport)
    return factory, protocol, transport, socket, reactor


class EchoTests(SynchronousTestCase):
    """L{Echo} returns every byte it receives."""

    def test_echoesBytes(self) -> None:
        """Data received is written back unchanged."""
        _, protocol, transport = connect()
        protocol.dataReceived(b"hello")
        self.assertEqual(transport.value(), b"hello")

    def test_echoesBinaryInOrder(self) -> None:
        """Every byte value comes back, in the order received."""
        _, protocol, transport = connect()
        payload = bytes(range(256))
        for i in range(0, 256, 7):
            protocol.dataReceived(payload[i : i + 7])
        self.assertEqual(transport.value(), payload)

    def test_emptyWrite(self) -> None:
        """An empty read writes nothing and does not close."""
        _, protocol, transport = connect()
        protocol.dataReceived(b"")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.connected)

    def test_registersTransportAsProducer(self) -> None:
        """The transport is registered as its own streaming producer."""
        _, _, transport = connect()
        self.assertIs(transport.producer, transport)
        self.assertTrue(transport.streaming)

    def test_pausesReadingWhileEchoIsUnsent(self) -> None:
        """Flow control: a backed-up echo pauses the transport's reading until sent."""
        _, protocol, transport, socket, reactor = connectOverTCP(room=1000)
        self.assertIn(transport, reactor.getReaders())
        payload = b"x" * (transport.bufferSize + 1)
        protocol.dataReceived(payload)
        self.assertNotIn(transport, reactor.getReaders())
        # Partly sent: still more buffered than the client has taken.
        flush(transport)
        self.assertEqual(socket.sent, payload[:1000])
        self.assertNotIn(transport, reactor.getReaders())
        socket.room = None
        flush(transport)
        self.assertEqual(socket.sent, payload)
        self.assertIn(transport, reactor.getReaders())

    def test_halfClose(self) -> None:
        """When the client shuts its side, buffered data is flushed, then we close."""
        _, protocol, transport = connect()
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.dataReceived(b"last words")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"last words")
        self.assertIsNone(transport.producer)
        self.assertFalse(transport.connected)

    def test_unregistersBeforeClosing(self) -> None:
        """On half-close either way, the producer is unregistered before closing."""
        for lose in (Echo.readConnectionLost, Echo.writeConnectionLost):
            protocol = EchoFactory(clock=Clock()).buildProtocol(None)
            assert isinstance(protocol, Echo)
            transport = OrderRecordingTransport()
            transport.protocol = protocol
            protocol.makeConnection(transport)
            lose(protocol)
            self.assertEqual(
                transport.calls, ["unregisterProducer", "loseConnection"], lose
            )

    def test_halfCloseWhilePausedCloses(self) -> None:
        """Half-closed while reading is paused: the echo goes out, then the close."""
        # A streaming producer still registered when the buffer empties is
        # resumed instead of the connection being closed: Twisted's TCP
        # transport would then hold the connection open for ever.
        _, protocol, transport, socket, reactor = connectOverTCP()
        payload = b"y" * (transport.bufferSize + 1)
        protocol.dataReceived(payload)
        self.assertNotIn(transport, reactor.getReaders())
        protocol.readConnectionLost()
        self.assertIsInstance(transport.doWrite(), ConnectionDone)
        self.assertEqual(socket.sent, payload)
        self.assertNotIn(transport, reactor.getReaders())

    def test_writeConnectionLost(self) -> None:
        """A peer that can no longer receive gets the connection closed."""
        _, protocol, transport = connect()
        protocol.writeConnectionLost()
        self.assertFalse(transport.connected)

    def test_tcpNoDelay(self) -> None:
        """Accepted TCP connections get TCP_NODELAY."""
        _, _, transport = connect()
        self.assertTrue(transport.getTcpNoDelay())

    def test_logsClientAndClose(self) -> None:
        """The seed's 'Handling client' line and a closing line with bytes and time."""
        clock = Clock()
        with capturedLogs() as events:
            _, protocol, transport = connect(clock)
            protocol.dataReceived(b"12345")
            clock.advance(2.5)
            transport.loseConnection()
        formats = [e.get("log_format") for e in events]
        self.assertIn("Handling client {host}/{port}", formats)
        closing = [e for e in events if e.get("bytes") is not None]
        self.assertEqual(len(closing), 1)
        self.assertEqual(closing[0]["bytes"], 5)
        self.assertEqual(closing[0]["duration"], 2.5)
        self.assertEqual(closing[0]["host"], "192.0.2.7")
        self.assertEqual(closing[0]["port"], "40000")
        self.assertEqual(closing[0]["client"], "192.0.2.7/40000")
        self.assertEqual(closing[0]["reason"], "done")

    def test_statistics(self) -> None:
        """Connections and bytes are counted in the factory's statistics."""
        clock = Clock()
        factory, protocol, transport = connect(clock)
        self.assertEqual(factory.stats.connectionsActive, 1)
        protocol.dataReceived(b"abc")
        clock.advance(0.5)
        transport.loseConnection()
        self.assertEqual(factory.stats.connectionsActive, 0)
        self.assertEqual(factory.stats.connectionsTotal, 1)
        self.assertEqual(factory.stats.bytesEchoed["tcp"], 3)
        self.assertEqual(factory.stats.durations.count, 1)

    def test_liveAndClosedBytes(self) -> None:
        """Bytes of open and of closed connections add up in bytesEchoedNow."""
        clock = Clock()
        factory = EchoFactory(clock=clock)
        closed = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 1))
        still = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 2))
        assert closed is not None
        assert still is not None
        closedTransport = TCPStringTransport()
        closedTransport.protocol = closed
        closed.makeConnection(closedTransport)
        still.makeConnection(TCPStringTransport())
        closed.dataReceived(b"abc")
        still.dataReceived(b"de")
        closedTransport.loseConnection()
        self.assertEqual(factory.stats.bytesEchoed, {"tcp": 3})
        self.assertEqual(factory.stats.bytesEchoedNow(), {"tcp": 5})

    def test_unixKind(self) -> None:
        """Bytes over a non-TCP stream transport are counted as unix."""
        factory = EchoFactory(clock=Clock())
        protocol = factory.buildProtocol(UNIXAddress(None))
        assert protocol is not None
        protocol.makeConnection(StringTransportWithDisconnection())
        protocol.dataReceived(b"xy")
        self.assertEqual(factory.stats.bytesEchoedNow(), {"unix": 2})

    def test_halfCloseableInterface(self) -> None:
        """L{Echo} fully provides L{IHalfCloseableProtocol}."""
        self.assertTrue(verifyObject(IHalfCloseableProtocol, Echo()))


class DescribeAddressTests(SynchronousTestCase):
    """L{describeAddress} names peers for the log."""

    def test_ipv4(self) -> None:
        """An IP address gives its host and port."""
        self.assertEqual(
            describeAddress(IPv4Address("TCP", "127.0.0.1", 7)), ("127.0.0.1", "7")
        )

    def test_unix(self) -> None:
        """A UNIX address gives its path, or 'unix' when unnamed."""
        self.assertEqual(describeAddress(UNIXAddress(b"/tmp/s")), ("/tmp/s", ""))
        self.assertEqual(describeAddress(UNIXAddress(None)), ("unix", ""))


class Collector(Protocol):
    """A client that sends chunks and collects what comes back."""

    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        """Keep the echo."""
        self.received += data


class LoopbackTests(SynchronousTestCase):
    """L{Echo} through an in-memory client/server pump."""

    def pumpedPair(self) -> tuple[Collector, iosim.IOPump]:
        """Connect a L{Collector} to an L{Echo} through an L{iosim.IOPump}."""
        factory = EchoFactory(clock=Clock())
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        client = Collector()
        _, _, pump = iosim.connectedServerAndClient(
            lambda: server, lambda: client, greet=True
        )
        return client, pump

    @given(st.binary(max_size=4096), st.lists(st.integers(1, 512), max_size=40))
    def test_anyChunkingEchoesUnchanged(self, data: bytes, cuts: list[int]) -> None:
        """Property: any bytes, cut into any chunks, come back unchanged."""
        client, pump = self.pumpedPair()
        assert client.transport is not None
        position = 0
        for size in cuts:
            client.transport.write(data[position : position + size])
            position += size
            pump.pump()
        client.transport.write(data[position:])
        pump.flush()
        self.assertEqual(bytes(client.received), data)

    def test_megabytesInOneBurst(self) -> None:
        """Several megabytes written at once come back whole."""
        client, pump = self.pumpedPair()
        assert client.transport is not None
        payload = bytes(range(256)) * (4 * 4096)
        client.transport.write(payload)
        pump.flush()
        self.assertEqual(bytes(client.received), payload)


class FootprintTests(SynchronousTestCase):
    """An idle L{Echo} costs little memory."""

    def test_noInstanceDictionary(self) -> None:
        """Every attribute an L{Echo} sets lives in a slot, not in a dict."""
        _, protocol, transport = connect()
        protocol.dataReceived(b"abc")
        protocol.connectionLost()
        self.assertEqual(vars(protocol), {})
        self.assertIs(protocol.transport, transport)
