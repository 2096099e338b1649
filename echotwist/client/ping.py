"""The client's ping mode: timed, verified echo probes over TCP, TLS or UDP.

A L{Prober} sends one probe and returns what came back; L{runPing} sends
C{count} probes C{interval} seconds apart, times each with the injected
clock, verifies each echo, prints one line per probe and keeps the
statistics in a L{PingStats}.

Over a stream (TCP or TLS) the probes share one connection.  A probe
that times out, or whose echo differs from what was sent, leaves the
stream out of step, so the connection is dropped and the next probe
opens a new one (the time to connect is not part of any round trip).
Over UDP each probe is one datagram with its own timeout, sent from a
socket of its own: a fresh ephemeral port, opened before the probe is
sent and closed as soon as the probe is over (answered, reported
unreachable, or timed out).  So the server's loop guard
(L{echotwist.server.udp.ReflectionGuard}), which drops a datagram
identical to one it echoed to the same host and port moments before,
never sees the word repeated from one port, however short the interval;
and a reply that comes after its probe timed out reaches a closed socket
and is lost, never taken for a later probe's.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet import task
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorTime,
    IReactorUDP,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.python.failure import Failure

from echotwist.client.connect import (
    EchoError,
    checkHostName,
    echoDiffers,
    endedEarly,
)
from echotwist.client.pingstats import PingStats, lossLine, probeLine


class Prober(TypingProtocol):
    """Something that sends one probe and returns its echo."""

    def ready(self) -> Deferred[None]:
        """Get ready to probe (connect, if need be)."""

    def probe(self, message: bytes) -> Deferred[bytes]:
        """Send C{message}; fire with what came back for it."""

    def reset(self) -> None:
        """Forget the current exchange (after a failed probe)."""

    def close(self) -> None:
        """Release the connection or port."""


class StreamProbe(Protocol):
    """One stream connection that echoes one probe at a time."""

    def __init__(self) -> None:
        self.waiting: Deferred[bytes] | None = None
        self.expected = 0
        self.received: list[bytes] = []
        self.count = 0
        self.connected = True

    def probe(self, message: bytes) -> Deferred[bytes]:
        """Send C{message}; fire with as many bytes as were sent, once back."""
        assert self.transport is not None
        self.received = []
        self.count = 0
        self.expected = len(message)
        self.waiting = Deferred()
        self.transport.write(message)
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        """Collect the echo; bytes beyond the probe also count, so they show."""
        self.received.append(data)
        self.count += len(data)
        if self.waiting is not None and self.count >= self.expected:
            waiting, self.waiting = self.waiting, None
            waiting.callback(b"".join(self.received))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail the probe in flight: the server closed before echoing it."""
        self.connected = False
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.errback(EchoError(endedEarly(reason, self.count, self.expected)))

    def abort(self) -> None:
        """Drop the connection without waiting for anything."""
        # The probe in flight (if any) already failed; its Deferred has fired.
        self.waiting = None
        if self.transport is not None and self.connected:
            cast(ITCPTransport, self.transport).abortConnection()


class StreamProber:
    """Probe over one stream connection from C{endpoint}, reconnecting after errors."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint
        self.connection: StreamProbe | None = None

    async def _connect(self) -> None:
        protocol = await self.endpoint.connect(Factory.forProtocol(StreamProbe))
        assert isinstance(protocol, StreamProbe)
        self.connection = protocol

    def ready(self) -> Deferred[None]:
        """Connect unless a usable connection is already open."""
        if self.connection is not None and self.connection.connected:
            return Deferred.fromCoroutine(_done())
        self.connection = None
        return Deferred.fromCoroutine(self._connect())

    def probe(self, message: bytes) -> Deferred[bytes]:
        """Send one probe on the open connection."""
        assert self.connection is not None
        return self.connection.probe(message)

    def reset(self) -> None:
        """Drop the connection: what it carries next is out of step."""
        if self.connection is not None:
            self.connection.abort()
            self.connection = None

    def close(self) -> None:
        """Close the connection, if one is open."""
        self.reset()


async def _done() -> None:
    """A coroutine that finishes at once."""


class DatagramProbe(DatagramProtocol):
    """One probe's UDP socket, connected to the server: it waits for one reply."""

    # Every probe opens and closes a socket: no log line for each.
    noisy = False

    def __init__(self) -> None:
        self.waiting: Deferred[bytes] | None = None
        self.late = 0
        # Kept when the socket opens: Twisted forgets its transport when
        # the port closes, which it does itself on an ICMP error.
        self.localPort = 0

    def startProtocol(self) -> None:
        """Note the port the socket was bound to."""
        assert self.transport is not None
        self.localPort = self.transport.getHost().port

    def stopProtocol(self) -> None:
        """The socket closed: a probe still waiting is refused.

        Linux reports a connected UDP socket's ICMP port unreachable as an
        error event with nothing to read; Twisted's epoll reactor then
        closes the port rather than reading it, so C{connectionRefused} is
        never called: the close is the one sign.  Closing it ourselves
        (L{DatagramProber.reset}) forgets the probe first.
        """
        self.connectionRefused()

    def probe(self, message: bytes) -> Deferred[bytes]:
        """Send C{message} as one datagram; fire with the next reply."""
        assert self.transport is not None
        self.waiting = Deferred()
        self.transport.write(message, None)
        return self.waiting

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        """Hand the reply to the probe in flight; count any other as late."""
        if self.waiting is None:
            self.late += 1
            return
        waiting, self.waiting = self.waiting, None
        waiting.callback(datagram)

    def connectionRefused(self) -> None:
        """The host said nothing listens on that port (ICMP unreachable)."""
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.errback(EchoError("port unreachable"))

    def forget(self) -> None:
        """Stop waiting: a reply that still comes is late."""
        self.waiting = None


# How long (seconds) after a probe's socket is closed its port is not
# taken again.  The system picks ephemeral ports at random, so probes sent
# back to back now and then get a port used moments before (3 of 200 at
# --interval 0 on loopback): the server's loop guard, whose window is
# 0.1 s, would drop that probe as a repeat, and a late reply to the
# earlier probe could be taken for it.
PORT_REST = 1.0

# How many recently used ports in a row are turned down before one is
# taken anyway.  Even at --interval 0 fewer than one in ten ports handed
# out has been used within PORT_REST, so this is never reached in practice.
MAX_DECLINED = 8


class DatagramProber:
    """Probe with UDP datagrams to C{host}:C{port}, each from a socket of its own.

    L{ready} resolves the host the first time it is called, and each time
    opens the socket for the next probe: a new UDP port (port 0, so the
    system picks a free ephemeral one) connected to the server.  A port
    whose socket was closed less than L{PORT_REST} seconds before is turned
    down, and another asked for, up to L{MAX_DECLINED} times.  L{probe}
    sends one datagram from it and closes it once the probe is over: when
    the reply arrives, when the port is reported unreachable, or when the
    caller gives up (a timeout cancels the returned Deferred).  C{reactor}
    is also the clock.
    """

    def __init__(self, reactor: IReactorUDP, host: str, port: int) -> None:
        self.reactor = reactor
        self.clock = cast(IReactorTime, reactor)
        self.host = host
        self.port = port
        self.address: str | None = None
        self.interface = ""
        # The socket opened for the next probe, or the one in flight.
        self.socket: tuple[DatagramProbe, IListeningPort] | None = None
        # Local port -> when its socket was closed, oldest first.
        self.closedPorts: OrderedDict[int, float] = OrderedDict()

    async def _resolve(self) -> str:
        if self.address is None:
            checkHostName(self.host)
            if isIPv6Address(self.host):
                self.address, self.interface = self.host, "::"
            else:
                self.address = await cast(IReactorCore, self.reactor).resolve(self.host)
        return self.address

    def _bind(self) -> tuple[DatagramProbe, IListeningPort]:
        """A new socket on an ephemeral port that has rested since its last probe."""
        now = self.clock.seconds()
        while self.closedPorts:
            when = next(iter(self.closedPorts.values()))
            if now - when < PORT_REST:
                break
            self.closedPorts.popitem(last=False)
        declined: list[IListeningPort] = []
        try:
            while True:
                protocol = DatagramProbe()
                port = self.reactor.listenUDP(0, protocol, self.interface, 65535)
                if (
                    _localPort(protocol) not in self.closedPorts
                    or len(declined) == MAX_DECLINED
                ):
                    return protocol, port
                # Kept bound until a port is taken, so it is not offered again.
                declined.append(port)
        finally:
            for each in declined:
                each.stopListening()

    async def _open(self) -> None:
        address = await self._resolve()
        if self.socket is not None:
            return
        self.socket = protocol, _ = self._bind()
        try:
            assert protocol.transport is not None
            protocol.transport.connect(address, self.port)
        except BaseException:
            self.reset()
            raise

    def ready(self) -> Deferred[None]:
        """Resolve the host (the first time only) and open the next probe's socket."""
        return Deferred.fromCoroutine(self._open())

    def probe(self, message: bytes) -> Deferred[bytes]:
        """Send one datagram from the socket L{ready} opened; close it when done."""
        assert self.socket is not None, "ready() opens the probe's socket"
        protocol, port = self.socket
        result = protocol.probe(message)

        def finished(outcome: bytes | Failure) -> bytes | Failure:
            # However the probe ended, its socket goes, so a reply still on
            # its way finds nothing listening rather than the next probe.
            if self.socket == (protocol, port):
                self.reset()
            return outcome

        return result.addBoth(finished)

    def reset(self) -> None:
        """Close the probe's socket, if it is open: its exchange is over."""
        if self.socket is not None:
            protocol, port = self.socket
            self.socket = None
            protocol.forget()
            number = _localPort(protocol)
            self.closedPorts.pop(number, None)
            self.closedPorts[number] = self.clock.seconds()
            port.stopListening()

    def close(self) -> None:
        """Close the socket of the probe in flight or to come, if any."""
        self.reset()


def _localPort(protocol: DatagramProbe) -> int:
    """The port C{protocol}'s socket is (or was) bound to."""
    return protocol.localPort


def describeProbeFailure(failure: Failure, timeout: float) -> str:
    """Why one probe got no verified echo, in a few words."""
    if failure.check(TimeoutError, ConnectTimeoutError):
        return f"timeout after {timeout:g} s"
    if failure.check(EchoError):
        return str(failure.value)
    if failure.check(ConnectionRefusedError):
        return "connection refused (port unreachable)"
    return failure.getErrorMessage() or repr(failure.value)


async def runPing(
    clock: IReactorTime,
    prober: Prober,
    *,
    host: str,
    message: bytes,
    count: int,
    interval: float,
    timeout: float,
    output: Callable[[str], None],
    stats: PingStats | None = None,
    header: str | None = None,
) -> PingStats:
    """Send C{count} probes of C{message}, C{interval} seconds apart.

    C{count} 0 means without end, until the caller cancels the returned
    Deferred (on Ctrl-C).  Each probe is timed from just before it is sent
    to the verified echo and printed through C{output}; a probe without
    one within C{timeout} seconds is lost.  The first connection failing
    raises (nothing could be measured); a later one counts as a loss.
    C{header}, if given, is printed once the first connection is ready.
    """
    if stats is None:
        stats = PingStats()
    try:
        await prober.ready().addTimeout(timeout, clock)
        if header is not None:
            output(header)
        for seq in itertools.count() if count == 0 else range(count):
            started = clock.seconds()
            await _probeOnce(
                clock,
                prober,
                seq=seq,
                host=host,
                message=message,
                timeout=timeout,
                output=output,
                stats=stats,
            )
            if count == 0 or seq + 1 < count:
                await _sleepUntil(clock, started + interval)
    finally:
        prober.close()
    return stats


async def _probeOnce(
    clock: IReactorTime,
    prober: Prober,
    *,
    seq: int,
    host: str,
    message: bytes,
    timeout: float,
    output: Callable[[str], None],
    stats: PingStats,
) -> None:
    """Probe C{seq}: (re)connect if need be, send, time, verify, print a line."""
    if seq:
        try:
            await prober.ready().addTimeout(timeout, clock)
        except CancelledError:
            raise
        except Exception:
            stats.probeSent()
            why = describeProbeFailure(Failure(), timeout)
            output(lossLine(host, seq, f"cannot connect: {why}"))
            return
    sentAt = clock.seconds()
    stats.probeSent()
    try:
        echoed = await prober.probe(message).addTimeout(timeout, clock)
    except CancelledError:
        raise
    except Exception:
        prober.reset()
        output(lossLine(host, seq, describeProbeFailure(Failure(), timeout)))
        return
    rtt = clock.seconds() - sentAt
    if echoed == message:
        stats.probeAnswered(rtt)
        output(probeLine(len(echoed), host, seq, rtt))
    else:
        prober.reset()
        output(lossLine(host, seq, echoDiffers(echoed, message)))


async def _sleepUntil(clock: IReactorTime, when: float) -> None:
    """Wait until C{clock} reads C{when} (at once if that has passed)."""
    delay = when - clock.seconds()
    if delay > 0:
        await task.deferLater(clock, delay, lambda: None)
