"""Tests for L{echotwist.internals.leanserver} and the Twisted internals it uses."""

from __future__ import annotations

import errno
import socket as socket_
from typing import Any, cast

from twisted.internet import tcp, unix
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.leanserver import (
    LeanServer,
    SendingUNIXServer,
    useLeanServer,
)
from echotwist.protocol import Echo, EchoFactory
from echotwist.test.transports import FakeSocket


class Recorder(Protocol):
    """A protocol that records what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        """Record C{data}."""
        self.received.append(data)


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

    def test_doReadAsTwisted(self) -> None:
        """C{doRead} returns what C{tcp.Connection.doRead} returns, and hands
        the protocol the same bytes: data, end of input, nothing there, an
        error (pinned against Twisted's).
        """
        cases: list[bytes | OSError] = [
            b"some bytes",
            b"",
            BlockingIOError(errno.EAGAIN, "nothing"),
            ConnectionResetError(errno.ECONNRESET, "reset"),
        ]
        for case in cases:
            results = []
            for transport, socket in twins():
                protocol = Recorder()
                transport.protocol = protocol
                socket.incoming = [case]
                why = transport.doRead()
                results.append((why, protocol.received))
            self.assertEqual(results[0], results[1], case)

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

    def test_unixPort(self) -> None:
        """A UNIX port then serves with L{SendingUNIXServer}; once is enough."""
        self.assertIs(unix.Port.transport, unix.Server)
        factory = Factory.forProtocol(Protocol)
        unixPort = unix.Port(b"/nonexistent", factory, reactor=MemoryReactorClock())
        self.assertTrue(useLeanServer(unixPort))
        self.assertIs(unixPort.transport, SendingUNIXServer)
        self.assertFalse(useLeanServer(unixPort))

    def test_otherPortsUnchanged(self) -> None:
        """Ports with their own transport class and others: unchanged."""
        factory = Factory.forProtocol(Protocol)

        class OwnServer(tcp.Server):
            pass

        class OwnPort(tcp.Port):
            transport = OwnServer

        ownPort = OwnPort(0, factory, reactor=MemoryReactorClock())
        self.assertFalse(useLeanServer(ownPort))
        self.assertIsNot(ownPort.transport, LeanServer)
        memory = MemoryReactorClock().listenTCP(0, factory)
        self.assertFalse(useLeanServer(memory))
