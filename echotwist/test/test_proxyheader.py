"""Tests for C{haproxy:} listeners: L{echotwist.internals.proxyheader}, the
descriptions that ask for them, and the Twisted internals they rely on.

No sockets, no real time: string transports, a memory reactor and
L{task.Clock}.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.trial.unittest import SynchronousTestCase

from echotwist.endpoints import (
    DEFAULT_BACKLOG,
    BadEndpoint,
    formatListening,
    normalizeListen,
    proxiedDescription,
)
from echotwist.internals.proxyheader import (
    HEADER_TIMEOUT,
    BadHeader,
    Header,
    ProxyHeaderEndpoint,
    ProxyHeaderFactory,
    ProxyHeaderProtocol,
    readHeader,
)
from echotwist.logging import logObserver
from echotwist.protocol import Echo, EchoFactory
from echotwist.server.limits import AddressPolicy, ConnectionLimits, parseNetwork
from echotwist.tap import Options
from echotwist.test.test_hardening import Probe
from echotwist.test.test_protocol import TCPStringTransport

# The proxy's own address, as the echo server's kernel sees it.
PROXY = IPv4Address("TCP", "10.0.0.2", 40000)


def v1(source: str = "192.0.2.7", sourcePort: int = 5555) -> bytes:
    """A version 1 header for a TCP4 client at C{source}:C{sourcePort}."""
    return f"PROXY TCP4 {source} 10.0.0.9 {sourcePort} 7\r\n".encode()


def v2(
    source: str = "192.0.2.7",
    sourcePort: int = 5555,
    destination: str = "10.0.0.9",
    command: int = 1,
    tlv: bytes = b"",
) -> bytes:
    """A version 2 header (C{command} 1: PROXY, 0: LOCAL) for a TCP client."""
    family = 0x21 if ":" in source else 0x11
    packed = socket.inet_pton(
        socket.AF_INET6 if ":" in source else socket.AF_INET, source
    ) + socket.inet_pton(
        socket.AF_INET6 if ":" in destination else socket.AF_INET, destination
    )
    body = packed + struct.pack("!HH", sourcePort, 7) + tlv
    return (
        V2Parser.PREFIX
        + bytes([0x20 | command, family])
        + struct.pack("!H", len(body))
        + body
    )


class ReadHeaderTests(SynchronousTestCase):
    """L{readHeader} reads v1 and v2 headers, whole or in pieces, or refuses."""

    def test_v1(self) -> None:
        """A v1 header names the client and the address it connected to."""
        header = readHeader(v1() + b"hello")
        self.assertEqual(
            header,
            Header(
                IPv4Address("TCP", "192.0.2.7", 5555),
                IPv4Address("TCP", "10.0.0.9", 7),
                len(v1()),
            ),
        )

    def test_v1IPv6(self) -> None:
        """A v1 TCP6 header gives an IPv6 client, in its short form."""
        line = b"PROXY TCP6 2001:db8:0:0::1 ::1 5555 7\r\n"
        header = readHeader(line)
        assert header is not None
        self.assertEqual(header.source, IPv6Address("TCP", "2001:db8::1", 5555))

    def test_v1Unknown(self) -> None:
        """C{PROXY UNKNOWN}, bare or with addresses, names no client."""
        for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"):
            self.assertEqual(readHeader(line + b"x"), Header(None, None, len(line)))

    def test_v2(self) -> None:
        """A v2 PROXY header (with a TLV after the addresses) names the client."""
        header = readHeader(v2(tlv=b"\x04\x00\x01z") + b"hello")
        self.assertEqual(
            header,
            Header(
                IPv4Address("TCP", "192.0.2.7", 5555),
                IPv4Address("TCP", "10.0.0.9", 7),
                len(v2(tlv=b"\x04\x00\x01z")),
            ),
        )

    def test_v2IPv6(self) -> None:
        """A v2 IPv6 client is written in its short form (C{::1})."""
        header = readHeader(v2("2001:db8::1", destination="::1"))
        assert header is not None
        self.assertEqual(header.source, IPv6Address("TCP", "2001:db8::1", 5555))

    def test_v2Local(self) -> None:
        """A v2 LOCAL header (a proxy's health check) names no client."""
        self.assertEqual(
            readHeader(v2(command=0)), Header(None, None, len(v2(command=0)))
        )

    def test_pieces(self) -> None:
        """Every beginning of a header is not yet a header; the whole one is."""
        for whole in (v1(), v2(), b"PROXY UNKNOWN\r\n"):
            for end in range(len(whole)):
                self.assertIsNone(readHeader(whole[:end]), (whole, end))
            self.assertIsNotNone(readHeader(whole))

    def test_refused(self) -> None:
        """What is not a valid header is refused, saying why."""
        cases = {
            b"hello": "no PROXY header",
            b"GET / HTTP/1.1\r\n": "no PROXY header",
            b"PROXY TCP4 " + b"1" * 120: "longer than 107 bytes",
            b"PROXY TCP4 192.0.2.7 10.0.0.9 99999 7\r\n": "invalid port 99999",
            b"PROXY TCP4 192.0.2.7 10.0.0.9 x 7\r\n": "invalid PROXY header",
            b"PROXY TCP4 999.0.2.7 10.0.0.9 1 7\r\n": "invalid address '999.0.2.7'",
            b"PROXY TCP4 ::1 10.0.0.9 1 7\r\n": "wrong family",
            b"PROXY UDP4 192.0.2.7 10.0.0.9 1 7\r\n": "invalid PROXY header",
            V2Parser.PREFIX + b"\x11\x11\x00\x00": "unknown PROXY protocol version 1",
        }
        for received, why in cases.items():
            with self.assertRaises(BadHeader, msg=repr(received)) as caught:
                readHeader(received)
            self.assertIn(why, str(caught.exception))


class Connection:
    """A connection from the proxy through a L{ProxyHeaderFactory} to echo."""

    def __init__(self, factory: ProxyHeaderFactory, peer: IAddress = PROXY) -> None:
        self.wrapper = factory.buildProtocol(peer)
        self.transport = TCPStringTransport(peerAddress=peer)
        self.transport.protocol = self.wrapper
        self.wrapper.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """Deliver C{data}; return what came back since the last call."""
        self.wrapper.dataReceived(data)
        echoed = self.transport.value()
        self.transport.clear()
        return bytes(echoed)

    @property
    def echo(self) -> Echo:
        """The echo protocol serving the connection."""
        protocol = self.wrapper.wrappedProtocol
        assert isinstance(protocol, Echo), protocol
        return protocol


def proxied(
    limits: ConnectionLimits | None = None,
) -> tuple[ProxyHeaderFactory, EchoFactory, Clock]:
    """An echo factory behind a L{ProxyHeaderFactory}, on one clock."""
    clock = Clock()
    echo = EchoFactory(clock=clock, limits=limits, unsentBytes=Probe())
    return ProxyHeaderFactory(echo, clock), echo, clock


class ProxyHeaderProtocolTests(SynchronousTestCase):
    """The echo meets the client the header names, once the header is read."""

    def test_nothingBeforeTheHeader(self) -> None:
        """Until the header is whole no echo is built and nothing comes back."""
        factory, echo, _ = proxied()
        connection = Connection(factory)
        self.assertEqual(connection.send(v1()[:10]), b"")
        self.assertEqual(echo.connections, {})

    def test_echoesForTheClient(self) -> None:
        """After the header, bytes are echoed and the peer is the client."""
        factory, echo, _ = proxied()
        connection = Connection(factory)
        with capturedLogs() as events:
            self.assertEqual(connection.send(v1() + b"hello"), b"hello")
        self.assertEqual(connection.send(b" world"), b" world")
        self.assertEqual(list(echo.connections), [connection.echo])
        self.assertEqual(
            connection.echo.transport.getPeer(), IPv4Address("TCP", "192.0.2.7", 5555)
        )
        self.assertEqual(
            connection.echo.transport.getHost(), IPv4Address("TCP", "10.0.0.9", 7)
        )
        self.assertIn("192.0.2.7/5555", [e.get("client") for e in events])
        # TCP options reach the real transport.
        self.assertTrue(connection.transport.noDelay)

    def test_headerByteByByte(self) -> None:
        """A header that arrives a byte at a time is read all the same."""
        factory, _, _ = proxied()
        connection = Connection(factory)
        for byte in v2() + b"ab":
            connection.wrapper.dataReceived(bytes([byte]))
        self.assertEqual(connection.transport.value(), b"ab")
        self.assertEqual(
            connection.echo.transport.getPeer(), IPv4Address("TCP", "192.0.2.7", 5555)
        )

    def test_localIsTheProxy(self) -> None:
        """A LOCAL header leaves the proxy as the peer (a health check)."""
        factory, _, _ = proxied()
        connection = Connection(factory)
        self.assertEqual(connection.send(v2(command=0) + b"check"), b"check")
        self.assertEqual(connection.echo.transport.getPeer(), PROXY)

    def test_denyJudgesTheClient(self) -> None:
        """C{--deny} refuses a client by the header's address, not the proxy's."""
        limits = ConnectionLimits(
            policy=AddressPolicy(
                allow=[parseNetwork("10.0.0.0/8"), parseNetwork("192.0.2.0/24")],
                deny=[parseNetwork("192.0.2.66/32")],
            )
        )
        factory, echo, _ = proxied(limits)
        refused = Connection(factory)
        self.assertEqual(refused.send(v1("192.0.2.66") + b"x"), b"")
        self.assertTrue(refused.transport.disconnected)
        self.assertEqual(echo.stats.rejected["denied"], 1)
        served = Connection(factory)
        self.assertEqual(served.send(v1("192.0.2.7") + b"x"), b"x")

    def test_allowJudgesTheClient(self) -> None:
        """With only the proxy's network allowed, proxied clients are refused."""
        limits = ConnectionLimits(
            policy=AddressPolicy(allow=[parseNetwork("10.0.0.0/8")], deny=[])
        )
        factory, echo, _ = proxied(limits)
        self.assertEqual(Connection(factory).send(v1() + b"x"), b"")
        self.assertEqual(echo.stats.rejected["denied"], 1)

    def test_perIpCountsClients(self) -> None:
        """C{--max-per-ip} counts each client's address, all through one proxy."""
        factory, echo, _ = proxied(ConnectionLimits(maxPerIp=1))
        first = Connection(factory)
        self.assertEqual(first.send(v1("192.0.2.7", 1) + b"a"), b"a")
        second = Connection(factory)
        self.assertEqual(second.send(v1("192.0.2.7", 2) + b"b"), b"")
        self.assertEqual(echo.stats.rejected["per-ip"], 1)
        other = Connection(factory)
        self.assertEqual(other.send(v1("192.0.2.8", 3) + b"c"), b"c")
        # The first client leaves: its address may connect again.
        first.transport.loseConnection()
        again = Connection(factory)
        self.assertEqual(again.send(v1("192.0.2.7", 4) + b"d"), b"d")

    def test_halfClose(self) -> None:
        """A half-close reaches the echo, which flushes, then closes."""
        factory, _, _ = proxied()
        connection = Connection(factory)
        self.assertTrue(IHalfCloseableProtocol.providedBy(connection.wrapper))
        self.assertEqual(connection.send(v1() + b"last words"), b"last words")
        connection.wrapper.readConnectionLost()
        self.assertFalse(connection.transport.connected)
        self.assertFalse(connection.transport.disconnected, "aborted")
        self.assertIsNone(connection.transport.producer)

    def test_halfCloseBeforeHeader(self) -> None:
        """A half-close before any header closes the connection."""
        factory, echo, _ = proxied()
        connection = Connection(factory)
        connection.wrapper.readConnectionLost()
        self.assertFalse(connection.transport.connected)
        self.assertEqual(echo.connections, {})

    def test_noHeaderInTime(self) -> None:
        """A connection without a header within the timeout is aborted, logged."""
        factory, echo, clock = proxied()
        connection = Connection(factory)
        connection.send(b"PROXY TCP4")
        clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertFalse(connection.transport.disconnected)
        with capturedLogs() as events:
            clock.advance(0.1)
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(
            [e.get("why") for e in events],
            [f"no PROXY header within {HEADER_TIMEOUT:g} s"],
        )
        self.assertEqual(echo.connections, {})
        self.assertEqual(factory.protocols, {})

    def test_headerStopsTheTimer(self) -> None:
        """Once the header is read its deadline is gone."""
        factory, _, clock = proxied()
        Connection(factory).send(v1())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_logsThroughEchotwist(self) -> None:
        """Its log lines go through echotwist's observer (--log-level applies)."""
        self.assertIs(ProxyHeaderProtocol.log.observer, logObserver)

    def test_garbageAborted(self) -> None:
        """Bytes that are no PROXY header abort the connection, unserved."""
        factory, echo, clock = proxied()
        connection = Connection(factory)
        with capturedLogs() as events:
            self.assertEqual(connection.send(b"hello\r\n"), b"")
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(
            [(e.get("client"), e.get("why")) for e in events],
            [("10.0.0.2/40000", "no PROXY header")],
        )
        self.assertEqual(echo.connections, {})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closedByTheClient(self) -> None:
        """A close reaches the echo: the connection is forgotten and counted."""
        factory, echo, _ = proxied()
        connection = Connection(factory)
        connection.send(v1() + b"abc")
        connection.transport.loseConnection()
        self.assertEqual(echo.connections, {})
        self.assertEqual(echo.stats.bytesEchoed["tcp"], 3)
        self.assertEqual(factory.protocols, {})


class ProxyHeaderEndpointTests(SynchronousTestCase):
    """L{ProxyHeaderEndpoint} listens with the factory behind the header reader."""

    def test_listen(self) -> None:
        """The wrapped endpoint listens with a L{ProxyHeaderFactory}."""
        reactor = MemoryReactorClock()
        factory = Factory.forProtocol(Protocol)
        endpoint = ProxyHeaderEndpoint(TCP4ServerEndpoint(reactor, 7008), reactor, 3.0)
        self.successResultOf(endpoint.listen(factory))
        [(port, listening, _, _)] = reactor.tcpServers
        self.assertEqual(port, 7008)
        assert isinstance(listening, ProxyHeaderFactory)
        self.assertIs(listening.wrappedFactory, factory)
        self.assertEqual(listening.headerTimeout, 3.0)
        self.assertIsInstance(listening.buildProtocol(PROXY), ProxyHeaderProtocol)


class DescriptionTests(SynchronousTestCase):
    """C{haproxy:DESCRIPTION} normalises what it wraps, and refuses some."""

    def test_normalized(self) -> None:
        """The wrapped description is checked and completed as on its own."""
        self.assertEqual(
            normalizeListen("haproxy:tcp:7008:interface=10.0.0.1"),
            f"haproxy:tcp:7008:interface=10.0.0.1:backlog={DEFAULT_BACKLOG}",
        )
        self.assertEqual(
            normalizeListen("HAProxy:7008"),
            f"haproxy:tcp:7008:backlog={DEFAULT_BACKLOG}",
        )
        self.assertEqual(proxiedDescription("haproxy:unix:/s"), "unix:/s")
        self.assertIsNone(proxiedDescription("tcp:7008"))

    def test_refused(self) -> None:
        """An empty, TLS, nested or bad wrapped description is one line's error."""
        cases = {
            "haproxy:": "needs the listener it wraps",
            "haproxy:ssl:5443:privateKey=k.pem": "cannot wrap ssl:",
            "haproxy:tls:/pems:5443": "cannot wrap tls:",
            "haproxy:haproxy:tcp:1": "cannot wrap another haproxy:",
            "haproxy:tcp:99999": "99999",
        }
        for text, why in cases.items():
            with self.assertRaises(BadEndpoint, msg=text) as caught:
                normalizeListen(text)
            self.assertIn(why, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))

    def test_formatListening(self) -> None:
        """A PROXY listener is logged as haproxy:tcp:HOST:PORT."""
        address = IPv4Address("TCP", "127.0.0.1", 7008)
        self.assertEqual(
            formatListening("haproxy:tcp:0", address), "haproxy:tcp:127.0.0.1:7008"
        )
        self.assertEqual(formatListening("tcp:0", address), "tcp:127.0.0.1:7008")

    def test_options(self) -> None:
        """C{--listen haproxy:...} builds a L{ProxyHeaderEndpoint} on the reactor."""
        reactor = MemoryReactorClock()
        options = Options(reactor=reactor)
        options.parseOptions(["--listen", "haproxy:tcp:0:interface=127.0.0.1"])
        [(description, endpoint)] = options["endpoints"]
        self.assertTrue(description.startswith("haproxy:tcp:0:interface=127.0.0.1"))
        assert isinstance(endpoint, ProxyHeaderEndpoint)
        self.assertIs(endpoint.clock, reactor)
        self.successResultOf(endpoint.listen(Factory.forProtocol(Protocol)))
        self.assertEqual(reactor.tcpServers[0][3], "127.0.0.1")


class TwistedInternalsTests(SynchronousTestCase):
    """What L{echotwist.internals.proxyheader} takes from Twisted holds."""

    def test_v1Parse(self) -> None:
        """C{V1Parser.parse} takes one line without CRLF to a C{ProxyInfo}."""
        info = V1Parser.parse(b"PROXY TCP4 192.0.2.7 10.0.0.9 5555 7")
        self.assertEqual(info.source, IPv4Address("TCP", "192.0.2.7", 5555))
        self.assertEqual(info.destination, IPv4Address("TCP", "10.0.0.9", 7))
        with self.assertRaises(InvalidProxyHeader):
            V1Parser.parse(b"PROXX TCP4 192.0.2.7 10.0.0.9 5555 7")

    def test_v2Parse(self) -> None:
        """C{V2Parser.parse} takes one whole header; LOCAL names no one."""
        self.assertEqual(V2Parser.PREFIX, b"\r\n\r\n\x00\r\nQUIT\n")
        info = V2Parser.parse(v2("2001:db8::1", destination="::1"))
        source = cast(IPv6Address, info.source)
        self.assertEqual(
            ipaddress.ip_address(source.host), ipaddress.ip_address("2001:db8::1")
        )
        local = V2Parser.parse(v2(command=0))
        self.assertEqual((local.source, local.destination), (None, None))
        with self.assertRaises(InvalidProxyHeader):
            V2Parser.parse(b"\x00" * 16)

    def test_twistedWrapperBuildsEarly(self) -> None:
        """Twisted's own wrapper builds the protocol with the proxy's address,
        before any header: why echotwist reads the header itself.
        """
        seen: list[Any] = []

        class Recording(Factory[Protocol]):
            def buildProtocol(self, addr: IAddress | None) -> Protocol:
                seen.append(addr)
                return Protocol()

        HAProxyWrappingFactory(Recording()).buildProtocol(PROXY)
        self.assertEqual(seen, [PROXY])
