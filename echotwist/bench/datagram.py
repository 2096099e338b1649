"""UDP load (C{--udp}): pingpong over datagrams, losses counted.

Each of C connections is a UDP socket of its own, connected to the
server, that keeps C{pipeline} datagrams in flight (closed loop) or sends
on the open-loop schedule (C{rate}), exactly as the TCP pingpong of
L{echotwist.bench.load} does, with the same messages (numbered, so that
no two datagrams of a socket are alike) and the same latency and send-delay recording.

What differs is that a datagram can be lost: one whose echo is not back
within C{timeout} seconds is counted lost (not an error: the run goes
on, and closed loop sends the next one), and an echo that arrives after
that is counted late.  Echoes may come back in another order than sent
(UDP keeps none); each is matched with its datagram by content.  A reply
that matches nothing sent is C{corrupt}; an ICMP port unreachable is
C{refused}.

On a real reactor each socket is a L{TimedPort}, which reads the clock
where sockperf reads its own: right before the C{send} call and right
after the receive returns.  A round trip is therefore the send call, the
network and the server, the reactor's wake-up and the receive, without
the bench's own Python work on either side of it (see "Cross-check" in
docs/measuring.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import cast

from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP

from echotwist.bench.load import (
    IntervalObserver,
    LoadConfig,
    LoadRun,
    Sending,
    SetupError,
    measure,
    resultsOf,
)
from echotwist.bench.results import Results
from echotwist.bench.timer import Waker, makeWaker
from echotwist.endpoints import formatHostPort
from echotwist.internals.timedudp import (
    TimedDatagramProtocol,
    TimedPort,
    canTime,
    listenTimedUDP,
)


class Refused(Exception):
    """The server's host said nothing listens on that port."""


# Lost datagrams remembered per socket, so that a late echo is told from
# a corrupt one.
REMEMBER_LOST = 1024


class DatagramConnection(Sending, TimedDatagramProtocol):
    """One UDP socket of a C{--udp} run: send, verify each echo, count losses."""

    noisy = False

    def __init__(self, run: LoadRun, slot: int, cid: int) -> None:
        Sending.__init__(self, run, slot, cid)
        self.clock = run.now
        self.lost: deque[bytes] = deque(maxlen=REMEMBER_LOST)
        self.port: IListeningPort | None = None
        self.answered: Deferred[None] | None = None

    def startProtocol(self) -> None:
        """Connect the socket to the server: only its datagrams come in.

        On a L{TimedPort}, each send is timed by the port, right before
        its C{send} call.
        """
        assert self.transport is not None
        self.transport.connect(self.run.address, self.run.config.port)
        if isinstance(self.transport, TimedPort):
            self.writeTimed = self.transport.sendTimed

    def probe(self) -> Deferred[None]:
        """Send one datagram; fire when its echo is back (before the run)."""
        self.answered = Deferred()
        self.send()
        return self.answered

    def nextMessage(self) -> bytes:
        """The next datagram, numbered (a repeat would meet the server's loop guard)."""
        return self.payload.numbered(self.cid, self.seq)

    def writeMessage(self, message: bytes) -> None:
        """Send C{message} as one datagram to the connected server."""
        assert self.transport is not None
        self.transport.write(message, None)

    def datagramReceivedAt(self, datagram: bytes, addr: object, when: float) -> None:
        """Match the echo, received at C{when}, with its datagram.

        Then make any send due by now (the clock read after this work).
        """
        now = when
        inflight = self.inflight
        if inflight and datagram == inflight[0][0]:
            _, intended, sent = inflight.popleft()
            self.echoed(intended, sent, now)
        else:
            for i, (message, intended, sent) in enumerate(inflight):
                if datagram == message:
                    del inflight[i]
                    self.echoed(intended, sent, now)
                    break
            else:
                if datagram in self.lost:
                    self.lost.remove(datagram)
                    self.run.late += 1
                else:
                    self.run.error("corrupt")
        # By the clock after this echo's work, as LoadConnection.dataReceived.
        if self.openLoop and self.now() >= self.run.dueAt:
            self.run.tick()

    def echoed(self, intended: float, sent: float, now: float) -> None:
        """Record one verified echo and send the next datagram."""
        if self.answered is not None:
            answered, self.answered = self.answered, None
            answered.callback(None)
            return
        self.recordEcho(intended, sent, now)
        self.sendNext()

    def sweep(self, now: float, timeout: float) -> None:
        """Count the datagrams out for longer than C{timeout} as lost."""
        inflight = self.inflight
        while inflight and now - inflight[0][2] > timeout:
            message, _, _ = inflight.popleft()
            self.lost.append(message)
            if self.run.measuring:
                self.run.lost += 1
            self.sendNext()

    def connectionRefused(self) -> None:
        """An ICMP port unreachable: nothing listens there (the datagram is lost)."""
        if self.run.measuring or self.answered is not None:
            self.run.error("refused")
        if self.answered is not None:
            answered, self.answered = self.answered, None
            answered.errback(Refused())

    def stopProtocol(self) -> None:
        """The socket is gone: closed by L{abort}, or dropped by the reactor.

        Twisted's epoll reactors drop a UDP port whose socket reports an
        error (an ICMP port unreachable shows as C{EPOLLERR} alone) instead
        of calling L{connectionRefused}: it is taken as one, and the socket's
        slot is left empty.
        """
        if self.port is None:
            return
        self.port = None
        if self.run.slots[self.slot] is self:
            self.run.slots[self.slot] = None
        self.connectionRefused()

    def oldestSend(self, now: float) -> float:
        """0: a datagram is never stalled, only lost (see L{sweep})."""
        return 0.0

    def abort(self) -> None:
        """Close the socket."""
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()


async def runDatagram(
    reactor: IReactorTime,
    now: Callable[[], float],
    config: LoadConfig,
    address: str,
    observer: IntervalObserver | None = None,
    *,
    makeWaker: Callable[[IReactorTime, Callable[[], object]], Waker] = makeWaker,
) -> Results:
    """UDP pingpong, closed or open loop, on C{config.connections} sockets.

    One datagram is echoed first, within C{config.connectTimeout} seconds,
    or the run fails with one line (UDP says nothing of a server that is
    not there).  C{config.connectTimeout} is also how long an echo may
    take before its datagram is lost.
    """
    run = LoadRun(reactor, now, config, address, makeWaker)
    interface = "::" if isIPv6Address(address) else ""
    for slot in range(config.connections):
        connection = DatagramConnection(run, slot, run.newCid())
        if canTime(reactor):
            connection.port = listenTimedUDP(
                cast(IReactorUDP, reactor), 0, connection, interface, 65535, clock=now
            )
        else:
            connection.port = cast(IReactorUDP, reactor).listenUDP(
                0, connection, interface, 65535
            )
        run.slots[slot] = connection
    first = run.slots[0]
    assert isinstance(first, DatagramConnection)
    where = formatHostPort(config.host, config.port)
    try:
        await first.probe().addTimeout(config.connectTimeout, reactor)
    except TimeoutError:
        run.finish()
        raise SetupError(
            f"no echo from {where} over UDP within {config.connectTimeout:g} s"
        ) from None
    except Refused:
        run.finish()
        raise SetupError(f"no echo from {where} over UDP: port unreachable") from None
    run.errors.clear()
    first.inflight.clear()
    period = min(config.connectTimeout / 4, 0.25)

    def sweep() -> None:
        moment = run.now()
        for connection in run.slots:
            if isinstance(connection, DatagramConnection):
                connection.sweep(moment, config.connectTimeout)
        run.later(period, sweep)

    run.later(period, sweep)
    run.begin()
    try:
        seconds = await measure(run, reactor, observer, config.warmup)
    finally:
        run.finish()
    return resultsOf(run, seconds)
