"""Connection limits, address policy and idleness: decisions only, no I/O.

The echo factory asks a L{ConnectionLimits} whether to serve each new
client, and L{isIdle} says whether a connection has been quiet
for too long.  Neither touches a socket or a clock: callers pass in what
they saw, so every rule here is tested without a reactor.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

# Rejection reasons, as counted in ServerStats.rejected and exported by
# the metrics endpoint.
LIMIT = "limit"
PER_IP = "per-ip"
DENIED = "denied"
EMFILE = "emfile"


def parseNetwork(text: str) -> Network:
    """Parse an IPv4 or IPv6 network (C{10.0.0.0/8}, C{::1}, C{192.0.2.7}).

    A bare address is a network of one address.  Host bits set below the
    prefix are an error, since C{10.1.2.3/8} is more likely a typo than a
    deliberate C{10.0.0.0/8}.

    @raise ValueError: with a one-line message saying what is wrong.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise ValueError(f"invalid network {text!r}: {e}") from None


def parseAddress(host: str) -> Address | None:
    """Parse a peer's host as an IP address, or return C{None} if it is not one.

    An IPv4-mapped IPv6 address (C{::ffff:192.0.2.7}, what a dual-stack
    C{tcp6} listener reports for IPv4 clients) is returned as its IPv4
    address, so one rule covers a client however it arrived.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class AddressPolicy:
    """Which client addresses are served: C{--allow} and C{--deny}.

    A deny rule wins over an allow rule; once any allow rule is given,
    only addresses in an allowed network are served.  Clients without an
    IP address (UNIX sockets) are not subject to the policy.
    """

    def __init__(
        self, allow: Iterable[Network] = (), deny: Iterable[Network] = ()
    ) -> None:
        self.allow = tuple(allow)
        self.deny = tuple(deny)

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def permits(self, address: Address | None) -> bool:
        """Whether a client at C{address} may be served."""
        if address is None:
            return True
        # ipaddress answers "in" across families with False, so one list
        # holds IPv4 and IPv6 networks together.
        if any(address in network for network in self.deny):
            return False
        if self.allow:
            return any(address in network for network in self.allow)
        return True


class ConnectionLimits:
    """Admission control for new connections: policy, total cap, per-IP cap.

    L{admit} is asked once per new connection; when it admits (returns
    C{None}) the caller must call L{release} with the same host when that
    connection ends.  A limit of 0 means no limit.
    """

    def __init__(
        self,
        maxConnections: int = DEFAULT_MAX_CONNECTIONS,
        maxPerIp: int = 0,
        policy: AddressPolicy | None = None,
    ) -> None:
        self.maxConnections = maxConnections
        self.maxPerIp = maxPerIp
        self.policy = policy if policy is not None else AddressPolicy()
        self.active = 0
        self.perIp: Counter[Address] = Counter()

    def admit(self, host: str | None) -> str | None:
        """Admit a client from C{host}, or say why not.

        @return: C{None} when admitted (and counted as active), else the
            rejection reason: L{DENIED}, L{LIMIT} or L{PER_IP}.
        """
        address = parseAddress(host) if host is not None else None
        if self.policy and not self.policy.permits(address):
            return DENIED
        if self.maxConnections and self.active >= self.maxConnections:
            return LIMIT
        if address is not None and self.maxPerIp:
            if self.perIp[address] >= self.maxPerIp:
                return PER_IP
            self.perIp[address] += 1
        self.active += 1
        return None

    def release(self, host: str | None) -> None:
        """An admitted connection from C{host} has ended."""
        self.active -= 1
        address = parseAddress(host) if host is not None else None
        if address is not None and self.maxPerIp:
            remaining = self.perIp[address] - 1
            if remaining > 0:
                self.perIp[address] = remaining
            else:
                # Drop the entry so the table only holds connected clients.
                del self.perIp[address]


# Descriptors a server needs besides its connections: listening sockets,
# the reactor's own (epoll, waker), log files, metrics clients, and the
# few a connection being accepted beyond the limit holds briefly.
FILE_HEADROOM = 64


def filesNeeded(maxConnections: int) -> int:
    """Open files a server admitting C{maxConnections} at once needs."""
    return maxConnections + FILE_HEADROOM


def fileLimitTarget(maxConnections: int, soft: int, hard: int) -> int | None:
    """The soft C{RLIMIT_NOFILE} to raise to, or C{None} to leave C{soft}.

    Enough for C{maxConnections} (L{filesNeeded}), or as much as C{hard}
    allows when that is 0 (no limit); never above C{hard}, never lower
    than C{soft}.  A negative limit is C{RLIM_INFINITY}.
    """
    if soft < 0:
        return None
    if maxConnections == 0:
        if hard < 0:
            return None
        wanted = hard
    else:
        wanted = filesNeeded(maxConnections)
        if hard >= 0:
            wanted = min(wanted, hard)
    return wanted if wanted > soft else None


# The shared idle check runs this many times per idle timeout.
IDLE_SWEEPS = 8


def idleSweepInterval(timeout: float) -> float:
    """How often the shared idle check runs for an idle timeout of C{timeout}.

    Resetting a timer on every read would put a timer operation on the
    echo's hot path, and a timer per connection costs memory on a server
    holding many idle ones; instead a connection only raises a flag when
    there is traffic, and one timer for all connections looks at the flags
    every C{timeout / IDLE_SWEEPS} seconds.  A connection is then closed
    after between C{timeout} and C{1.125 * timeout} seconds without traffic.
    """
    if not timeout > 0:
        raise ValueError("an idle timeout must be positive")
    return timeout / IDLE_SWEEPS


def isIdle(now: float, lastActive: float, timeout: float) -> bool:
    """Whether a connection last seen active at C{lastActive} is idle at C{now}."""
    return now - lastActive >= timeout
