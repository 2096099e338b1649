"""Tests for L{echotwist.internals.fastpath}, and the Twisted internals it relies on.

The transports are Twisted's real C{tcp.Server} and C{unix.Server} over a
fake socket (no system calls) and a L{MemoryReactor}, so the tests exercise
Twisted's own buffering code, and fail if an upgrade changes what the fast
path assumes about it.
"""

from __future__ import annotations

import errno
import os
import socket as socket_
from collections.abc import Callable
from typing import Any, cast

from twisted.application.reactors import IReactorInstaller
from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.plugin import getPlugins
from twisted.python import context
from twisted.python.failure import Failure
from twisted.python.log import ILogContext
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist.internals.fastpath import (
    FastEPollReactor,
    LeanServer,
    canSendNow,
    sendNow,
    useLeanServer,
    writerFor,
    writeThrough,
)
from echotwist.protocol import Echo, EchoFactory


class FakeSocket:
    """A socket that records what is sent and takes at most C{room} bytes."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.sent = b""
        self.sends = 0
        self.error: OSError | None = None
        self.shutdowns: list[int] = []

    def setblocking(self, flag: bool) -> None:
        """Accept the transport's non-blocking mode."""

    def fileno(self) -> int:
        """A plausible descriptor number; nothing uses it."""
        return 42

    def setsockopt(self, *arguments: object) -> None:
        """Accept TCP_NODELAY."""

    def send(self, data: bytes | memoryview) -> int:
        """Take as much of C{data} as there is room for, or fail."""
        self.sends += 1
        if self.error is not None:
            raise self.error
        chunk = bytes(data) if self.room is None else bytes(data[: self.room])
        if self.room is not None:
            self.room -= len(chunk)
        if not chunk and data:
            raise BlockingIOError(errno.EAGAIN, "full")
        self.sent += chunk
        return len(chunk)

    def shutdown(self, how: int) -> None:
        """Record a half-close."""
        self.shutdowns.append(how)

    def close(self) -> None:
        """Nothing to release."""


def server(
    socket: FakeSocket,
    protocol: IProtocol | None = None,
    kind: type[tcp.Server] = tcp.Server,
) -> tuple[tcp.Server, MemoryReactor]:
    """A connected C{tcp.Server} (or C{kind}) over C{socket}."""
    reactor = MemoryReactorClock()
    # A port that never listens: Server only uses it for its repr.
    transport = kind(
        cast(socket_.socket, socket),
        protocol or Protocol(),
        ("127.0.0.1", 40000),
        tcp.Port(0, Factory.forProtocol(Protocol), reactor=reactor),
        1,
        reactor,
    )
    return transport, reactor


def client(socket: FakeSocket, protocol: Protocol | None = None) -> tcp.Client:
    """A connected C{tcp.Client} over C{socket}, as the load generator has.

    C{tcp.Client} makes its own socket; C{createInternetSocket} is swapped
    for one returning C{socket} while it is built, so no socket is opened.
    The memory reactor never runs the connect attempt it schedules.
    """
    original = tcp.Client.createInternetSocket
    tcp.Client.createInternetSocket = (  # type: ignore[method-assign]
        # mypy: a method replaced on the class for the constructor's call.
        lambda self: cast(socket_.socket, socket)
    )
    try:
        transport = tcp.Client(
            "127.0.0.1", 7, None, cast(tcp.Connector, None), MemoryReactorClock()
        )
    finally:
        tcp.Client.createInternetSocket = original  # type: ignore[method-assign]
    # What BaseClient._connectDone sets once the connect succeeds.
    transport.protocol = protocol or Protocol()
    transport.connected = 1
    return transport


def flush(transport: tcp.Connection) -> None:
    """Let the transport write, as the reactor would when it is writable."""
    result = transport.doWrite()
    assert result is None, result


class TwistedInternalsTests(SynchronousTestCase):
    """What L{sendNow} assumes about Twisted's transports still holds."""

    def test_freshTransportHasEmptyBuffers(self) -> None:
        """A new connection has nothing buffered and is not disconnecting."""
        transport, reactor = server(FakeSocket())
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(transport._tempDataLen, 0)
        self.assertTrue(transport.connected)
        self.assertFalse(transport.disconnecting)
        self.assertFalse(transport._writeDisconnecting)
        self.assertFalse(transport.TLS)
        self.assertNotIn(transport, reactor.getWriters())

    def test_writeBuffersUntilWritable(self) -> None:
        """C{write} sends nothing itself: it buffers and waits for writability."""
        socket = FakeSocket()
        transport, reactor = server(socket)
        transport.write(b"abc")
        self.assertEqual(socket.sends, 0)
        self.assertEqual(transport._tempDataLen, 3)
        self.assertIn(transport, reactor.getWriters())

    def test_buffersEmptyAgainOnceSent(self) -> None:
        """Once everything is sent, both buffers are empty and writing stops."""
        socket = FakeSocket()
        transport, reactor = server(socket)
        transport.write(b"abc")
        flush(transport)
        self.assertEqual(socket.sent, b"abc")
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(transport._tempDataLen, 0)
        self.assertNotIn(transport, reactor.getWriters())

    def test_partialSendLeavesBufferNonEmpty(self) -> None:
        """While part of a write is unsent, the buffers are not empty."""
        transport, _ = server(FakeSocket(room=2))
        transport.write(b"abcdef")
        flush(transport)
        self.assertTrue(transport.dataBuffer or transport._tempDataLen)

    def test_loseConnectionMarksDisconnecting(self) -> None:
        """C{loseConnection} sets the C{disconnecting} flag checked."""
        transport, _ = server(FakeSocket())
        transport.loseConnection()
        self.assertTrue(transport.disconnecting)

    def test_loseWriteConnectionMarksWriteDisconnecting(self) -> None:
        """C{loseWriteConnection} sets the C{_writeDisconnecting} flag checked."""
        transport, _ = server(FakeSocket())
        transport.loseWriteConnection()
        self.assertTrue(transport._writeDisconnecting)

    def test_abortConnectionMarksAborting(self) -> None:
        """C{abortConnection} sets C{_aborting} but leaves C{connected} set."""
        transport, _ = server(FakeSocket())
        transport.abortConnection()
        self.assertTrue(transport._aborting)
        self.assertTrue(transport.connected)

    def test_tcpClientSharesServerWritePath(self) -> None:
        """C{tcp.Client} buffers with the very code C{tcp.Server} uses."""
        self.assertTrue(issubclass(tcp.Client, tcp.Connection))
        self.assertIs(tcp.Client.write, tcp.Server.write)
        self.assertIs(tcp.Client.doWrite, tcp.Server.doWrite)
        self.assertIs(tcp.Client.writeSomeData, tcp.Server.writeSomeData)

    def test_freshClientHasEmptyBuffers(self) -> None:
        """A new client connection has nothing buffered and is not closing."""
        transport = client(FakeSocket())
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(transport._tempDataLen, 0)
        self.assertFalse(transport.disconnecting)
        self.assertFalse(transport._writeDisconnecting)
        self.assertFalse(transport._aborting)
        self.assertFalse(transport.TLS)

    def test_unixServerIsATCPServer(self) -> None:
        """C{unix.Server} shares C{tcp.Server}'s buffering code."""
        self.assertTrue(issubclass(unix.Server, tcp.Server))
        self.assertIs(unix.Server.write, tcp.Server.write)
        self.assertIs(unix.Server.doWrite, tcp.Server.doWrite)


class SendNowTests(SynchronousTestCase):
    """L{sendNow} sends at once only when nothing is buffered."""

    def test_sendsAtOnceWhenEmpty(self) -> None:
        """With empty buffers the bytes go straight out; no writer is added."""
        socket = FakeSocket()
        transport, reactor = server(socket)
        sendNow(transport, b"hello")
        self.assertEqual(socket.sent, b"hello")
        self.assertEqual(socket.sends, 1)
        self.assertNotIn(transport, reactor.getWriters())

    def test_unixServer(self) -> None:
        """A UNIX server transport gets the fast path too."""
        socket = FakeSocket()
        transport, _ = server(socket, kind=unix.Server)
        sendNow(transport, b"hello")
        self.assertEqual(socket.sent, b"hello")

    def test_tcpClient(self) -> None:
        """A TCP client transport (the load generator's) gets the fast path."""
        socket = FakeSocket()
        transport = client(socket)
        sendNow(transport, b"hello")
        self.assertEqual((socket.sent, transport._tempDataLen), (b"hello", 0))

    def test_tcpClientPartialSendBuffersTheRest(self) -> None:
        """On a client too, what the kernel does not take is buffered in order."""
        socket = FakeSocket(room=2)
        transport = client(socket)
        sendNow(transport, b"hello")
        sendNow(transport, b"!")
        self.assertEqual(socket.sends, 1, "sent while bytes were buffered")
        socket.room = None
        flush(transport)
        self.assertEqual(socket.sent, b"hello!")

    def test_partialSendBuffersTheRest(self) -> None:
        """What the kernel does not take is buffered, and sent later in order."""
        socket = FakeSocket(room=3)
        transport, reactor = server(socket)
        sendNow(transport, b"abcdef")
        self.assertEqual(socket.sent, b"abc")
        self.assertIn(transport, reactor.getWriters())
        sendNow(transport, b"ghi")
        self.assertEqual(socket.sends, 1, "sent while bytes were buffered")
        socket.room = None
        flush(transport)
        self.assertEqual(socket.sent, b"abcdefghi")
        self.assertNotIn(transport, reactor.getWriters())
        sendNow(transport, b"jk")
        self.assertEqual(socket.sent, b"abcdefghijk")

    def test_wouldBlockBuffersAll(self) -> None:
        """A full socket buffer leaves every byte to the transport's buffer."""
        socket = FakeSocket(room=0)
        transport, reactor = server(socket)
        sendNow(transport, b"abc")
        self.assertEqual(transport._tempDataLen, 3)
        self.assertIn(transport, reactor.getWriters())

    def test_errorLeftToTwisted(self) -> None:
        """A send error hands the data to C{write}, whose next attempt reports it."""
        socket = FakeSocket()
        socket.error = ConnectionResetError(errno.ECONNRESET, "reset")
        transport, _ = server(socket)
        sendNow(transport, b"abc")
        self.assertEqual(transport._tempDataLen, 3)
        self.assertIsInstance(transport.doWrite(), Exception)

    def test_notWhileDisconnecting(self) -> None:
        """After C{loseConnection} writes take Twisted's path."""
        socket = FakeSocket()
        transport, _ = server(socket)
        transport.loseConnection()
        self.assertFalse(canSendNow(transport))
        sendNow(transport, b"abc")
        self.assertEqual(socket.sends, 0)

    def test_notAfterHalfClose(self) -> None:
        """After C{loseWriteConnection} writes take Twisted's path."""
        socket = FakeSocket()
        transport, _ = server(socket)
        transport.loseWriteConnection()
        self.assertFalse(canSendNow(transport))

    def test_notAfterAbort(self) -> None:
        """After C{abortConnection} nothing more is sent."""
        socket = FakeSocket()
        transport, _ = server(socket)
        transport.abortConnection()
        self.assertFalse(canSendNow(transport))
        sendNow(transport, b"abc")
        self.assertEqual(socket.sends, 0)

    def test_notWithTLS(self) -> None:
        """A transport that started TLS is left to Twisted."""
        transport, _ = server(FakeSocket())
        transport.TLS = True
        self.assertFalse(canSendNow(transport))

    def test_otherTransportsUseWrite(self) -> None:
        """A transport of any other class gets a plain C{write}."""
        transport = StringTransport()
        self.assertFalse(canSendNow(transport))
        sendNow(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")

    def test_leanServer(self) -> None:
        """A L{LeanServer} gets the fast path: its write path is Twisted's."""
        self.assertIs(LeanServer.write, tcp.Server.write)
        self.assertIs(LeanServer.doWrite, tcp.Server.doWrite)
        _, (transport, socket) = twins()
        self.assertTrue(canSendNow(transport))
        sendNow(transport, b"hello")
        self.assertEqual(socket.sent, b"hello")
        self.assertNotIn(transport, transport.reactor.getWriters())

    def test_subclassesUseWrite(self) -> None:
        """A subclass may override C{write}, so it is not bypassed."""

        class Custom(tcp.Server):
            pass

        transport, _ = server(FakeSocket(), kind=Custom)
        self.assertFalse(canSendNow(transport))


class WriterForTests(SynchronousTestCase):
    """L{writerFor} picks, once per connection, how to send on a transport."""

    def test_knownTransports(self) -> None:
        """Twisted's TCP transports get L{sendNow} on the transport."""
        transport, _ = server(FakeSocket())
        self.assertEqual(writerFor(transport), (sendNow, transport))

    def test_otherTransports(self) -> None:
        """Any other transport gets its class's C{write}, which writes."""
        transport = StringTransport()
        write, target = writerFor(transport)
        self.assertEqual(write, StringTransport.write)
        write(target, b"abc")
        self.assertEqual(transport.value(), b"abc")

    def test_instanceWrite(self) -> None:
        """A transport with a C{write} of its own is written through it."""
        transport = StringTransport()
        written: list[bytes] = []
        transport.write = written.append  # type: ignore[method-assign]
        write, target = writerFor(transport)
        self.assertEqual((write, target), (writeThrough, transport))
        write(target, b"abc")
        self.assertEqual(written, [b"abc"])
        self.assertEqual(transport.value(), b"")

    def test_directWriter(self) -> None:
        """A transport offering C{directWriter()} is written as it says."""
        written: list[bytes] = []

        class Offering(StringTransport):
            def directWriter(self) -> tuple[Callable[[Any, bytes], None], object]:
                return list.append, written

        transport = Offering()
        write, target = writerFor(transport)
        write(target, b"abc")
        self.assertEqual(written, [b"abc"])
        self.assertEqual(transport.value(), b"")

    def test_wrapperForwardingAttributes(self) -> None:
        """A wrapper forwarding attributes to its transport is not bypassed.

        TLS wraps a TCP transport and forwards unknown attributes to it;
        the inner transport's direct writer would send in clear.
        """
        written: list[bytes] = []

        class Inner(StringTransport):
            def directWriter(self) -> tuple[Callable[[Any, bytes], None], object]:
                return list.append, written

        class Wrapper(StringTransport):
            def __init__(self, inner: Inner) -> None:
                StringTransport.__init__(self)
                self.inner = inner

            def __getattr__(self, name: str) -> object:
                return getattr(self.inner, name)

        wrapper = Wrapper(Inner())
        write, target = writerFor(wrapper)
        write(target, b"secret")
        self.assertEqual(written, [])
        self.assertEqual(wrapper.value(), b"secret")

    def test_echoUsesWriter(self) -> None:
        """An L{Echo} over a transport with its own C{write} echoes through it."""
        transport = StringTransport()
        written: list[bytes] = []
        transport.write = written.append  # type: ignore[method-assign]
        protocol = EchoFactory(Clock()).buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 1)
        )
        assert isinstance(protocol, Echo)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"hello")
        self.assertEqual(written, [b"hello"])


@implementer(IPushProducer)
class RecordingProducer:
    """A push producer that records pause and resume calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        """Record a pause."""
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        """Record a resume."""
        self.calls.append("resume")

    def stopProducing(self) -> None:
        """Record a stop."""
        self.calls.append("stop")


class FlowControlTests(SynchronousTestCase):
    """Flow control and half-close survive the fast path."""

    def test_producerPausedWhenRestOverflows(self) -> None:
        """A remainder larger than the buffer size pauses the producer."""
        socket = FakeSocket(room=10)
        transport, _ = server(socket)
        producer = RecordingProducer()
        transport.registerProducer(producer, True)
        sendNow(transport, b"x" * (transport.bufferSize + 100))
        self.assertEqual(producer.calls, ["pause"])
        socket.room = None
        flush(transport)
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(len(socket.sent), transport.bufferSize + 100)

    def test_echoOverRealTransport(self) -> None:
        """L{Echo} on a C{tcp.Server} sends at once and pauses when blocked."""
        self.echoOverRealTransport(tcp.Server)

    def test_echoOverLeanServer(self) -> None:
        """L{Echo} on a L{LeanServer} sends at once and pauses when blocked."""
        self.echoOverRealTransport(LeanServer)

    def echoOverRealTransport(self, kind: type[tcp.Server]) -> None:
        """Echo over a transport of C{kind}: fast path, then flow control."""
        socket = FakeSocket()
        factory = EchoFactory(clock=Clock())
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert isinstance(protocol, Echo)
        transport, reactor = server(socket, protocol, kind)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"ping")
        self.assertEqual(socket.sent, b"ping")
        self.assertNotIn(transport, reactor.getWriters())
        # A client that stops reading: the echo stops reading it too.
        socket.room = 0
        protocol.dataReceived(b"y" * (transport.bufferSize + 1))
        self.assertTrue(transport.producerPaused)
        self.assertNotIn(transport, reactor.getReaders())
        socket.room = None
        flush(transport)
        self.assertFalse(transport.producerPaused)
        self.assertIn(transport, reactor.getReaders())
        self.assertEqual(len(socket.sent), 4 + transport.bufferSize + 1)

    def test_echoHalfCloseFlushesThenCloses(self) -> None:
        """After the client's half-close, buffered bytes go out, then the close."""
        self.echoHalfCloseFlushesThenCloses(tcp.Server)

    def test_echoHalfCloseOnLeanServer(self) -> None:
        """On a L{LeanServer} too, a half-close flushes the echo, then closes."""
        self.echoHalfCloseFlushesThenCloses(LeanServer)

    def echoHalfCloseFlushesThenCloses(self, kind: type[tcp.Server]) -> None:
        """Half-close over a transport of C{kind}: flush, then close."""
        socket = FakeSocket(room=2)
        factory = EchoFactory(clock=Clock())
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert isinstance(protocol, Echo)
        transport, _ = server(socket, protocol, kind)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"abcdef")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        socket.room = None
        result = transport.doWrite()
        self.assertEqual(socket.sent, b"abcdef")
        # Everything sent: doWrite reports the connection done.
        self.assertIsNotNone(result)
        transport.connectionLost(Failure(cast(Exception, result)))
        self.assertFalse(transport.connected)
        self.assertEqual(transport.fileno(), -1)
        self.assertNotIn(protocol, factory.connections)


class PipeReader:
    """A read descriptor on a pipe: records what it reads and the context."""

    def __init__(self, failing: bool = False) -> None:
        self.readEnd, self.writeEnd = os.pipe()
        self.failing = failing
        self.read = b""
        self.systems: list[object] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        """The pipe's reading end."""
        return self.readEnd

    def logPrefix(self) -> str:
        """What the epoll reactor puts in the logging context."""
        return "pipe-reader"

    def doRead(self) -> None:
        """Read what is there, noting the logging context of the call."""
        self.systems.append(context.get(ILogContext, {}).get("system"))
        if self.failing:
            raise ZeroDivisionError("a bug in a protocol")
        self.read += os.read(self.readEnd, 100)

    def connectionLost(self, reason: Failure) -> None:
        """Record the disconnection."""
        self.lost.append(reason)

    def close(self) -> None:
        """Close both ends."""
        os.close(self.readEnd)
        os.close(self.writeEnd)


def pollOnce(
    test: SynchronousTestCase, reactor: EPollReactor, reader: PipeReader
) -> None:
    """Make C{reader} readable and let C{reactor} dispatch once."""
    test.addCleanup(reader.close)
    reactor.addReader(reader)
    # Cleanups run last first: unregistered before its pipe closes.
    test.addCleanup(reactor.removeReader, reader)
    os.write(reader.writeEnd, b"x")
    reactor.doPoll(0)


def newReactor(test: SynchronousTestCase, kind: type[EPollReactor]) -> EPollReactor:
    """A reactor of C{kind} (not installed), closed at cleanup."""
    reactor = kind()

    def close() -> None:
        reactor.removeAll()
        reactor._poller.close()

    test.addCleanup(close)
    return reactor


class FastEPollReactorTests(SynchronousTestCase):
    """L{FastEPollReactor} dispatches as the epoll reactor, minus the context."""

    def test_internals(self) -> None:
        """The epoll reactor still has the poller, map and dispatcher used."""
        reactor = newReactor(self, EPollReactor)
        self.assertTrue(hasattr(reactor._poller, "poll"))
        self.assertIsInstance(reactor._selectables, dict)
        self.assertTrue(callable(reactor._doReadOrWrite))

    def test_upstreamBuildsContextPerEvent(self) -> None:
        """The epoll reactor runs each event in a context: what is saved."""
        reactor = newReactor(self, EPollReactor)
        reader = PipeReader()
        pollOnce(self, reactor, reader)
        self.assertEqual(reader.systems, ["pipe-reader"])

    def test_dispatchesWithoutContext(self) -> None:
        """A ready descriptor is read, with no per-event logging context."""
        reactor = newReactor(self, FastEPollReactor)
        reader = PipeReader()
        pollOnce(self, reactor, reader)
        self.assertEqual(reader.read, b"x")
        self.assertEqual(len(reader.systems), 1)
        self.assertNotEqual(reader.systems[0], "pipe-reader")

    def test_errorDisconnectsAndIsLogged(self) -> None:
        """A handler's exception is logged and disconnects its descriptor."""
        reactor = newReactor(self, FastEPollReactor)
        reader = PipeReader(failing=True)
        pollOnce(self, reactor, reader)
        self.assertEqual(len(reader.lost), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertNotIn(reader, reactor.getReaders())

    def test_reactorPlugin(self) -> None:
        """C{twistd -r fastepoll} finds the reactor plugin."""
        names = [r.shortName for r in getPlugins(IReactorInstaller)]
        self.assertIn("fastepoll", names)


class FakeListeningSocket:
    """A listening socket with one client waiting, then none (EAGAIN)."""

    def __init__(self, client: FakeSocket) -> None:
        self.client: FakeSocket | None = client

    def accept(self) -> tuple[FakeSocket, tuple[str, int]]:
        """Return the waiting client once."""
        if self.client is None:
            raise BlockingIOError(errno.EAGAIN, "no client")
        client, self.client = self.client, None
        return client, ("127.0.0.1", 40000)


def listeningPort(
    factory: Factory[Any], reactor: MemoryReactorClock, client: FakeSocket
) -> tcp.Port:
    """A C{tcp.Port} 'listening' on a fake socket with C{client} waiting."""
    port = tcp.Port(0, factory, reactor=reactor)
    port.socket = cast(socket_.socket, FakeListeningSocket(client))
    port.connected = True
    port.numberAccepts = 100
    port._realPortNumber = 5000
    return port


def twins(
    protocol: IProtocol | None = None,
) -> tuple[tuple[tcp.Server, FakeSocket], tuple[LeanServer, FakeSocket]]:
    """A C{tcp.Server} and a L{LeanServer} built from the same arguments."""
    made = []
    for kind in (tcp.Server, LeanServer):
        socket = FakeSocket()
        port = listeningPort(
            Factory.forProtocol(Protocol), MemoryReactorClock(), socket
        )
        transport = kind(
            cast(socket_.socket, socket),
            protocol or Protocol(),
            ("127.0.0.1", 40000),
            port,
            7,
            MemoryReactorClock(),
        )
        made.append((transport, socket))
    (plain, plainSocket), (lean, leanSocket) = made
    assert isinstance(lean, LeanServer)
    return (plain, plainSocket), (lean, leanSocket)


class LeanServerInternalsTests(SynchronousTestCase):
    """What L{LeanServer} assumes about C{tcp.Server} and C{tcp.Port} holds."""

    def test_serverStoresDerivedValues(self) -> None:
        """C{tcp.Server} stores C{fileno}, C{logstr} and C{repstr} per connection."""
        (transport, socket), _ = twins()
        stored = vars(transport)
        self.assertEqual(stored["fileno"], socket.fileno)
        self.assertEqual(stored["logstr"], "Protocol,7,127.0.0.1")
        self.assertEqual(stored["repstr"], "<Protocol #7 on 5000>")
        self.assertEqual(transport.logPrefix(), "Protocol,7,127.0.0.1")
        self.assertEqual(repr(transport), "<Protocol #7 on 5000>")

    def test_derivedFrom(self) -> None:
        """The values they are derived from stay stored, and the helper exists."""
        (transport, socket), _ = twins()
        self.assertIs(transport.socket, socket)
        self.assertEqual(
            (transport.sessionno, transport.hostname, transport.server._realPortNumber),
            (7, "127.0.0.1", 5000),
        )
        self.assertEqual(transport._getLogPrefix(Echo()), "Echo")

    def test_connectionLostDeletesFileno(self) -> None:
        """C{connectionLost} deletes C{fileno}, C{socket} and C{protocol}."""
        (transport, _), _ = twins()
        transport.connectionLost(Failure(ConnectionDone()))
        for name in ("fileno", "socket", "protocol"):
            self.assertNotIn(name, vars(transport))
        self.assertEqual(transport.fileno(), -1)

    def test_portBuildsWithTransportAttribute(self) -> None:
        """A C{tcp.Port} builds each connection with its C{transport} class."""
        self.assertIs(tcp.Port.transport, tcp.Server)
        reactor = MemoryReactorClock()
        factory = EchoFactory(clock=reactor)
        port = listeningPort(factory, reactor, FakeSocket())
        port.transport = LeanServer
        port.doRead()
        (protocol,) = factory.connections
        self.assertIs(type(protocol.transport), LeanServer)


class LeanServerTests(SynchronousTestCase):
    """A L{LeanServer} keeps less per connection and answers the same."""

    def test_keepsLess(self) -> None:
        """It stores what C{tcp.Server} stores, less the three derived values."""
        (plain, _), (lean, _) = twins()
        self.assertEqual(
            set(vars(lean)),
            set(vars(plain)) - {"fileno", "logstr", "repstr"} | {"protocolPrefix"},
        )
        # The protocol's part of the log prefix: one string for them all.
        self.assertIs(lean.protocolPrefix, Protocol.__name__)

    def test_sameAnswers(self) -> None:
        """C{fileno()}, C{logPrefix()} and C{repr()} answer as C{tcp.Server}'s."""
        (plain, _), (lean, _) = twins(Echo())
        self.assertEqual(lean.fileno(), plain.fileno())
        self.assertEqual(lean.logPrefix(), plain.logPrefix())
        self.assertEqual(lean.logPrefix(), "Echo,7,127.0.0.1")
        self.assertEqual(repr(lean), repr(plain))

    def test_filenoFollowsSocket(self) -> None:
        """C{fileno()} asks the socket each time, and is -1 once closed."""
        _, (lean, socket) = twins()
        socket.fileno = lambda: 99  # type: ignore[method-assign]
        # mypy: the fake socket's method is replaced to show it is asked.
        self.assertEqual(lean.fileno(), 99)
        lean.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(lean.fileno(), -1)

    def test_connectionLost(self) -> None:
        """Closing tells the protocol, keeps nothing per connection, stays named."""
        lost: list[Failure] = []

        class Recorder(Protocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                lost.append(reason)

        _, (lean, _) = twins(Recorder())
        reactor = lean.reactor
        self.assertIn(lean, reactor.getReaders())
        lean.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(lost), 1)
        self.assertNotIn(lean, reactor.getReaders())
        self.assertNotIn("fileno", vars(lean))
        self.assertEqual(lean.logPrefix(), "Recorder,7,127.0.0.1")
        self.assertEqual(repr(lean), "<NoneType #7 on 5000>")
        # A second call (as after an abort) is ignored, as by tcp.Server.
        lean.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(lost), 1)
        self.assertNotIn("fileno", vars(lean))


class UseLeanServerTests(SynchronousTestCase):
    """L{useLeanServer} changes plain TCP ports only."""

    def test_tcpPort(self) -> None:
        """A TCP port then serves its clients with L{LeanServer}."""
        reactor = MemoryReactorClock()
        factory = EchoFactory(clock=reactor)
        port = listeningPort(factory, reactor, FakeSocket())
        self.assertTrue(useLeanServer(port))
        port.doRead()
        (protocol,) = factory.connections
        self.assertIs(type(protocol.transport), LeanServer)
        self.assertIn(protocol.transport, reactor.getReaders())

    def test_otherPortsUnchanged(self) -> None:
        """UNIX ports, ports with their own transport class and others: unchanged."""
        factory = Factory.forProtocol(Protocol)
        unixPort = unix.Port(b"/nonexistent", factory, reactor=MemoryReactorClock())
        self.assertFalse(useLeanServer(unixPort))
        self.assertIs(unixPort.transport, unix.Server)

        class OwnServer(tcp.Server):
            pass

        class OwnPort(tcp.Port):
            transport = OwnServer

        ownPort = OwnPort(0, factory, reactor=MemoryReactorClock())
        self.assertFalse(useLeanServer(ownPort))
        self.assertIsNot(ownPort.transport, LeanServer)
        memory = MemoryReactorClock().listenTCP(0, factory)
        self.assertFalse(useLeanServer(memory))
