"""A UDP port that reads the clock where sockperf does: right after each
receive returns and right before each send.

The load generator's UDP round trip used to run from a clock read in
Python before the datagram was handed to Twisted's port (then a
C{write}, its checks, the C{send} call) to one in C{datagramReceived},
after the reactor's dispatch and the port's C{recvfrom}.  sockperf, the
tool it is cross-checked with, reads its clock right before C{sendto}
and right after C{recvfrom} returns.  L{TimedPort} reads the bench's
clock at those same two points, so that the two tools time the same
stretch: the send call, the network and the server, and the receive.

L{TimedPort} is Twisted's UDP port with two additions for a port
connected to its peer: C{doRead} reads the clock right after each
receive returns and hands the datagram with that time to the protocol's
C{datagramReceivedAt} (instead of C{datagramReceived}), and
L{TimedPort.sendTimed} reads it right before the C{send} call and
returns it.  Binding, connecting, ICMP refusals and stopping stay
Twisted's; an unconnected port reads as Twisted's does.

Twisted internals relied on (pinned by C{echotwist.test.test_timedudp}):
C{udp.Port}'s constructor C{(port, proto, interface, maxPacketSize,
reactor)} and C{startListening}, as the reactor's C{listenUDP} uses
them; its C{socket}, C{protocol}, C{_connectedAddr}, C{maxPacketSize},
C{maxThroughput} attributes; C{doRead} as the reactor's call for a
readable socket, with C{udp._sockErrReadIgnore} and
C{udp._sockErrReadRefuse} as the errors it ends a read on (the latter
a refusal, for a connected port); the connected peer as the address it
hands the protocol; and how
C{write} treats a failed send to the connected peer (C{EINTR}: again,
C{EMSGSIZE}: C{MessageLengthError}, C{ECONNREFUSED}: the protocol's
C{connectionRefused}, anything else raised).
"""

from __future__ import annotations

from collections.abc import Callable
from errno import ECONNREFUSED, EINTR, EMSGSIZE
from typing import Protocol

from twisted.internet import error, udp
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.python import log


class TimedReceiver(Protocol):
    """What a L{TimedPort}'s protocol provides besides C{DatagramProtocol}'s."""

    def datagramReceivedAt(self, datagram: bytes, addr: object, when: float) -> None:
        """C{datagram} from C{addr}; its C{recvfrom} returned at C{when}."""


class TimedDatagramProtocol(DatagramProtocol):
    """A datagram protocol told when each datagram's receive returned.

    On a L{TimedPort} the port reads its clock right after C{recvfrom}; on
    any other transport (a test's fake network) C{datagramReceived} reads
    C{clock} as it is called.
    """

    clock: Callable[[], float]

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        """A datagram from a port that does not time it: time it now."""
        self.datagramReceivedAt(datagram, addr, self.clock())

    def datagramReceivedAt(self, datagram: bytes, addr: object, when: float) -> None:
        """C{datagram} from C{addr}; its C{recvfrom} returned at C{when}."""
        raise NotImplementedError


class TimedPort(udp.Port):
    """Twisted's UDP port, reading C{clock} around each receive and send."""

    def __init__(
        self,
        port: int,
        proto: TimedDatagramProtocol,
        interface: str,
        maxPacketSize: int,
        reactor: IReactorUDP,
        *,
        clock: Callable[[], float],
    ) -> None:
        # Twisted's udp.Port.__init__ has no annotations.
        super().__init__(port, proto, interface, maxPacketSize, reactor)  # type: ignore[no-untyped-call]
        self.clock = clock

    def doRead(self) -> None:
        """Read the datagrams waiting, each timed as its receive returns.

        A connected port reads with C{recv} (the sender can only be the
        peer, so no address is built); up to C{maxThroughput} bytes a call,
        as Twisted's C{doRead}, and an exception from the protocol is
        logged and the reading goes on.  An unconnected port reads as
        Twisted's does, and its protocol times each datagram itself.
        """
        peer = self._connectedAddr
        if not peer:
            super().doRead()  # type: ignore[no-untyped-call]
            return
        protocol: TimedReceiver = self.protocol
        receive = self.socket.recv
        clock = self.clock
        size = self.maxPacketSize
        read = 0
        while read < self.maxThroughput:
            try:
                data = receive(size)
                when = clock()
            except OSError as e:
                if e.args[0] in udp._sockErrReadIgnore:
                    return
                if e.args[0] in udp._sockErrReadRefuse:
                    self.protocol.connectionRefused()
                    return
                raise
            read += len(data)
            try:
                protocol.datagramReceivedAt(data, peer, when)
            except BaseException:
                log.err()

    def sendTimed(self, datagram: bytes) -> float:
        """Send C{datagram} to the connected peer; return the time read just before.

        A failed send is treated as Twisted's C{write} treats it: tried
        again after C{EINTR}, C{MessageLengthError} for C{EMSGSIZE}, the
        protocol's C{connectionRefused} for C{ECONNREFUSED}, any other
        error raised.
        """
        assert self._connectedAddr, "sendTimed needs a connected port"
        send = self.socket.send
        when = self.clock()
        try:
            send(datagram)
        except OSError as e:
            if e.args[0] == EINTR:
                return self.sendTimed(datagram)
            if e.args[0] == EMSGSIZE:
                raise error.MessageLengthError("message too long") from None
            if e.args[0] == ECONNREFUSED:
                self.protocol.connectionRefused()
            else:
                raise
        return when


def canTime(reactor: object) -> bool:
    """Whether C{reactor} runs real sockets a L{TimedPort} can be made on."""
    return isinstance(reactor, PosixReactorBase)


def listenTimedUDP(
    reactor: IReactorUDP,
    port: int,
    protocol: TimedDatagramProtocol,
    interface: str,
    maxPacketSize: int,
    *,
    clock: Callable[[], float],
) -> TimedPort:
    """Bind a L{TimedPort} as the reactor's C{listenUDP} binds its own port."""
    timed = TimedPort(port, protocol, interface, maxPacketSize, reactor, clock=clock)
    timed.startListening()
    return timed
