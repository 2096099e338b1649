"""Serve Twisted protocols over the asyncio event loop's own TCP transports.

Under an asyncio reactor (C{twistd -r uvloop}, or C{-r asyncio}) Twisted
still does its socket I/O in Python.  The C{aiotcp:PORT} listener instead
lets the event loop's native transports carry the bytes - uvloop's are
written in C - and adapts each one to Twisted's C{ITCPTransport}, so the
unchanged L{echotwist.protocol.Echo} runs on top:

  - C{data_received} becomes C{dataReceived};
  - C{eof_received} becomes C{readConnectionLost} (half-close), and the
    connection stays open until the protocol closes it;
  - C{pause_writing}/C{resume_writing} (the loop's write buffer passing its
    high/low water marks, 64 KiB by default as Twisted's) pause and resume
    the registered producer; C{pauseProducing}/C{resumeProducing} of the
    transport stop and restart reading - so the echo's flow control works
    as on Twisted's transports;
  - C{connection_lost} becomes C{connectionLost}.

Only public asyncio and Twisted APIs are used.

With C{--workers N} each worker serves a listening socket its supervisor
opened and passed down (L{echotwist.workers}); L{AdoptedNativeEndpoint}
serves such a descriptor as L{NativeTCPEndpoint} serves the socket it binds.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    AlreadyListened,
    CannotListenError,
    ConnectionDone,
    ConnectionLost,
)
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IListeningPort,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPullProducer,
    IPushProducer,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist.endpoints import checkBacklog, checkPort


def toAddress(address: tuple[Any, ...]) -> IPv4Address | IPv6Address:
    """Turn a socket address tuple into a Twisted TCP address."""
    if len(address) == 4:
        return IPv6Address("TCP", address[0], address[1], address[2], address[3])
    return IPv4Address("TCP", address[0], address[1])


@implementer(ITCPTransport, IConsumer, IPushProducer)
class NativeConnection(asyncio.Protocol):
    """One connection: an asyncio protocol that is the Twisted transport.

    It receives the loop's callbacks and hands them to the Twisted
    C{protocol} built by C{factory}, and offers that protocol the
    C{ITCPTransport}, C{IConsumer} and C{IPushProducer} methods on top of
    the loop's transport.
    """

    # Tens of thousands of idle connections: no per-instance dict.
    __slots__ = ("factory", "producer", "protocol", "streaming", "transport", "write")

    # Set by connection_made, before the Twisted protocol exists to use it.
    transport: asyncio.Transport

    # ITransport.write: the loop transport's own write method (C code under
    # uvloop), set by connection_made, so a protocol's transport.write(data)
    # calls it with no Python call through this adapter.  The loop sends at
    # once or buffers.
    write: Callable[[bytes], None]

    def __init__(self, factory: IProtocolFactory) -> None:
        self.factory = factory
        self.protocol: IProtocol | None = None
        self.producer: IProducer | None = None
        self.streaming = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Build the Twisted protocol and connect it to this transport."""
        # uvloop's transports provide asyncio.Transport's methods without
        # subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.write = self.transport.write
        protocol: IProtocol | None = self.factory.buildProtocol(self.getPeer())
        if protocol is None:
            # A factory may refuse a connection by building nothing.
            transport.close()
            return
        self.protocol = protocol
        protocol.makeConnection(self)
        # uvloop looks data_received up once, when the protocol is set, and
        # keeps the bound method: set it again now that the Twisted protocol
        # exists, so each read calls its dataReceived with no hop through
        # this adapter.  (asyncio's own transports look it up per read.)
        transport.set_protocol(self)

    # A property, not a method, so the loop gets the protocol's own
    # dataReceived.
    @property
    def data_received(self) -> Callable[[bytes], None]:
        """The Twisted protocol's C{dataReceived}, called for every read."""
        protocol = self.protocol
        if protocol is None:
            return self._dataWithoutProtocol
        return protocol.dataReceived

    def _dataWithoutProtocol(self, data: bytes) -> None:
        # Only a refused connection (closed at once) has no protocol.
        pass

    def eof_received(self) -> bool:
        """The peer shut its side: half-close, as Twisted's TCP does.

        A half-close aware protocol is told with C{readConnectionLost} and
        the connection stays open until it closes it; any other protocol
        loses the connection.
        """
        halfCloseable: object = self.protocol
        if IHalfCloseableProtocol.providedBy(halfCloseable):
            halfCloseable.readConnectionLost()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the producer and the protocol that the connection is gone."""
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            reason = (
                ConnectionDone("Connection was closed cleanly.")
                if exc is None
                else ConnectionLost(str(exc))
            )
            protocol.connectionLost(Failure(reason))

    def pause_writing(self) -> None:
        """The write buffer is full: pause a streaming producer."""
        if self.producer is not None and self.streaming:
            cast(IPushProducer, self.producer).pauseProducing()

    def resume_writing(self) -> None:
        """The write buffer drained: resume the producer."""
        if self.producer is not None:
            cast(IPushProducer, self.producer).resumeProducing()

    # ITransport / ITCPTransport

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Send every chunk of C{data}, in order."""
        self.transport.writelines(data)

    def loseConnection(self) -> None:
        """Close once everything buffered is sent."""
        self.transport.close()

    def abortConnection(self) -> None:
        """Close at once, discarding what is buffered."""
        self.transport.abort()

    def loseWriteConnection(self) -> None:
        """Shut our sending side once everything buffered is sent."""
        self.transport.write_eof()

    def getPeer(self) -> IPv4Address | IPv6Address:
        """The client's address."""
        return toAddress(self.transport.get_extra_info("peername"))

    def getHost(self) -> IPv4Address | IPv6Address:
        """Our address."""
        return toAddress(self.transport.get_extra_info("sockname"))

    def _socketOption(self, level: int, option: int, value: int | None) -> bool:
        sock = self.transport.get_extra_info("socket")
        if value is not None:
            sock.setsockopt(level, option, value)
        return bool(sock.getsockopt(level, option))

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Set TCP_NODELAY."""
        self._socketOption(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))

    def getTcpNoDelay(self) -> bool:
        """Report TCP_NODELAY."""
        return self._socketOption(socket.IPPROTO_TCP, socket.TCP_NODELAY, None)

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """Set SO_KEEPALIVE."""
        self._socketOption(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(enabled))

    def getTcpKeepAlive(self) -> bool:
        """Report SO_KEEPALIVE."""
        return self._socketOption(socket.SOL_SOCKET, socket.SO_KEEPALIVE, None)

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Pause C{producer} while the write buffer is full."""
        if self.producer is not None:
            raise RuntimeError(f"producer {self.producer!r} was never unregistered")
        self.producer = producer
        self.streaming = streaming
        if not streaming:
            cast(IPullProducer, producer).resumeProducing()

    def unregisterProducer(self) -> None:
        """Stop telling the producer about the write buffer."""
        self.producer = None

    # IPushProducer: the connection produces what it reads.

    def pauseProducing(self) -> None:
        """Stop reading."""
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resumeProducing(self) -> None:
        """Read again."""
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def stopProducing(self) -> None:
        """Close the connection."""
        self.transport.close()


@implementer(IListeningPort)
class NativePort:
    """A listening socket served by the event loop's own server."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: IProtocolFactory,
    ) -> None:
        self.loop = loop
        self.socket = sock
        self.factory = factory
        self.server: asyncio.Server | None = None
        self.starting: asyncio.Task[asyncio.Server] | None = None

    def startListening(self) -> None:
        """Start serving once the loop runs (the socket already listens)."""
        self.factory.doStart()
        self.starting = self.loop.create_task(self._serve())

    async def _serve(self) -> asyncio.Server:
        self.server = await self.loop.create_server(
            lambda: NativeConnection(self.factory), sock=self.socket
        )
        return self.server

    def stopListening(self) -> None:
        """Stop accepting connections; established ones carry on."""
        if self.server is not None:
            self.server.close()
        else:
            if self.starting is not None:
                self.starting.cancel()
            self.socket.close()
        self.factory.doStop()

    def getHost(self) -> IPv4Address | IPv6Address:
        """The address listened on."""
        return toAddress(self.socket.getsockname())


@implementer(IStreamServerEndpoint)
class NativeTCPEndpoint:
    """Listen on TCP with the asyncio loop's own server and transports."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        port: int,
        interface: str = "",
        backlog: int = 50,
    ) -> None:
        self.loop = loop
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Bind and listen now; serve connections once the loop runs."""
        family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
        try:
            sock = socket.create_server(
                (self.interface, self.port), family=family, backlog=self.backlog
            )
        except OSError as e:
            return fail(CannotListenError(self.interface, self.port, e))
        sock.setblocking(False)
        port = NativePort(self.loop, sock, protocolFactory)
        port.startListening()
        return succeed(port)


@implementer(IStreamServerEndpoint)
class AdoptedNativeEndpoint:
    """Serve a listening socket inherited as a descriptor with the loop's server.

    The endpoint takes the descriptor over: the port it listens with owns
    it, and closes it when it stops listening (as Twisted's
    C{AdoptedStreamServerEndpoint} does with the descriptor it adopts).
    It listens once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fileno: int,
        addressFamily: socket.AddressFamily,
    ) -> None:
        self.loop = loop
        self.fileno = fileno
        self.addressFamily = addressFamily
        self.used = False

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Serve the descriptor's connections once the loop runs."""
        if self.used:
            return fail(AlreadyListened())
        self.used = True
        try:
            # No dup: the socket object owns the descriptor from now on.
            sock = socket.socket(
                self.addressFamily, socket.SOCK_STREAM, fileno=self.fileno
            )
        except OSError as e:
            return fail(CannotListenError("descriptor", self.fileno, e))
        sock.setblocking(False)
        port = NativePort(self.loop, sock, protocolFactory)
        port.startListening()
        return succeed(port)


def reactorLoop(reactor: object) -> asyncio.AbstractEventLoop:
    """The asyncio event loop C{reactor} runs on.

    Raise L{ValueError} unless C{reactor} is an asyncio reactor
    (C{twistd -r uvloop} or C{-r asyncio}): the C{aiotcp:} listeners
    need that loop to serve their connections.
    """
    if not isinstance(reactor, AsyncioSelectorReactor):
        raise ValueError(
            "aiotcp needs an asyncio reactor: run twistd -r uvloop (or -r asyncio)"
        )
    # The asyncio reactor runs the loop that is current for this thread
    # (echotwist.internals.uvloopreactor makes uvloop's the current one, and Twisted's
    # asyncio reactor sets the loop it creates as current).
    return asyncio.get_event_loop_policy().get_event_loop()


def parseNativeTCP(
    reactor: object, port: object, interface: object = "", backlog: object = "50"
) -> NativeTCPEndpoint:
    """Build the endpoint of C{aiotcp:PORT[:interface=HOST][:backlog=N]}.

    It needs an asyncio reactor (C{twistd -r uvloop} or C{-r asyncio}):
    that reactor's event loop is the one serving the connections.
    """
    loop = reactorLoop(reactor)
    return NativeTCPEndpoint(
        loop, checkPort(str(port)), str(interface), checkBacklog(str(backlog))
    )
