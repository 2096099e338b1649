"""Tests for L{echotwist.internals.aiotcp}: Echo over the asyncio loop's own transports.

Unit tests drive L{NativeConnection} with a fake asyncio transport (no
sockets, no loop).  The end-to-end test (the real C{twistd -r uvloop} with
an C{aiotcp:} listener and the real client) is in
L{echotwist.test.e2e.test_aiotcp}.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any, cast

from twisted.application.reactors import IReactorInstaller
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import (
    AlreadyListened,
    CannotListenError,
    ConnectionDone,
    ConnectionLost,
)
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echotwist.internals.aiotcp import (
    AdoptedNativeEndpoint,
    NativeConnection,
    NativePort,
    parseNativeTCP,
    reactorLoop,
    toAddress,
)
from echotwist.protocol import Echo, EchoFactory
from echotwist.tap import Options


class FakeSocket:
    """Socket options, as the loop's transport exposes its socket."""

    def __init__(self) -> None:
        self.options: dict[tuple[int, int], int] = {}

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """Record an option."""
        self.options[level, option] = value

    def getsockopt(self, level: int, option: int) -> int:
        """Report an option."""
        return self.options.get((level, option), 0)


class FakeTransport:
    """What an asyncio transport does, recorded."""

    def __init__(self, peer: tuple[Any, ...] = ("192.0.2.7", 40000)) -> None:
        self.written = b""
        self.closed = False
        self.aborted = False
        self.eofWritten = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None
        # What uvloop keeps of the protocol when it is set: its bound
        # data_received, looked up once.
        self.dataReceived: Any = None
        self.extra: dict[str, Any] = {
            "peername": peer,
            "sockname": ("192.0.2.1", 5000),
            "socket": FakeSocket(),
        }

    def write(self, data: bytes) -> None:
        """Record C{data}."""
        self.written += data

    def writelines(self, chunks: list[bytes]) -> None:
        """Record every chunk."""
        self.written += b"".join(chunks)

    def close(self) -> None:
        """Record a close."""
        self.closed = True

    def abort(self) -> None:
        """Record an abort."""
        self.aborted = self.closed = True

    def write_eof(self) -> None:
        """Record a half-close."""
        self.eofWritten = True

    def is_closing(self) -> bool:
        """Whether C{close} was called."""
        return self.closed

    def pause_reading(self) -> None:
        """Stop reading."""
        self.reading = False

    def resume_reading(self) -> None:
        """Read again."""
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Take C{protocol}, keeping its C{data_received} as uvloop does."""
        self.protocol = protocol
        self.dataReceived = getattr(protocol, "data_received", None)

    def get_extra_info(self, name: str) -> object:
        """Peer, local address and socket."""
        return self.extra[name]


def connect(
    factory: Factory[Any] | None = None,
) -> tuple[NativeConnection, FakeTransport, EchoFactory]:
    """A L{NativeConnection} serving an echo over a L{FakeTransport}."""
    echoFactory = EchoFactory(clock=Clock())
    connection = NativeConnection(factory or echoFactory)
    transport = FakeTransport()
    connection.connection_made(cast(asyncio.Transport, transport))
    return connection, transport, echoFactory


class NativeConnectionTests(SynchronousTestCase):
    """L{NativeConnection} maps asyncio's callbacks onto Twisted's."""

    def test_interfaces(self) -> None:
        """It is a TCP transport, a consumer and a push producer."""
        connection, _, _ = connect()
        self.assertTrue(verifyObject(ITCPTransport, connection))
        self.assertTrue(verifyObject(IConsumer, connection))
        self.assertTrue(verifyObject(IPushProducer, connection))

    def test_echoes(self) -> None:
        """Data received is written back through the loop's transport."""
        connection, transport, factory = connect()
        connection.data_received(b"hello")
        connection.data_received(b" world")
        self.assertEqual(transport.written, b"hello world")
        self.assertEqual(factory.stats.bytesEchoedNow()["tcp"], 11)

    def test_loopCallsDataReceivedDirectly(self) -> None:
        """Once connected, the loop's kept C{data_received} is the Echo's own.

        uvloop looks C{data_received} up when the protocol is set; the
        connection sets itself again once the Echo exists, so each read
        calls C{Echo.dataReceived} with no hop through the adapter.
        """
        connection, transport, factory = connect()
        self.assertIs(transport.protocol, connection)
        self.assertIs(transport.dataReceived.__self__, connection.protocol)
        transport.dataReceived(b"direct")
        self.assertEqual(transport.written, b"direct")
        self.assertEqual(factory.stats.bytesEchoedNow()["tcp"], 6)

    def test_loopWrite(self) -> None:
        """The transport's C{write} is the loop transport's own, bound to it."""
        connection, transport, _ = connect()
        self.assertEqual(connection.write, transport.write)
        self.assertIs(getattr(connection.write, "__self__", None), transport)
        echo = cast(Echo, connection.protocol)
        echo.dataReceived(b"through")
        self.assertEqual(transport.written, b"through")

    def test_flowControl(self) -> None:
        """A full write buffer stops reading; a drained one restarts it."""
        connection, transport, _ = connect()
        connection.pause_writing()
        self.assertFalse(transport.reading)
        connection.resume_writing()
        self.assertTrue(transport.reading)

    def test_halfClose(self) -> None:
        """EOF from the client keeps the connection open for Echo to close."""
        connection, transport, _ = connect()
        connection.data_received(b"last")
        self.assertTrue(connection.eof_received())
        self.assertTrue(transport.closed)
        self.assertEqual(transport.written, b"last")
        # Echo unregistered itself before closing: buffer events are ignored.
        connection.pause_writing()
        self.assertTrue(transport.reading)

    def test_eofWithoutHalfClose(self) -> None:
        """A protocol that is not half-close aware lets asyncio close."""
        connection, _, _ = connect(Factory.forProtocol(Protocol))
        self.assertFalse(connection.eof_received())

    def test_connectionLostCleanly(self) -> None:
        """A clean close reaches the protocol as C{ConnectionDone}."""
        reasons: list[Failure] = []

        class Recorder(Protocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                reasons.append(reason)

        connection, _, _ = connect(Factory.forProtocol(Recorder))
        connection.connection_lost(None)
        self.assertTrue(reasons[0].check(ConnectionDone))

    def test_connectionLostWithError(self) -> None:
        """An error close reaches Echo as C{ConnectionLost} and is counted."""
        connection, _, factory = connect()
        self.assertEqual(factory.stats.connectionsActive, 1)
        connection.connection_lost(ConnectionResetError("reset"))
        self.assertEqual(factory.stats.connectionsActive, 0)

    def test_connectionLostReason(self) -> None:
        """An error close is a C{ConnectionLost} failure."""
        reasons: list[Failure] = []

        class Recorder(Protocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                reasons.append(reason)

        connection, _, _ = connect(Factory.forProtocol(Recorder))
        connection.connection_lost(ConnectionResetError("reset"))
        self.assertTrue(reasons[0].check(ConnectionLost))

    def test_refusedByFactory(self) -> None:
        """A factory that builds no protocol gets the connection closed."""

        class Refusing(Factory[Protocol]):
            def buildProtocol(self, addr: IAddress | None) -> None:
                return None

        connection, transport, _ = connect(Refusing())
        self.assertTrue(transport.closed)
        # Bytes already on their way are dropped, not an error.
        connection.data_received(b"late")
        self.assertEqual(transport.written, b"")

    def test_transportMethods(self) -> None:
        """Close, abort, half-close and TCP options reach the loop's transport."""
        connection, transport, _ = connect()
        connection.writeSequence([b"a", b"b"])
        self.assertEqual(transport.written, b"ab")
        self.assertTrue(connection.getTcpNoDelay())
        connection.setTcpKeepAlive(True)
        self.assertTrue(connection.getTcpKeepAlive())
        connection.loseWriteConnection()
        self.assertTrue(transport.eofWritten)
        connection.abortConnection()
        self.assertTrue(transport.aborted)

    def test_addresses(self) -> None:
        """Socket addresses become Twisted TCP addresses."""
        connection, _, _ = connect()
        self.assertEqual(connection.getPeer(), IPv4Address("TCP", "192.0.2.7", 40000))
        self.assertEqual(connection.getHost(), IPv4Address("TCP", "192.0.2.1", 5000))
        self.assertEqual(
            toAddress(("::1", 7, 0, 0)), IPv6Address("TCP", "::1", 7, 0, 0)
        )


class ListenerTests(SynchronousTestCase):
    """The C{aiotcp:} description and the C{uvloop} reactor plugin."""

    def test_needsAsyncioReactor(self) -> None:
        """Without an asyncio reactor, C{aiotcp} is refused with a reason."""
        error = self.assertRaises(ValueError, parseNativeTCP, MemoryReactor(), "0")
        self.assertIn("asyncio reactor", str(error))

    def test_reactorLoopNeedsAsyncioReactor(self) -> None:
        """Only an asyncio reactor has a loop to serve native sockets on."""
        error = self.assertRaises(ValueError, reactorLoop, MemoryReactor())
        self.assertIn("asyncio reactor", str(error))

    def test_optionsRejectWithoutAsyncioReactor(self) -> None:
        """C{twistd echo --listen aiotcp:...} on another reactor: one line, exit 2."""
        errors = io.StringIO()
        options = Options(reactor=Clock(), errorStream=errors)
        exit = self.assertRaises(
            SystemExit, options.parseOptions, ["--listen", "aiotcp:5000"]
        )
        self.assertEqual(exit.code, 2)
        self.assertEqual(len(errors.getvalue().splitlines()), 1)
        self.assertIn("asyncio reactor", errors.getvalue())

    def test_uvloopReactorPlugin(self) -> None:
        """C{twistd -r uvloop} finds the reactor plugin."""
        names = [r.shortName for r in getPlugins(IReactorInstaller)]
        self.assertIn("uvloop", names)


class FakeServer:
    """What C{create_server} returns; closing it closes the socket it serves.

    As asyncio's and uvloop's servers do: the port hands them the socket.
    """

    def __init__(
        self, protocolFactory: Callable[[], asyncio.BaseProtocol], sock: socket.socket
    ) -> None:
        self.protocolFactory = protocolFactory
        self.sock = sock
        self.closed = False

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.closed = True
        self.sock.close()


class FakeTask:
    """A task of L{FakeLoop}: its coroutine, and whether it was cancelled."""

    def __init__(self, coroutine: Coroutine[Any, Any, object]) -> None:
        self.coroutine = coroutine
        self.cancelled = False

    def cancel(self) -> None:
        """Cancel: the coroutine never runs (on)."""
        self.cancelled = True
        self.coroutine.close()


class FakeLoop:
    """An event loop that records C{create_server}'s socket; no I/O.

    A C{running} loop runs each task's coroutine at once (the native port's
    only await is C{create_server}, which completes here at once); a loop
    that is not running yet keeps them pending.
    """

    def __init__(self, running: bool = True) -> None:
        self.running = running
        self.tasks: list[FakeTask] = []
        self.servers: list[FakeServer] = []

    def create_task(self, coroutine: Coroutine[Any, Any, object]) -> FakeTask:
        """Record the task; run it to its end if the loop runs."""
        task = FakeTask(coroutine)
        self.tasks.append(task)
        if self.running:
            with contextlib.suppress(StopIteration):
                coroutine.send(None)
                raise AssertionError("the task waited for more than create_server")
        return task

    async def create_server(
        self,
        protocolFactory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
    ) -> FakeServer:
        """Serve C{sock}: record it."""
        server = FakeServer(protocolFactory, sock)
        self.servers.append(server)
        return server


def unboundDescriptor(family: socket.AddressFamily = socket.AF_INET) -> int:
    """The descriptor of a TCP socket never bound nor connected: no traffic.

    The socket object gives it up, so whoever adopts it owns it.  A real
    descriptor, although unit tests use no real sockets: adopting one is
    what the endpoint under test does, and it never carries a byte here.
    """
    return socket.socket(family, socket.SOCK_STREAM).detach()


class AdoptedNativeEndpointTests(SynchronousTestCase):
    """L{AdoptedNativeEndpoint} serves an inherited descriptor on the loop."""

    def listen(
        self,
        loop: FakeLoop,
        family: socket.AddressFamily = socket.AF_INET,
    ) -> tuple[NativePort, int, EchoFactory]:
        """Listen on a fresh descriptor through the endpoint over C{loop}."""
        descriptor = unboundDescriptor(family)
        factory = EchoFactory(clock=Clock())
        endpoint = AdoptedNativeEndpoint(
            cast(asyncio.AbstractEventLoop, loop), descriptor, family
        )
        port = self.successResultOf(endpoint.listen(factory))
        assert isinstance(port, NativePort)
        # Whatever the test's outcome, the descriptor goes with the socket.
        self.addCleanup(port.socket.close)
        return port, descriptor, factory

    def test_servesDescriptor(self) -> None:
        """The loop's server gets the descriptor itself, non-blocking."""
        loop = FakeLoop()
        port, descriptor, factory = self.listen(loop)
        [server] = loop.servers
        self.assertIs(server.sock, port.socket)
        self.assertEqual(server.sock.fileno(), descriptor)
        self.assertEqual(server.sock.family, socket.AF_INET)
        self.assertFalse(server.sock.getblocking())
        self.assertIs(port.server, server)
        self.assertEqual(factory.numPorts, 1)

    def test_connectionsServeFactory(self) -> None:
        """Each connection the loop accepts is a L{NativeConnection} of the factory."""
        loop = FakeLoop()
        _, _, factory = self.listen(loop)
        connection = loop.servers[0].protocolFactory()
        assert isinstance(connection, NativeConnection)
        self.assertIs(connection.factory, factory)

    def test_family(self) -> None:
        """An IPv6 descriptor is served as IPv6."""
        loop = FakeLoop()
        port, _, _ = self.listen(loop, socket.AF_INET6)
        self.assertEqual(loop.servers[0].sock.family, socket.AF_INET6)
        self.assertIsInstance(port.getHost(), IPv6Address)

    def test_stopListeningCloses(self) -> None:
        """Stopping closes the server, and so the adopted descriptor."""
        loop = FakeLoop()
        port, _, factory = self.listen(loop)
        port.stopListening()
        self.assertTrue(loop.servers[0].closed)
        self.assertEqual(port.socket.fileno(), -1)
        self.assertEqual(factory.numPorts, 0)

    def test_stopBeforeServing(self) -> None:
        """Stopped before the loop ran, the port closes the descriptor itself."""
        loop = FakeLoop(running=False)
        port, _, factory = self.listen(loop)
        port.stopListening()
        self.assertEqual(loop.servers, [])
        self.assertTrue(loop.tasks[0].cancelled)
        self.assertEqual(port.socket.fileno(), -1)
        self.assertEqual(factory.numPorts, 0)

    def test_listensOnce(self) -> None:
        """A descriptor is adopted once: listening again fails."""
        loop = FakeLoop()
        descriptor = unboundDescriptor()
        endpoint = AdoptedNativeEndpoint(
            cast(asyncio.AbstractEventLoop, loop), descriptor, socket.AF_INET
        )
        port = self.successResultOf(endpoint.listen(EchoFactory(clock=Clock())))
        assert isinstance(port, NativePort)
        self.addCleanup(port.socket.close)
        self.failureResultOf(
            endpoint.listen(EchoFactory(clock=Clock())), AlreadyListened
        )
        self.assertEqual(len(loop.servers), 1)

    def test_notASocket(self) -> None:
        """A descriptor that is no socket fails to listen, and is left alone."""
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        loop = FakeLoop()
        endpoint = AdoptedNativeEndpoint(
            cast(asyncio.AbstractEventLoop, loop), readEnd, socket.AF_INET
        )
        failure = self.failureResultOf(
            endpoint.listen(EchoFactory(clock=Clock())), CannotListenError
        )
        self.assertIn("descriptor", failure.getErrorMessage())
        self.assertEqual((loop.tasks, loop.servers), ([], []))
        os.fstat(readEnd)
