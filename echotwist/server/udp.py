"""UDP echo (RFC 862) and the guard that keeps it from being a reflector.

A UDP echo service answers whoever the source address of a datagram
claims to be, so a forged source turns it into a reflector: two echo
services aimed at each other loop forever (CVE-1999-0103, the echo/chargen
loop), and a flood with a victim's address as its source is bounced at the
victim.  L{ReflectionGuard} decides, with no I/O, which datagrams may be
answered; L{DatagramEcho} is the small protocol that asks it, and tells it
where it listens and what it echoed.
"""

from __future__ import annotations

import errno
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echotwist.endpoints import BadEndpoint, splitDescription
from echotwist.logging import logObserver
from echotwist.parsing import parseListenPort
from echotwist.server.limits import Address, parseAddress
from echotwist.server.stats import ServerStats

# The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes).
MAX_DATAGRAM = 65507

# What listenUDP is told to read per datagram.  Its default (8192) would
# silently cut longer datagrams short; no UDP datagram can be longer than
# its 16-bit length field allows, so with this size nothing is truncated.
READ_SIZE = 65535

# Source ports below this are where the classic UDP services live (echo 7,
# daytime 13, qotd 17, chargen 19...); a datagram "from" one of them is
# either forged or from a service that would answer our echo in turn.
FIRST_UNPRIVILEGED_PORT = 1024

DEFAULT_RATE = 1000.0

# How many sources the rate limiter remembers.  A flood with forged,
# ever-changing source addresses must not grow memory without bound, so
# beyond this the least recently seen source is forgotten.  A full table
# measured about 6 MiB of resident memory on CPython 3.11.
DEFAULT_MAX_SOURCES = 16384

# How long (seconds) what was echoed to a peer is remembered: the same
# datagram coming back from that peer sooner is taken for our own echo,
# reflected by another echo service.  Reflectors on one LAN or on loopback
# send it back in well under a millisecond, so 0.1 s breaks their loop
# after one round with a hundredfold margin.  A loop whose round trip is
# longer is not broken by this rule, but goes round at most ten times a
# second per forged datagram and meets --udp-rate.  The window is also the
# cost: a client that repeats one datagram from one port more than ten
# times a second loses replies (echotwist's ping sends each probe from a
# port of its own, so it never does).
DEFAULT_ECHO_WINDOW = 0.1

# How many echoes are remembered.  Only echoes younger than the window
# matter, so this covers a whole window up to 163840 echoes a second; at
# higher rates the oldest are forgotten sooner, and a loop is still caught
# if it comes round before then (16384 echoes after ours).
DEFAULT_MAX_ECHOES = 16384

# Drop reasons, as counted in ServerStats.udpDropped.
PRIVILEGED_PORT = "privileged-port"
BROADCAST = "broadcast"
MULTICAST = "multicast"
UNSPECIFIED = "unspecified"
OWN_ADDRESS = "own-address"
REFLECTED_ECHO = "reflected-echo"
RATE = "rate"
SEND_FAILED = "send-failed"
DROP_REASONS = (
    PRIVILEGED_PORT,
    BROADCAST,
    MULTICAST,
    UNSPECIFIED,
    OWN_ADDRESS,
    REFLECTED_ECHO,
    RATE,
    SEND_FAILED,
)

_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class UDPListen:
    """Where to listen for datagrams: C{port} on C{interface} ("" = all IPv4)."""

    description: str
    port: int
    interface: str


def parseUDP(text: str) -> UDPListen:
    r"""Parse a C{--udp} value: C{PORT} or C{udp:PORT[:interface=ADDR]}.

    A bare number listens on every IPv4 address.  ADDR is an IPv4 or IPv6
    address literal; its colons may be escaped (C{\:}) as in Twisted's
    endpoint descriptions, or left as they are since the interface comes
    last.  Raise L{BadEndpoint} with a one-line reason for anything else.
    """
    text = text.strip()
    if not text:
        raise BadEndpoint("empty UDP description")
    if ":" not in text:
        return UDPListen(text, _checkUDPPort(text), "")
    # The interface comes last: its colons need no escaping.
    head, _, given = text.partition(":interface=")
    parts = splitDescription(head)
    if parts.kind != "udp" or len(parts.positional) + len(parts.keywords) != 1:
        raise BadEndpoint(
            f"invalid UDP description {text!r}: expected PORT or"
            " udp:PORT:interface=ADDR"
        )
    port = _checkUDPPort(parts.argument("port", 0) or "")
    if head != text and given == "":
        raise BadEndpoint(f"invalid UDP description {text!r}: empty interface")
    interface = given.replace("\\:", ":")
    if interface.startswith("[") and interface.endswith("]"):
        interface = interface[1:-1]
    if interface:
        try:
            interface = str(ipaddress.ip_address(interface))
        except ValueError:
            raise BadEndpoint(
                f"invalid UDP interface {interface!r} in {text!r}:"
                " not an IPv4 or IPv6 address"
            ) from None
    return UDPListen(text, port, interface)


def _checkUDPPort(text: str) -> int:
    try:
        return parseListenPort(text, "UDP port")
    except ValueError as e:
        raise BadEndpoint(str(e)) from None


def classifySource(host: str, port: int) -> str | None:
    """Return why a datagram from C{host}/C{port} must not be answered.

    The reason is one of L{PRIVILEGED_PORT}, L{BROADCAST}, L{MULTICAST},
    L{UNSPECIFIED}; L{None} means the source may be answered as far as its
    address goes.  An IPv4 address mapped into IPv6 (a dual-stack socket)
    is judged as the IPv4 address it is.
    """
    if port < FIRST_UNPRIVILEGED_PORT:
        return PRIVILEGED_PORT
    address = parseAddress(host)
    if address is None:
        # Sockets report addresses as literals; anything else is not an
        # address we can safely answer.
        return UNSPECIFIED
    if address.is_unspecified:
        return UNSPECIFIED
    if address == _LIMITED_BROADCAST:
        return BROADCAST
    if address.is_multicast:
        return MULTICAST
    return None


class _Bucket:
    """One source's tokens and when they were last counted."""

    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBuckets:
    """A token bucket per key, in a table of bounded size.

    Each key may spend C{rate} tokens a second, with bursts of up to
    C{burst} (default: one second's worth).  The table holds at most
    C{maxKeys} buckets; when a new key needs room, the least recently used
    bucket is forgotten.  A forgotten source starts again with a full
    bucket, which costs it at most one burst, while memory stays bounded
    however many forged sources a flood uses.  (Written here rather than
    taken from Twisted: C{twisted.protocols.htb} shapes TCP bandwidth and
    keeps one bucket per peer without a bound.)
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        burst: float | None = None,
        maxKeys: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if maxKeys < 1:
            raise ValueError("maxKeys must be at least 1")
        self.clock = clock
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.maxKeys = maxKeys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str) -> bool:
        """Take one token from C{key}'s bucket; say whether there was one."""
        now = self.clock.seconds()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.maxKeys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
            # max() keeps a clock that steps backwards from minting tokens.
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False


class RecentEchoes:
    """The datagrams echoed in the last C{window} seconds, and to whom.

    Each echo is kept as its peer (host, port), a digest of its bytes and
    when it was sent; L{isReturning} says whether a datagram from a peer is
    one that was echoed to that same peer within the window.  Every echo is
    kept, not only a peer's last one: a peer's last echo alone is defeated
    by two forged datagrams, whose echoes overwrite each other's memory as
    they go round.  The table holds at most C{maxEchoes} echoes: those
    older than the window are forgotten as new ones come, and when it is
    still full the oldest is forgotten.
    """

    def __init__(
        self,
        clock: IReactorTime,
        window: float = DEFAULT_ECHO_WINDOW,
        maxEchoes: int = DEFAULT_MAX_ECHOES,
    ) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if maxEchoes < 1:
            raise ValueError("maxEchoes must be at least 1")
        self.clock = clock
        self.window = window
        self.maxEchoes = maxEchoes
        # (host, port, digest) -> when, oldest first: the echoes to forget
        # are always at the front.
        self._echoes: OrderedDict[tuple[str, int, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._echoes)

    def remember(self, host: str, port: int, datagram: bytes) -> None:
        """Note that C{datagram} was echoed to C{host}/C{port} now."""
        now = self.clock.seconds()
        key = (host, port, _digest(datagram))
        self._echoes.pop(key, None)
        while self._echoes:
            when = next(iter(self._echoes.values()))
            if len(self._echoes) < self.maxEchoes and not self._expired(now, when):
                break
            self._echoes.popitem(last=False)
        self._echoes[key] = now

    def isReturning(self, host: str, port: int, datagram: bytes) -> bool:
        """Say whether C{datagram} was echoed to C{host}/C{port} within the window."""
        when = self._echoes.get((host, port, _digest(datagram)))
        return when is not None and not self._expired(self.clock.seconds(), when)

    def _expired(self, now: float, when: float) -> bool:
        # abs(): after the clock steps back by more than a window, an echo
        # "from the future" is forgotten too, rather than kept for as long
        # as the step was.
        return abs(now - when) >= self.window


def _digest(datagram: bytes) -> int:
    """A short digest of C{datagram}'s bytes.

    Python's own hash: cached on the bytes object, so checking and then
    remembering one datagram reads its bytes once.  A collision can only
    drop a datagram, never answer one that should have been dropped.
    """
    return hash(datagram)


def _boundAddress(host: str) -> Address | None:
    """The address a socket is bound to; L{None} for every address."""
    address = parseAddress(host)
    if address is None or address.is_unspecified:
        return None
    return address


class ReflectionGuard:
    """Decide, without I/O, whether a datagram may be echoed.

    A datagram is dropped when its source port is privileged, when its
    source address is broadcast, multicast or unspecified, when it comes
    "from" one of this server's own listening addresses, when it is a
    datagram this server echoed to that same source (host and port) less
    than C{echoWindow} seconds ago (another reflector sending our echo
    back), or when its source host has used up its share of C{rate}
    datagrams a second (0 turns the rate limit off).  Rates are per source
    host, not per host and port: a reflection attack forges the victim's
    address with any port.

    L{DatagramEcho} tells the guard where it listens (L{listeningOn}) and
    what it echoed (L{echoed}).
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float = DEFAULT_RATE,
        maxSources: int = DEFAULT_MAX_SOURCES,
        echoWindow: float = DEFAULT_ECHO_WINDOW,
        maxEchoes: int = DEFAULT_MAX_ECHOES,
    ) -> None:
        self.buckets = (
            TokenBuckets(clock, rate, maxKeys=maxSources) if rate > 0 else None
        )
        self.echoes = RecentEchoes(clock, echoWindow, maxEchoes)
        # Port -> the addresses bound on it (None: every address).
        self._own: dict[int, list[Address | None]] = {}

    def listeningOn(self, host: str, port: int) -> None:
        """Drop datagrams "from" C{host}/C{port}, where a socket of ours is bound.

        An unspecified C{host} (C{0.0.0.0}, C{::}) stands for every address:
        a datagram from C{port} on any host is then dropped, since it is
        either forged with our address or from another echo service on the
        same port, each of which would answer the other forever.
        """
        self._own.setdefault(port, []).append(_boundAddress(host))

    def stoppedListeningOn(self, host: str, port: int) -> None:
        """Forget one L{listeningOn} of C{host}/C{port}."""
        bound = self._own.get(port, [])
        address = _boundAddress(host)
        if address in bound:
            bound.remove(address)
        if not bound:
            self._own.pop(port, None)

    def isOwnAddress(self, host: str, port: int) -> bool:
        """Say whether C{host}/C{port} is where a socket of ours listens."""
        bound = self._own.get(port)
        if not bound:
            return False
        address = parseAddress(host)
        return any(each is None or each == address for each in bound)

    def check(self, host: str, port: int, datagram: bytes) -> str | None:
        """Return the reason to drop C{datagram} from C{host}/C{port}, or L{None}."""
        reason = classifySource(host, port)
        if reason is not None:
            return reason
        if self.isOwnAddress(host, port):
            return OWN_ADDRESS
        # Before the rate: a reflected echo must not spend the host's tokens.
        if self.echoes.isReturning(host, port, datagram):
            return REFLECTED_ECHO
        if self.buckets is not None and not self.buckets.allow(host):
            return RATE
        return None

    def echoed(self, host: str, port: int, datagram: bytes) -> None:
        """Note that C{datagram} was sent back to C{host}/C{port} now."""
        self.echoes.remember(host, port, datagram)


def shouldLogDrop(count: int) -> bool:
    """Say whether the C{count}th drop of one reason is worth a log line.

    The 1st, 10th, 100th... are: a flood leaves a handful of lines in the
    log, not one per datagram.
    """
    while count % 10 == 0 and count > 1:
        count //= 10
    return count == 1


class DatagramEcho(DatagramProtocol):
    """Send each datagram, whole, back to its sender if the guard allows.

    The reply is the request itself, so it is never larger than the
    request: the service cannot amplify.  While listening, the socket's
    address is one of the guard's own addresses, and every echo sent is
    reported to the guard.
    """

    log = Logger(observer=logObserver)
    noisy = False

    def __init__(self, guard: ReflectionGuard, stats: ServerStats) -> None:
        self.guard = guard
        self.stats = stats
        self.bound: tuple[str, int] | None = None

    def startProtocol(self) -> None:
        """Tell the guard the address the socket is bound to."""
        assert self.transport is not None
        address = self.transport.getHost()
        self.bound = (address.host, address.port)
        self.guard.listeningOn(*self.bound)

    def stopProtocol(self) -> None:
        """Tell the guard the socket's address is no longer ours."""
        if self.bound is not None:
            self.guard.stoppedListeningOn(*self.bound)
            self.bound = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Echo C{datagram} to C{addr}, or count (and sometimes log) a drop."""
        host, port = addr[0], addr[1]
        reason = self.guard.check(host, port, datagram)
        if reason is None:
            assert self.transport is not None
            try:
                self.transport.write(datagram, (host, port))
            except MessageLengthError:
                reason = SEND_FAILED
            except OSError as e:
                # A full send buffer (EAGAIN, ENOBUFS) loses the reply as
                # the network might have; anything else is a real error.
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                    raise
                reason = SEND_FAILED
            else:
                self.guard.echoed(host, port, datagram)
                self.stats.echoed("udp", len(datagram))
                return
        self.stats.dropDatagram(reason)
        count = self.stats.udpDropped[reason]
        if shouldLogDrop(count):
            self.log.info(
                "Dropped UDP datagram from {host}/{port}: {reason}"
                " ({count} dropped for this reason so far)",
                host=host,
                port=port,
                reason=reason,
                count=count,
            )
