"""The TCP echo protocol and its factory.

Every byte a client sends comes back unchanged and in order.  The transport
is registered as its own streaming producer, so a client that sends without
reading pauses our reading instead of growing our write buffer without
bound; and the protocol is half-close aware, so a client that shuts its
sending side still gets every byte back before we close.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
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

from echotwist.logging import logObserver
from echotwist.server.limits import ConnectionLimits, idleSweepInterval, isIdle
from echotwist.server.sockets import unsentBytes
from echotwist.server.stats import ServerStats


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

    log = Logger(observer=logObserver)
    factory: EchoFactory

    # A server may hold tens of thousands of idle connections, so an Echo
    # stores only what it needs, in slots (its instance dict, which every
    # Protocol subclass has, stays empty and is never created); the
    # client's address is read back from the transport when logging.
    __slots__ = (
        "admitted",
        "admittedHost",
        "bytesEchoed",
        "closeReason",
        "connected",
        "factory",
        "kind",
        "lastActive",
        "lastEchoed",
        "lastUnsent",
        "startedAt",
        "transport",
    )

    # Set by makeConnection, before any other event.
    transport: IStreamTransport

    def __init__(self) -> None:
        self.connected = 0
        self.bytesEchoed = 0
        self.startedAt = 0.0
        self.kind = "tcp"
        # What had been echoed when the idle check last looked: any read
        # since (and so any echo write) is traffic.
        self.lastEchoed = 0
        # When the factory's idle check last saw traffic on this connection.
        self.lastActive = 0.0
        self.lastUnsent = 0
        # The host this connection was admitted for by the factory's limits.
        self.admittedHost: str | None = None
        self.admitted = False
        # Why we closed the connection ourselves (idle, shutdown), if we did.
        self.closeReason: str | None = None

    def connectionMade(self) -> None:
        """Start flow control, disable Nagle and log the client."""
        transport = self.transport
        # The transport produces (reads) and consumes (writes): when its
        # write buffer fills it pauses itself, so it stops reading from a
        # client that does not read its echo.
        transport.registerProducer(transport, True)
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        self.kind = transportKind(transport)
        self.startedAt = self.lastActive = self.factory.clock.seconds()
        self.factory.stats.connectionOpened()
        self.log.info("Handling client {host}/{port}", **self.peerFields())
        self.factory.connectionStarted(self)

    def peerFields(self) -> dict[str, str]:
        """The client's C{host}, C{port} and C{client} (host/port) log fields.

        Read from the transport when logging rather than kept per
        connection, so that idle connections stay small.
        """
        host, port = describeAddress(self.transport.getPeer())
        return {"host": host, "port": port, "client": f"{host}/{port}"}

    def checkIdle(self, now: float, timeout: float) -> None:
        """Abort the connection if it has had no traffic for C{timeout} s.

        Called by the factory's shared idle check.  Traffic is a read
        (every echo write happens in a read) or a change in what the kernel
        still holds unsent, so a client slowly reading a long echo is not
        idle while one that never reads is.
        """
        traffic = self.bytesEchoed != self.lastEchoed
        self.lastEchoed = self.bytesEchoed
        unsent = self.factory.unsentBytes(self.transport)
        if unsent is not None and unsent != self.lastUnsent:
            traffic = True
            self.lastUnsent = unsent
        if traffic:
            self.lastActive = now
            return
        if not isIdle(now, self.lastActive, timeout):
            return
        self.log.info(
            "Idle client {host}/{port}: no traffic for {timeout:g} s, aborting",
            **self.peerFields(),
            timeout=timeout,
            reason="idle",
        )
        self.abort("idle")

    def abort(self, reason: str) -> None:
        """Close at once for C{reason}, discarding anything not yet sent."""
        self.closeReason = reason
        cast(ITCPTransport, self.transport).abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """Send C{data} straight back, and count it."""
        self.bytesEchoed += len(data)
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        """The client shut its sending side: flush what is buffered, then close."""
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """The client can no longer receive: nothing more can be echoed."""
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Log how many bytes were echoed and for how long."""
        duration = self.factory.clock.seconds() - self.startedAt
        self.factory.stats.connectionClosed(duration)
        self.factory.stats.echoed(self.kind, self.bytesEchoed)
        self.factory.connectionEnded(self)
        self.log.info(
            "Closed client {host}/{port}: {bytes} bytes echoed in {duration:.3f} s",
            **self.peerFields(),
            bytes=self.bytesEchoed,
            duration=duration,
            reason=self.closeReason
            or ("done" if reason.check(ConnectionDone) else "lost"),
        )


class Rejected(Protocol):
    """A protocol for a connection that must not be served: abort it at once.

    Returning C{None} from C{buildProtocol} would close a plain TCP
    connection just as well, but wrapping factories (TLS) cannot handle
    C{None}; this works behind every listener.
    """

    def makeConnection(self, transport: ITransport) -> None:
        """Abort instead of connecting."""
        cast(ITCPTransport, transport).abortConnection()


class EchoFactory(Factory[Echo]):
    """Build L{Echo} protocols that tell time by C{clock} and count in C{stats}.

    With C{limits}, each new client is first admitted by them; a rejected
    one is logged, counted in C{stats.rejected} by reason and closed at
    once.  With a positive C{idleTimeout}, connections without traffic for
    that long are aborted.  L{drain} lets the open connections finish.
    """

    protocol = Echo
    noisy = False
    log = Logger(observer=logObserver)

    def __init__(
        self,
        clock: IReactorTime,
        stats: ServerStats | None = None,
        limits: ConnectionLimits | None = None,
        idleTimeout: float = 0.0,
        unsentBytes: Callable[[ITransport], int | None] = unsentBytes,
    ) -> None:
        self.clock = clock
        self.stats = stats if stats is not None else ServerStats()
        self.limits = limits
        self.idleTimeout = idleTimeout
        self.unsentBytes = unsentBytes
        # A dict used as an ordered set: at ten thousand connections it
        # takes about half the memory of a set, which grows fourfold.
        self.connections: dict[Echo, None] = {}
        self.stats.addLiveSource(self._liveBytes)
        self.idleCheck: IDelayedCall | None = None
        self.draining = False
        self._drained: list[Deferred[None]] = []

    # Factory[Echo].buildProtocol is typed to return an Echo; a refused
    # client gets a Rejected instead, which Twisted's typing cannot express.
    def buildProtocol(self, addr: IAddress | None) -> Echo | Rejected:  # type: ignore[override]
        """Admit the client at C{addr} under the limits, or reject it."""
        host = getattr(addr, "host", None)
        if self.limits is not None:
            reason = self.limits.admit(host)
            if reason is not None:
                self.stats.reject(reason)
                client = describeAddress(addr) if addr is not None else ("", "")
                self.log.info(
                    "Rejected client {host}/{port}: {reason}",
                    client="/".join(client),
                    host=client[0],
                    port=client[1],
                    reason=reason,
                )
                return Rejected()
        protocol = Factory.buildProtocol(self, addr)
        assert isinstance(protocol, Echo)
        protocol.admittedHost = host
        protocol.admitted = self.limits is not None
        return protocol

    def _liveBytes(self) -> Iterator[tuple[str, int]]:
        return ((p.kind, p.bytesEchoed) for p in self.connections)

    def connectionStarted(self, protocol: Echo) -> None:
        """Track a served connection; start the shared idle check if needed."""
        self.connections[protocol] = None
        if self.idleTimeout > 0 and self.idleCheck is None:
            self.idleCheck = self.clock.callLater(
                idleSweepInterval(self.idleTimeout), self._checkIdle
            )

    def _checkIdle(self) -> None:
        # One timer for every connection (not one each): a server holding
        # many idle connections pays a flag per connection, not a timer.
        self.idleCheck = None
        now = self.clock.seconds()
        for protocol in list(self.connections):
            protocol.checkIdle(now, self.idleTimeout)
        if self.connections and self.idleCheck is None:
            self.idleCheck = self.clock.callLater(
                idleSweepInterval(self.idleTimeout), self._checkIdle
            )

    def connectionEnded(self, protocol: Echo) -> None:
        """Forget a finished connection; finish a drain when it was the last."""
        self.connections.pop(protocol, None)
        if not self.connections and self.idleCheck is not None:
            self.idleCheck.cancel()
            self.idleCheck = None
        if protocol.admitted and self.limits is not None:
            protocol.admitted = False
            self.limits.release(protocol.admittedHost)
        if self.draining and not self.connections:
            drained, self._drained = self._drained, []
            for waiting in drained:
                waiting.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """Let open connections finish for up to C{timeout} s, then abort them.

        The result fires once no connection is left.  Connections keep
        echoing (and flushing) normally meanwhile; only those still open
        when the time is up are aborted.
        """
        self.draining = True
        if not self.connections:
            return succeed(None)
        self.log.info(
            "Draining {count} connections for up to {timeout:g} s",
            count=len(self.connections),
            timeout=timeout,
        )
        waiting: Deferred[None] = Deferred()
        self._drained.append(waiting)
        deadline = self.clock.callLater(timeout, self._abortAll)

        def stopDeadline(result: None) -> None:
            if deadline.active():
                deadline.cancel()
            return result

        return waiting.addCallback(stopDeadline)

    def _abortAll(self) -> None:
        self.log.info(
            "Shutdown timeout: aborting {count} connections",
            count=len(self.connections),
            reason="shutdown",
        )
        for protocol in list(self.connections):
            protocol.abort("shutdown")
