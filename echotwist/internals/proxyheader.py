"""The PROXY protocol (versions 1 and 2) in front of a stream listener.

A C{haproxy:} listener (C{--listen haproxy:tcp:7008}) reads, at the start
of every connection, the header a proxy such as HAProxy writes there
(C{send-proxy}, C{send-proxy-v2}) to say which client the connection
carries.  The echo then meets that client as its peer: C{--allow},
C{--deny} and C{--max-per-ip} judge it, and the log names it.  A header
that names no client (HAProxy's own health checks send a v2 C{LOCAL} or
a v1 C{UNKNOWN} header) leaves the proxy itself as the peer.

Twisted's C{haproxy:} endpoint (C{twisted.protocols.haproxy}) reads the
same headers with the parsers used here, but its wrapper is not used as
it is, because it:

  - builds the wrapped protocol when the connection is made, before the
    header has arrived, with the proxy's address: echotwist's limits would
    admit or refuse the proxy, not the client, and the C{Handling client}
    line would name the proxy;
  - does not provide C{IHalfCloseableProtocol}, so on a client's
    half-close (which HAProxy passes on) Twisted closes the connection at
    once, dropping any echo still in its buffer, instead of letting the
    echo finish sending first;
  - closes a connection whose first read is shorter than 8 bytes (v1) or
    16 bytes (v2), and refuses C{PROXY UNKNOWN} without addresses, which
    the specification allows.

L{ProxyHeaderProtocol} builds the wrapped protocol only once the header
is read, for the address it names, and waits at most L{HEADER_TIMEOUT}
seconds for it.  Anyone who can connect to such a listener can claim any
address: it is for proxies only.

Twisted internals relied on (C{echotwist.test.test_proxyheader} pins each
against the installed Twisted): C{V1Parser.parse} and C{V2Parser.parse}
(in C{twisted.protocols.haproxy._v1parser} and C{_v2parser}) take one
whole header and return a C{ProxyInfo} whose C{source} and
C{destination} are addresses, or C{None} for a proxy's own connection;
they raise C{InvalidProxyHeader} (C{_exceptions}) for a bad one;
C{V2Parser.PREFIX} is the version 2 signature.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from echotwist.logging import logObserver

# How long a connection may take to send its header.  A proxy sends it
# as soon as it has connected, before any of the client's bytes.
HEADER_TIMEOUT = 10.0

V1_SIGNATURE = b"PROXY "
# The longest version 1 header, CRLF included (the specification's 107).
V1_LONGEST = 107
V2_SIGNATURE: bytes = V2Parser.PREFIX
# Signature, version and command, family and protocol, length.
V2_FIXED = 16


class BadHeader(Exception):
    """The connection does not start with a PROXY header; says why."""


@dataclass(frozen=True)
class Header:
    """A PROXY header read: whom it names, and how many bytes it took.

    C{source} and C{destination} are C{None} when the header names no
    client (v2 C{LOCAL}, v1 C{UNKNOWN}): the proxy's own connection.
    """

    source: IAddress | None
    destination: IAddress | None
    length: int


def _checkedAddress(address: object) -> IAddress | None:
    """An address from a header: an IP one checked and written in its
    short form (C{::1}, not C{0:0:0:0:0:0:0:1}), any other as it is.

    @raise BadHeader: the host is not an IP address of the address's
        family, or the port is not 0 to 65535.
    """
    if not isinstance(address, IPv4Address | IPv6Address):
        return cast(IAddress | None, address)
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        raise BadHeader(f"invalid address {address.host!r}") from None
    if (ip.version == 6) != isinstance(address, IPv6Address):
        raise BadHeader(f"address {address.host!r} of the wrong family")
    if not 0 <= address.port <= 65535:
        raise BadHeader(f"invalid port {address.port}")
    return type(address)(address.type, str(ip), address.port)


def _parsed(parse: Callable[[bytes], ProxyInfo], header: bytes) -> Header:
    try:
        info = parse(header)
    # Twisted's v1 parser lets int()'s ValueError for a bad port through.
    except (InvalidProxyHeader, ValueError):
        raise BadHeader("invalid PROXY header") from None
    return Header(
        _checkedAddress(info.source), _checkedAddress(info.destination), len(header)
    )


def _readV2(received: bytes) -> Header | None:
    """A version 2 header (C{received} starts with its signature)."""
    if len(received) < V2_FIXED:
        return None
    if received[12] >> 4 != 2:
        raise BadHeader(f"unknown PROXY protocol version {received[12] >> 4}")
    length = V2_FIXED + int.from_bytes(received[14:16], "big")
    if len(received) < length:
        return None
    return _parsed(V2Parser.parse, received[:length])


def _readV1(received: bytes) -> Header | None:
    """A version 1 header (C{received} starts with C{PROXY })."""
    end = received.find(b"\r\n", 0, V1_LONGEST)
    if end < 0:
        if len(received) >= V1_LONGEST:
            raise BadHeader(f"PROXY v1 header longer than {V1_LONGEST} bytes")
        return None
    line = received[:end]
    # The specification allows "PROXY UNKNOWN" with nothing after it;
    # Twisted's parser wants something.
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        return Header(None, None, end + 2)
    header = _parsed(V1Parser.parse, line)
    return Header(header.source, header.destination, end + 2)


def readHeader(received: bytes) -> Header | None:
    """The PROXY header (v1 or v2) at the start of C{received}.

    C{None} while C{received} is a header's beginning that is not yet
    whole; the bytes after the header (C{received[header.length:]}) are
    the client's.

    @raise BadHeader: C{received} does not begin with a valid header.
    """
    if received[: len(V2_SIGNATURE)] == V2_SIGNATURE:
        return _readV2(received)
    if received.startswith(V1_SIGNATURE):
        return _readV1(received)
    if (len(received) < len(V2_SIGNATURE) and V2_SIGNATURE.startswith(received)) or (
        len(received) < len(V1_SIGNATURE) and V1_SIGNATURE.startswith(received)
    ):
        return None
    raise BadHeader("no PROXY header")


if TYPE_CHECKING:
    # WrappingFactory is generic in the Twisted that type-checks this
    # (26.x), but not in every Twisted echotwist runs on (24.3).
    _WrappingFactory = WrappingFactory["ProxyHeaderProtocol"]
else:
    _WrappingFactory = WrappingFactory


@implementer(IHalfCloseableProtocol)
class ProxyHeaderProtocol(ProtocolWrapper):
    """Read a connection's PROXY header, then serve it as the client's.

    Until the header is whole nothing is built: the wrapped factory's
    C{buildProtocol} is then called with the client's address (the
    proxy's, for a header naming none), and the protocol it returns is
    connected to this wrapper, whose C{getPeer} and C{getHost} answer
    with the header's addresses.  A connection that does not begin with
    a valid header within the factory's C{headerTimeout} seconds is
    logged and aborted.  Half-closes are passed on to a wrapped protocol
    that provides C{IHalfCloseableProtocol}.
    """

    factory: ProxyHeaderFactory
    # Set by makeConnection, before any other event.
    transport: ITransport
    log = Logger(observer=logObserver)

    def __init__(self, factory: ProxyHeaderFactory) -> None:
        # Nothing is served before the header names the client: a
        # protocol that ignores everything stands in until then.
        ProtocolWrapper.__init__(self, factory, Protocol())
        self.header: Header | None = None
        self.received = b""
        self.deadline: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        """Take the connection, and give its header a deadline."""
        # As ProtocolWrapper.makeConnection, without connecting the
        # wrapped protocol: there is none yet.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self.deadline = self.factory.clock.callLater(
            self.factory.headerTimeout, self._timedOut
        )

    def dataReceived(self, data: bytes) -> None:
        """Read the header; pass everything after it to the wrapped protocol."""
        if self.header is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        self.received += data
        try:
            header = readHeader(self.received)
        except BadHeader as e:
            self._refuse(str(e))
            return
        if header is None:
            return
        rest, self.received = self.received[header.length :], b""
        self.header = header
        self._cancelDeadline()
        protocol = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if protocol is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = protocol
        protocol.makeConnection(self)
        if rest:
            protocol.dataReceived(rest)

    def getPeer(self) -> IAddress:
        """The client the header named, else the connection's peer."""
        if self.header is not None and self.header.source is not None:
            return self.header.source
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        """The address the header says the client connected to, else ours."""
        if self.header is not None and self.header.destination is not None:
            return self.header.destination
        return self.transport.getHost()

    def _halfCloseable(self) -> IHalfCloseableProtocol | None:
        if self.header is None:
            return None
        return IHalfCloseableProtocol(self.wrappedProtocol, None)

    def readConnectionLost(self) -> None:
        """The peer shut its sending side: tell the wrapped protocol, or close."""
        wrapped = self._halfCloseable()
        if wrapped is None:
            self.transport.loseConnection()
        else:
            wrapped.readConnectionLost()

    def writeConnectionLost(self) -> None:
        """The peer can no longer receive: tell the wrapped protocol, or close."""
        wrapped = self._halfCloseable()
        if wrapped is None:
            self.transport.loseConnection()
        else:
            wrapped.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the connection; tell the wrapped protocol, if there is one."""
        self._cancelDeadline()
        self.factory.unregisterProtocol(self)
        if self.header is not None:
            self.wrappedProtocol.connectionLost(reason)

    def _cancelDeadline(self) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.deadline = None

    def _timedOut(self) -> None:
        self.deadline = None
        self._refuse(f"no PROXY header within {self.factory.headerTimeout:g} s")

    def _refuse(self, why: str) -> None:
        peer = self.transport.getPeer()
        host = str(getattr(peer, "host", "unix"))
        port = str(getattr(peer, "port", ""))
        self.log.info(
            "Refused connection from {host}/{port}: {why}",
            host=host,
            port=port,
            client=f"{host}/{port}",
            why=why,
            reason="proxy-header",
        )
        cast(ITCPTransport, self.transport).abortConnection()


class ProxyHeaderFactory(_WrappingFactory):
    """Wrap C{wrappedFactory}'s connections in L{ProxyHeaderProtocol}.

    C{clock} times the header's deadline, C{headerTimeout} seconds.
    """

    protocol = ProxyHeaderProtocol
    # The wrapped factory says what it needs to; this one adds nothing.
    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime,
        headerTimeout: float = HEADER_TIMEOUT,
    ) -> None:
        # Typed through the base class: mypy cannot match this subclass to
        # WrappingFactory's own type parameter.
        WrappingFactory.__init__(cast("WrappingFactory[Any]", self), wrappedFactory)
        self.clock = clock
        self.headerTimeout = headerTimeout

    def buildProtocol(self, addr: IAddress | None) -> ProxyHeaderProtocol:
        """A wrapper that waits for the header; the client's protocol comes later."""
        return ProxyHeaderProtocol(self)


@implementer(IStreamServerEndpoint)
class ProxyHeaderEndpoint:
    """Listen on C{endpoint}, every connection starting with a PROXY header."""

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        clock: IReactorTime,
        headerTimeout: float = HEADER_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.headerTimeout = headerTimeout

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Listen with C{protocolFactory} behind a L{ProxyHeaderFactory}."""
        return self.endpoint.listen(
            ProxyHeaderFactory(protocolFactory, self.clock, self.headerTimeout)
        )
