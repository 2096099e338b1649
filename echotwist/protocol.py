"""The TCP echo protocol and its factory.

Every byte a client sends comes back unchanged and in order.  The transport
is registered as its own streaming producer, so a client that sends without
reading pauses our reading instead of growing our write buffer without
bound; and the protocol is half-close aware, so a client that shuts its
sending side still gets every byte back before we close.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist.fastpath import sendNow
from echotwist.stats import ServerStats


def describeAddress(address: IAddress) -> tuple[str, str]:
    """Split an address into a C{(host, port)} pair of strings for logging.

    IP addresses give their host and port; a UNIX address gives its path
    (or C{"unix"} when the peer is unnamed) and an empty port.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return str(host), str(port)
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return (name or "unix"), ""


class IStreamTransport(ITransport, IConsumer, IPushProducer):
    """A stream transport that is also a consumer and a push producer.

    Every stream transport Twisted ships (TCP, UNIX, TLS) provides these;
    the echo uses the transport as its own producer.
    """


def transportKind(transport: ITransport) -> str:
    """Name the kind of C{transport} for statistics: tls, tcp or unix."""
    if ISSLTransport.providedBy(transport):
        return "tls"
    if ITCPTransport.providedBy(transport):
        return "tcp"
    return "unix"


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """Echo every byte received back to the sender (RFC 862)."""

    log = Logger()
    factory: EchoFactory

    # A server may hold tens of thousands of idle connections, so an Echo
    # keeps no per-instance dict and stores only what its close line needs;
    # the client's address is read back from the transport when logging.
    __slots__ = (
        "bytesEchoed",
        "connected",
        "factory",
        "kind",
        "startedAt",
        "transport",
    )

    def __init__(self) -> None:
        self.transport = None
        self.connected = 0
        self.bytesEchoed = 0
        self.startedAt = 0.0
        self.kind = "tcp"

    @property
    def stream(self) -> IStreamTransport:
        """The transport, as the producer/consumer it is."""
        return cast(IStreamTransport, self.transport)

    def connectionMade(self) -> None:
        """Start flow control, disable Nagle and log the client."""
        transport = self.stream
        # The transport produces (reads) and consumes (writes): when its
        # write buffer fills it pauses itself, so it stops reading from a
        # client that does not read its echo.
        transport.registerProducer(transport, True)
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        self.kind = transportKind(transport)
        self.startedAt = self.factory.clock.seconds()
        self.factory.stats.connectionOpened()
        host, port = describeAddress(transport.getPeer())
        self.log.info("Handling client {host}/{port}", host=host, port=port)

    def dataReceived(self, data: bytes) -> None:
        """Send C{data} straight back."""
        self.bytesEchoed += len(data)
        self.factory.stats.echoed(self.kind, len(data))
        # Sent at once when nothing is buffered, else buffered by the
        # transport with its flow control (see echotwist.fastpath).
        sendNow(self.stream, data)

    def readConnectionLost(self) -> None:
        """The client shut its sending side: flush what is buffered, then close."""
        self.stream.unregisterProducer()
        self.stream.loseConnection()

    def writeConnectionLost(self) -> None:
        """The client can no longer receive: nothing more can be echoed."""
        self.stream.unregisterProducer()
        self.stream.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Log how many bytes were echoed and for how long."""
        duration = self.factory.clock.seconds() - self.startedAt
        self.factory.stats.connectionClosed(duration)
        host, port = describeAddress(self.stream.getPeer())
        self.log.info(
            "Closed client {host}/{port}: {bytes} bytes echoed in {duration:.3f} s",
            host=host,
            port=port,
            bytes=self.bytesEchoed,
            duration=duration,
        )


class EchoFactory(Factory[Echo]):
    """Build L{Echo} protocols that tell time by C{clock} and count in C{stats}."""

    protocol = Echo
    noisy = False

    def __init__(self, clock: IReactorTime, stats: ServerStats | None = None) -> None:
        self.clock = clock
        self.stats = stats if stats is not None else ServerStats()
