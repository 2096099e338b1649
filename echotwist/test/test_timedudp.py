"""Tests for L{echotwist.internals.timedudp}, and the Twisted internals it relies on.

The ports are Twisted's real C{udp.Port} and L{TimedPort} over a fake
datagram socket (no system calls) and a L{MemoryReactor}, so the tests
run Twisted's own UDP code, and fail if an upgrade changes what the timed
port assumes about it.  Time is a L{Clock} that the fake socket advances
inside each call, so a test can tell a clock read before a call from one
after it.
"""

from __future__ import annotations

import errno
import inspect
import socket as socket_
from collections.abc import Callable
from typing import cast

from twisted.internet import error, udp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.timedudp import (
    TimedDatagramProtocol,
    TimedPort,
    canTime,
)
from echotwist.test.transports import takeIncoming

PEER = ("127.0.0.1", 7007)
# How long the fake socket's every call takes, on the test's clock.
CALL = 1.0


class FakeDatagramSocket:
    """A UDP socket that records sends and hands out queued datagrams.

    Each C{send}, C{recv} and C{recvfrom} advances C{clock} by L{CALL}
    while it runs.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[bytes] = []
        self.sendErrors: list[OSError] = []
        # What the receives return (bytes) or raise (an error), in turn;
        # when empty, EAGAIN.
        self.incoming: list[bytes | OSError] = []
        self.connectedTo: tuple[str, int] | None = None

    def connect(self, address: tuple[str, int]) -> None:
        """Remember the peer."""
        self.connectedTo = address

    def send(self, data: bytes) -> int:
        """Take C{data}, or raise the next queued send error."""
        self.clock.advance(CALL)
        if self.sendErrors:
            raise self.sendErrors.pop(0)
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        """The next datagram (at most C{size} bytes), or its error."""
        self.clock.advance(CALL)
        return takeIncoming(self.incoming, size)

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        """As L{recv}, from the peer."""
        return self.recv(size), PEER


class Recorder(TimedDatagramProtocol):
    """Records what a port hands it, with the times."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock.seconds
        self.received: list[tuple[bytes, object, float]] = []
        self.refused = 0
        self.failOn: bytes | None = None

    def datagramReceivedAt(self, datagram: bytes, addr: object, when: float) -> None:
        """Record the datagram; raise if it is C{failOn}."""
        self.received.append((datagram, addr, when))
        if datagram == self.failOn:
            raise ValueError("failing on purpose")

    def connectionRefused(self) -> None:
        """Count the refusal."""
        self.refused += 1


class PlainRecorder(DatagramProtocol):
    """Records what Twisted's own port hands it."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, object]] = []
        self.refused = 0

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        """Record the datagram."""
        self.received.append((datagram, addr))

    def connectionRefused(self) -> None:
        """Count the refusal."""
        self.refused += 1


def assertSendErrors(
    test: SynchronousTestCase,
    send: Callable[[bytes], object],
    socket: FakeDatagramSocket,
    protocol: Recorder | PlainRecorder,
) -> object:
    """What C{send} does with each failed send to the connected peer.

    EINTR: tried again; EMSGSIZE: C{MessageLengthError}; ECONNREFUSED:
    the protocol's C{connectionRefused}; anything else raised.  Twisted's
    C{write} and L{TimedPort.sendTimed} must agree.  Returns what the
    send retried after EINTR returned.
    """
    socket.sendErrors = [OSError(errno.EINTR, "interrupted")]
    retried = send(b"again")
    test.assertEqual(socket.sent, [b"again"])
    socket.sendErrors = [OSError(errno.EMSGSIZE, "too long")]
    test.assertRaises(error.MessageLengthError, send, b"long")
    socket.sendErrors = [OSError(errno.ECONNREFUSED, "refused")]
    send(b"refused")
    test.assertEqual(protocol.refused, 1)
    socket.sendErrors = [OSError(errno.ENOBUFS, "no buffers")]
    test.assertRaises(OSError, send, b"raised")
    test.assertEqual(socket.sent, [b"again"])
    return retried


def timedPort(
    connected: bool = True,
) -> tuple[TimedPort, FakeDatagramSocket, Recorder, Clock]:
    """A L{TimedPort} over a fake socket, connected to L{PEER} unless not."""
    clock = Clock()
    protocol = Recorder(clock)
    reactor = cast(IReactorUDP, MemoryReactor())
    port = TimedPort(0, protocol, "127.0.0.1", 65535, reactor, clock=clock.seconds)
    socket = FakeDatagramSocket(clock)
    port.socket = cast(socket_.socket, socket)
    if connected:
        port.connect(*PEER)
    return port, socket, protocol, clock


def twistedPort() -> tuple[udp.Port, FakeDatagramSocket, PlainRecorder]:
    """Twisted's own UDP port over a fake socket, connected to L{PEER}."""
    protocol = PlainRecorder()
    port = udp.Port(0, protocol, "127.0.0.1", 65535, MemoryReactor())
    socket = FakeDatagramSocket(Clock())
    port.socket = cast(socket_.socket, socket)
    port.connect(*PEER)
    return port, socket, protocol


class TwistedInternalsTests(SynchronousTestCase):
    """What L{TimedPort} assumes about Twisted's UDP port still holds."""

    def test_constructor(self) -> None:
        """C{udp.Port} takes (port, proto, interface, maxPacketSize, reactor)."""
        parameters = list(inspect.signature(udp.Port.__init__).parameters)
        self.assertEqual(
            parameters[1:6], ["port", "proto", "interface", "maxPacketSize", "reactor"]
        )
        port, _, protocol = twistedPort()
        self.assertIs(port.protocol, protocol)
        self.assertEqual(port.maxPacketSize, 65535)
        self.assertGreater(port.maxThroughput, 65535)

    def test_connectSetsPeer(self) -> None:
        """C{connect} keeps the peer in C{_connectedAddr} and connects the socket."""
        port, socket, _ = twistedPort()
        self.assertEqual(port._connectedAddr, PEER)
        self.assertEqual(socket.connectedTo, PEER)
        unconnected = udp.Port(0, PlainRecorder(), "127.0.0.1", 65535, MemoryReactor())
        self.assertIsNone(unconnected._connectedAddr)

    def test_listenUDPMakesAPort(self) -> None:
        """The reactor's C{listenUDP} makes a C{udp.Port} and starts it listening."""
        source = inspect.getsource(EPollReactor.listenUDP)
        self.assertIn(
            "udp.Port(port, protocol, interface, maxPacketSize, self)", source
        )
        self.assertIn("p.startListening()", source)

    def test_doReadReadsUntilEmpty(self) -> None:
        """C{doRead} hands over each datagram waiting, until EAGAIN."""
        port, socket, protocol = twistedPort()
        socket.incoming = [b"a", b"b"]
        port.doRead()
        self.assertEqual(protocol.received, [(b"a", PEER), (b"b", PEER)])

    def test_readErrors(self) -> None:
        """EAGAIN ends a read quietly; ECONNREFUSED on a connected port is a refusal."""
        self.assertIn(errno.EAGAIN, udp._sockErrReadIgnore)
        self.assertIn(errno.EINTR, udp._sockErrReadIgnore)
        self.assertIn(errno.ECONNREFUSED, udp._sockErrReadRefuse)
        port, socket, protocol = twistedPort()
        socket.incoming = [OSError(errno.ECONNREFUSED, "refused"), b"later"]
        port.doRead()
        self.assertEqual((protocol.refused, protocol.received), (1, []))

    def test_writeErrors(self) -> None:
        """A connected C{write}: EINTR again, EMSGSIZE and ECONNREFUSED as named."""
        port, socket, protocol = twistedPort()
        assertSendErrors(self, port.write, socket, protocol)


class TimedPortTests(SynchronousTestCase):
    """L{TimedPort} times each receive and send where its system call ends or begins."""

    def test_receiveTimedWhenItReturns(self) -> None:
        """Each datagram comes with the time read right after its receive returned."""
        port, socket, protocol, _ = timedPort()
        socket.incoming = [b"a", b"b"]
        port.doRead()
        # Each receive takes CALL seconds: the first returns at 1, the
        # second at 2 (the third, EAGAIN, at 3).
        self.assertEqual(protocol.received, [(b"a", PEER, 1.0), (b"b", PEER, 2.0)])

    def test_maxThroughput(self) -> None:
        """One call reads no more than C{maxThroughput} bytes, as Twisted's."""
        port, socket, protocol, _ = timedPort()
        port.maxThroughput = 3
        socket.incoming = [b"ab", b"cd", b"ef"]
        port.doRead()
        self.assertEqual([d for d, _, _ in protocol.received], [b"ab", b"cd"])

    def test_refused(self) -> None:
        """ECONNREFUSED ends the read as a refusal; another error is raised."""
        port, socket, protocol, _ = timedPort()
        socket.incoming = [OSError(errno.ECONNREFUSED, "refused"), b"later"]
        port.doRead()
        self.assertEqual((protocol.refused, protocol.received), (1, []))
        socket.incoming = [OSError(errno.EBADF, "bad")]
        self.assertRaises(OSError, port.doRead)

    def test_protocolErrorLogged(self) -> None:
        """An exception from the protocol is logged and the reading goes on."""
        port, socket, protocol, _ = timedPort()
        protocol.failOn = b"a"
        socket.incoming = [b"a", b"b"]
        port.doRead()
        self.assertEqual([d for d, _, _ in protocol.received], [b"a", b"b"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unconnectedReadsAsTwisted(self) -> None:
        """Unconnected, the port reads as Twisted's; the protocol times the datagram."""
        port, socket, protocol, _ = timedPort(connected=False)
        socket.incoming = [b"a"]
        port.doRead()
        self.assertEqual(protocol.received, [(b"a", PEER, 1.0)])

    def test_sendTimedBeforeTheCall(self) -> None:
        """C{sendTimed} returns the time read right before its send call."""
        port, socket, _, clock = timedPort()
        clock.advance(5)
        self.assertEqual(port.sendTimed(b"x"), 5.0)
        self.assertEqual(clock.seconds(), 5.0 + CALL)
        self.assertEqual(socket.sent, [b"x"])

    def test_sendErrorsAsTwisted(self) -> None:
        """A failed send is what Twisted's C{write} makes of it."""
        port, socket, protocol, _ = timedPort()
        # Tried again after EINTR: the time is that of the send that went.
        self.assertEqual(assertSendErrors(self, port.sendTimed, socket, protocol), CALL)

    def test_canTime(self) -> None:
        """Only a reactor with real sockets gets a timed port."""
        self.assertFalse(canTime(MemoryReactor()))
        # An epoll reactor's class, without the descriptors its __init__ opens.
        self.assertTrue(canTime(EPollReactor.__new__(EPollReactor)))
