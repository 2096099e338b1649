"""Tests for L{echotwist.internals.writepath}, and the Twisted internals it relies on.

The transports are Twisted's real C{tcp.Server} and C{unix.Server} over a
fake socket (no system calls) and a L{MemoryReactor}, so the tests exercise
Twisted's own buffering code, and fail if an upgrade changes what the write
path assumes about it.
"""

from __future__ import annotations

import errno
from typing import cast

from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist.internals.leanserver import LeanServer, SendingUNIXServer
from echotwist.internals.speedups import builtSpeedups
from echotwist.internals.writepath import (
    canSendNow,
    pythonWriteAtOnce,
    sendNow,
    writeAtOnce,
)
from echotwist.protocol import Echo, EchoFactory
from echotwist.test.transports import FakeSocket, client, flush, server


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


class EchoChecks(SynchronousTestCase):
    """Checks of L{Echo} over a real transport class, for several classes."""

    def echoOverRealTransport(
        self,
        kind: type[tcp.Server],
        atOnce: bool,
        peer: object = ("127.0.0.1", 40000),
    ) -> None:
        """Echo over a C{kind}: at once (or next turn), then flow control."""
        socket = FakeSocket()
        factory = EchoFactory(clock=Clock())
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert isinstance(protocol, Echo)
        transport, reactor = server(socket, protocol, kind, peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"ping")
        self.assertEqual(socket.sent, b"ping" if atOnce else b"")
        flush(transport)
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


class WriteAtOnceTests(EchoChecks):
    """L{pythonWriteAtOnce} sends at once only when nothing is buffered."""

    # The implementation under test: the C speedups' copy runs these too.
    send = staticmethod(pythonWriteAtOnce)

    def test_sendsAtOnceWhenEmpty(self) -> None:
        """With empty buffers the bytes go straight out; no writer is added."""
        socket = FakeSocket()
        transport, reactor = server(socket)
        self.send(transport, b"hello")
        self.assertEqual(socket.sent, b"hello")
        self.assertEqual(socket.sends, 1)
        self.assertNotIn(transport, reactor.getWriters())

    def test_partialSendBuffersTheRest(self) -> None:
        """What the kernel does not take is buffered, and sent later in order."""
        socket = FakeSocket(room=3)
        transport, reactor = server(socket)
        self.send(transport, b"abcdef")
        self.assertEqual(socket.sent, b"abc")
        self.assertIn(transport, reactor.getWriters())
        self.send(transport, b"ghi")
        self.assertEqual(socket.sends, 1, "sent while bytes were buffered")
        socket.room = None
        flush(transport)
        self.assertEqual(socket.sent, b"abcdefghi")
        self.assertNotIn(transport, reactor.getWriters())
        self.send(transport, b"jk")
        self.assertEqual(socket.sent, b"abcdefghijk")

    def test_wouldBlockBuffersAll(self) -> None:
        """A full socket buffer leaves every byte to the transport's buffer."""
        socket = FakeSocket(room=0)
        transport, reactor = server(socket)
        self.send(transport, b"abc")
        self.assertEqual(transport._tempDataLen, 3)
        self.assertIn(transport, reactor.getWriters())

    def test_errorLeftToTwisted(self) -> None:
        """A send error hands the data to C{write}, whose next attempt reports it."""
        socket = FakeSocket()
        socket.error = ConnectionResetError(errno.ECONNRESET, "reset")
        transport, _ = server(socket)
        self.send(transport, b"abc")
        self.assertEqual(transport._tempDataLen, 3)
        self.assertIsInstance(transport.doWrite(), Exception)

    def test_notWhileDisconnecting(self) -> None:
        """After C{loseConnection} writes take Twisted's path."""
        socket = FakeSocket()
        transport, _ = server(socket)
        transport.loseConnection()
        self.assertFalse(canSendNow(transport))
        self.send(transport, b"abc")
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
        self.send(transport, b"abc")
        self.assertEqual(socket.sends, 0)

    def test_notWithTLS(self) -> None:
        """A transport that started TLS is left to Twisted."""
        transport, _ = server(FakeSocket())
        transport.TLS = True
        self.assertFalse(canSendNow(transport))

    def test_bindsAsAMethod(self) -> None:
        """As a transport class's C{write}, it is called with the transport."""
        write = self.send

        class Sending(tcp.Server):
            pass

        # mypy: a method replaced on a class made for this test.
        Sending.write = write  # type: ignore[assignment]
        socket = FakeSocket()
        transport, reactor = server(socket, kind=Sending)
        transport.write(b"hello")
        self.assertEqual((socket.sent, socket.sends), (b"hello", 1))
        self.assertNotIn(transport, reactor.getWriters())

    def test_echoOverIt(self) -> None:
        """L{Echo} over a transport writing with it: flow control, half-close."""
        write = self.send

        class Sending(LeanServer):
            pass

        Sending.write = write
        self.echoOverRealTransport(Sending, atOnce=True)
        self.echoHalfCloseFlushesThenCloses(Sending)


class NativeWriteAtOnceTests(WriteAtOnceTests):
    """The C speedups' C{writeAtOnce} passes the same tests."""

    skip = "the C speedups are not built" if builtSpeedups is None else None
    send = staticmethod(
        pythonWriteAtOnce if builtSpeedups is None else builtSpeedups.writeAtOnce
    )


class SendNowTests(SynchronousTestCase):
    """L{sendNow} sends at once on Twisted's own transports, else writes."""

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

    def test_otherTransportsUseWrite(self) -> None:
        """A transport of any other class gets a plain C{write}."""
        transport = StringTransport()
        self.assertFalse(canSendNow(transport))
        sendNow(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")

    def test_writeAtOnceIsAMethod(self) -> None:
        """L{writeAtOnce} as a transport class's C{write}: sent at once."""

        class Sending(tcp.Server):
            # mypy reads a callable class attribute as already bound.
            write = writeAtOnce  # type: ignore[assignment]

        socket = FakeSocket()
        transport, reactor = server(socket, kind=Sending)
        transport.write(b"hello")
        self.assertEqual((socket.sent, socket.sends), (b"hello", 1))
        self.assertNotIn(transport, reactor.getWriters())
        sendNow(transport, b"!")
        self.assertEqual(socket.sent, b"hello!")

    def test_subclassesUseWrite(self) -> None:
        """A subclass may override C{write}, so it is not bypassed."""

        class Custom(tcp.Server):
            pass

        transport, _ = server(FakeSocket(), kind=Custom)
        self.assertFalse(canSendNow(transport))


class EchoWritesTests(SynchronousTestCase):
    """L{Echo} writes with its transport's C{write}, as Twisted's C{wire.Echo}."""

    def test_echoUsesTransportWrite(self) -> None:
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


class FlowControlTests(EchoChecks):
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
        """L{Echo} on a C{tcp.Server} sends on the next turn, pauses when blocked."""
        self.echoOverRealTransport(tcp.Server, atOnce=False)

    def test_echoOverLeanServer(self) -> None:
        """L{Echo} on a L{LeanServer} sends at once and pauses when blocked."""
        self.echoOverRealTransport(LeanServer, atOnce=True)

    def test_echoOverUNIXServer(self) -> None:
        """L{Echo} on a L{SendingUNIXServer} sends at once, pauses when blocked."""
        self.echoOverRealTransport(SendingUNIXServer, atOnce=True, peer="")

    def test_echoHalfCloseFlushesThenCloses(self) -> None:
        """After the client's half-close, buffered bytes go out, then the close."""
        self.echoHalfCloseFlushesThenCloses(tcp.Server)

    def test_echoHalfCloseOnLeanServer(self) -> None:
        """On a L{LeanServer} too, a half-close flushes the echo, then closes."""
        self.echoHalfCloseFlushesThenCloses(LeanServer)
