"""The load generator's protocols and its run loop (the I/O side).

Three shapes of load:
  - C{pingpong}: C connections each keep C{pipeline} messages in flight.
    Closed loop, the next message leaves as soon as an echo is back; open
    loop (C{rate}), messages leave on the L{OpenLoopSchedule} and latency
    is measured from when each was meant to leave.
  - C{connect}: C slots each loop connect, echo one message, close.
  - C{hold}: C connections, each with one verified echo, held open.

Every echoed byte is compared with what was sent; a connection that sees
a wrong echo counts the error by kind, is dropped, and is replaced by a
new one (with new message contents) 20 ms later.  Time for latencies
comes from C{now} (C{time.perf_counter} in real runs, a L{task.Clock} in
tests); waits go through the injected reactor.

The per-echo work is kept small on purpose: one clock read, one bytes
comparison, one list append and one write per echo in the common case
of a whole echo arriving in one read.  Everything else (histograms,
logs, progress) runs once per interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from typing import Protocol as TypingProtocol

from hdrh.histogram import HdrHistogram
from twisted.internet import task
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredSemaphore,
    TimeoutError,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IHandshakeListener,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist.bench.arguments import SPIN
from echotwist.bench.content import Payload, classifyExcess, classifyMismatch
from echotwist.bench.results import (
    HIGHEST_US,
    Interval,
    LatencyRecorder,
    Results,
    SendDelays,
    newHistogram,
    quantize,
)
from echotwist.bench.schedule import OpenLoopSchedule, waitBefore
from echotwist.bench.timer import Waker, makeWaker
from echotwist.endpoints import formatHostPort
from echotwist.internals.writepath import sendNow

if TYPE_CHECKING:
    from twisted.internet.ssl import ClientContextFactory

# A failed TLS handshake or certificate check, named by string so that
# the bench runs without pyOpenSSL.
TLS_ERRORS = ("OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError")
# How long a dropped connection waits before it is replaced.
RECONNECT_DELAY = 0.02
# Connections being set up at once in hold mode.
SETUP_CONCURRENCY = 200


@dataclass
class LoadConfig:
    """What to run: the options of C{python -m echotwist.bench}."""

    host: str
    port: int
    mode: str = "pingpong"
    connections: int = 50
    size: int = 512
    duration: float = 5.0
    warmup: float = 1.0
    pipeline: int = 1
    rate: float | None = None
    sources: tuple[str | None, ...] = (None,)
    connectTimeout: float = 5.0
    interval: float = 1.0
    spin: float = SPIN
    tls: bool = False
    insecure: bool = False
    udp: bool = False


class SetupError(Exception):
    """No connection could be made; the message is the one line for the user."""


# Called once per interval with the interval's histogram (and the
# uncorrected one in open loop), its start and end (seconds from the
# measured window's start) and the running totals (the run's send
# delays, in open loop, are in its C{delays}, a L{SendDelays}).
IntervalObserver = Callable[
    [HdrHistogram, HdrHistogram | None, float, float, "LoadRun"], None
]


class Slot(TypingProtocol):
    """What a run asks of each of its connections (TCP or UDP)."""

    def start(self) -> None:
        """Closed loop: start sending."""

    def sendScheduled(self, intended: float) -> None:
        """Open loop: send the message due at C{intended}."""

    def oldestSend(self, now: float) -> float:
        """How long the oldest echo still due has been waiting."""

    def abort(self) -> None:
        """Drop the connection."""


class LoadRun:
    """The state one run's connections share: contents, samples, errors."""

    def __init__(
        self,
        reactor: IReactorTime,
        now: Callable[[], float],
        config: LoadConfig,
        address: str,
        makeWaker: Callable[[IReactorTime, Callable[[], object]], Waker] = makeWaker,
    ) -> None:
        self.reactor = reactor
        self.now = now
        self.config = config
        self.address = address
        self.payload = Payload(config.size)
        self.openLoop = config.rate is not None
        self.recorder = LatencyRecorder()
        self.uncorrected = LatencyRecorder() if self.openLoop else None
        # Open loop: how late each send left and was reached.
        self.delays = SendDelays() if self.openLoop else None
        self.errors: Counter[str] = Counter()
        self.running = True
        self.measuring = False
        self.nextCid = 0
        self.slots: list[Slot | None] = [None] * config.connections
        self.schedule: OpenLoopSchedule | None = None
        self.makeWaker = makeWaker
        self.waker: Waker | None = None
        # When the next open-loop send is due; every echo received checks
        # it, so a busy reactor sends on time without waiting for a timer.
        self.dueAt = math.inf
        self.unsent = 0
        self.begun = False
        self.pendingCalls: set[IDelayedCall] = set()
        self._tlsOptions: object | None = None
        # Connect mode at a rate: transactions in progress, and those due
        # while C{connections} were already in progress (when each was
        # due and when the schedule reached it).
        self.inProgress = 0
        self.backlog: deque[tuple[float, float]] = deque()
        # UDP: datagrams lost while measuring, and echoes that came late.
        self.lost = 0
        self.late = 0
        # The last interval measured, summarised (for the progress lines).
        self.interval: Interval | None = None

    def newCid(self) -> int:
        """A connection id never used before in this run."""
        cid = self.nextCid
        self.nextCid += 1
        return cid

    def connect(self, factory: ClientFactory, cid: int) -> None:
        """Connect C{factory} to the server (over TLS if asked) from C{cid}'s source."""
        config = self.config
        if config.tls:
            cast(IReactorSSL, self.reactor).connectSSL(
                self.address,
                config.port,
                factory,
                # An IOpenSSLClientConnectionCreator, which connectSSL
                # takes as well as the context factory it is annotated with.
                cast("ClientContextFactory", self.tlsOptions()),
                config.connectTimeout,
                self.source(cid),
            )
        else:
            cast(IReactorTCP, self.reactor).connectTCP(
                self.address,
                config.port,
                factory,
                config.connectTimeout,
                self.source(cid),
            )

    def tlsOptions(self) -> object:
        """The client TLS options, made once: verifying C{host} unless insecure.

        @raise SetupError: pyOpenSSL (the C{tls} extra) is not installed.
        """
        if self._tlsOptions is None:
            try:
                from twisted.internet import ssl
            except ImportError:
                raise SetupError(
                    "--tls needs pyOpenSSL: pip install 'echotwist[tls]'"
                ) from None
            if self.config.insecure:
                self._tlsOptions = ssl.CertificateOptions()
            else:
                self._tlsOptions = ssl.optionsForClientTLS(self.config.host)
        return self._tlsOptions

    def source(self, cid: int) -> tuple[str, int] | None:
        """The local address to bind connection C{cid} to, if any."""
        sources = self.config.sources
        chosen = sources[cid % len(sources)]
        return None if chosen is None else (chosen, 0)

    def error(self, kind: str) -> None:
        """Count one error of C{kind}."""
        self.errors[kind] += 1

    def later(self, delay: float, f: Callable[[], object]) -> None:
        """Call C{f} after C{delay} unless the run has finished by then."""

        def call() -> None:
            self.pendingCalls.discard(delayed)
            if self.running:
                f()

        delayed = self.reactor.callLater(delay, call)
        self.pendingCalls.add(delayed)

    # Pingpong mode.

    def connectSlot(self, slot: int) -> Deferred[None]:
        """Open the connection for C{slot}; count a failure as an error."""
        factory = LoadFactory(self, slot)
        self.connect(factory, factory.cid)
        return factory.connected

    def replace(self, slot: int) -> None:
        """Replace the dropped connection of C{slot} shortly."""
        self.slots[slot] = None

        def reconnect() -> None:
            self.connectSlot(slot).addErrback(lambda _: self.replace(slot))

        self.later(RECONNECT_DELAY, reconnect)

    def begin(self) -> None:
        """Start sending on every connection (and the schedule, in open loop)."""
        self.begun = True
        for connection in self.slots:
            if connection is not None:
                connection.start()
        if self.config.rate is not None:
            self.schedule = OpenLoopSchedule(
                self.config.rate, self.now(), self.config.connections
            )
            self.waker = self.makeWaker(self.reactor, self.tick)
            self.tick()

    def tick(self) -> None:
        """Open loop: make the sends due by now, then arrange the next wake-up.

        One pass only: a generator behind its schedule comes back on the
        reactor's next turn (after reading its sockets) rather than
        starving them.
        """
        schedule = self.schedule
        if schedule is None or not self.running:
            return
        if self.config.mode == "connect":
            for n in schedule.due(self.now()):
                self.connectScheduled(schedule.intended(n))
        else:
            slots = self.slots
            for n in schedule.due(self.now()):
                connection = slots[n % schedule.slots]
                if connection is None:
                    # Its connection is being replaced: the send is lost, and
                    # said so, rather than silently lowering the rate.
                    self.unsent += 1
                    if self.measuring:
                        self.error("unsent")
                else:
                    connection.sendScheduled(schedule.intended(n))
        due = self.dueAt = schedule.nextDue()
        assert self.waker is not None
        self.waker.wakeIn(waitBefore(due, self.now(), self.config.spin))

    # Connect mode at a rate.

    def beginConnecting(self) -> None:
        """Connect mode with C{rate}: start new connections on the schedule."""
        assert self.config.rate is not None
        self.begun = True
        self.schedule = OpenLoopSchedule(self.config.rate, self.now(), 1)
        self.waker = self.makeWaker(self.reactor, self.tick)
        self.tick()

    def connectScheduled(self, intended: float) -> None:
        """Start the transaction due at C{intended} now, or when one ends.

        At most C{connections} are in progress at once.
        """
        if self.inProgress < self.config.connections:
            self.startTimed(intended)
        else:
            self.backlog.append((intended, self.now()))

    def startTimed(self, intended: float, reached: float | None = None) -> None:
        """Start a transaction due at C{intended}; note how late it starts.

        C{reached}: when the schedule reached it, if it then waited for
        one in progress to end (L{SendDelays}).
        """
        now = self.now()
        if self.measuring:
            assert self.delays is not None
            self.delays.record(intended, reached, now)
        factory = startTransaction(self, intended=intended)
        self.inProgress += 1

        def ended(_: object) -> None:
            self.inProgress -= 1
            if self.running and self.backlog:
                self.startTimed(*self.backlog.popleft())

        factory.finished.addCallback(ended)

    def finish(self) -> None:
        """Stop: count stalled echoes, cancel timers, drop every connection."""
        self.running = False
        self.measuring = False
        self.dueAt = math.inf
        if self.waker is not None:
            self.waker.stop()
        for delayed in list(self.pendingCalls):
            if delayed.active():
                delayed.cancel()
        self.pendingCalls.clear()
        now = self.now()
        stall = min(1.0, self.config.duration / 2)
        for connection in self.slots:
            if connection is not None:
                if connection.oldestSend(now) > stall:
                    self.error("stalled")
                connection.abort()


class Sending:
    """The sending side every load socket shares: what is in flight, the
    schedule, and what each verified echo records.

    A subclass (L{LoadConnection}, L{echotwist.bench.datagram.DatagramConnection})
    says how a message is made (L{nextMessage}) and written (L{writeMessage}).
    """

    def __init__(self, run: LoadRun, slot: int, cid: int) -> None:
        self.run = run
        self.slot = slot
        self.cid = cid
        self.seq = 0
        self.payload = run.payload
        self.pipeline = run.config.pipeline
        self.openLoop = run.openLoop
        self.now = run.now
        # (message, intended send time, actual send time) per echo due,
        # oldest first.
        self.inflight: deque[tuple[bytes, float, float]] = deque()
        # Open loop: (intended send time, when the schedule reached it) of
        # each send waiting for room in the pipeline.
        self.backlog: deque[tuple[float, float]] = deque()
        # Puts a message on the wire and returns the time read right before
        # the send: a subclass whose transport can read it closer to the
        # send call (L{echotwist.internals.timedudp}) replaces it.
        self.writeTimed: Callable[[bytes], float] = self.readClockThenWrite

    def nextMessage(self) -> bytes:
        """The message with sequence number C{self.seq}."""
        raise NotImplementedError

    def writeMessage(self, message: bytes) -> None:
        """Put C{message} on the wire."""
        raise NotImplementedError

    def readClockThenWrite(self, message: bytes) -> float:
        """Read the clock, then write C{message}; return the time read."""
        sent = self.now()
        self.writeMessage(message)
        return sent

    def start(self) -> None:
        """Closed loop: put C{pipeline} messages in flight."""
        if not self.openLoop:
            for _ in range(self.pipeline):
                self.send()

    def send(self, intended: float | None = None, reached: float | None = None) -> None:
        """Send the next message; open loop, the one due at C{intended}.

        The clock is read just before the write (L{writeTimed}), so that a
        latency from the actual send holds none of this side's own work
        before it; in open loop, how late that is against C{intended} is
        recorded (and C{reached}, when the schedule reached a send that
        then waited for room: L{SendDelays}).
        """
        message = self.nextMessage()
        self.seq += 1
        sent = self.writeTimed(message)
        if intended is None:
            intended = sent
        elif self.run.measuring:
            assert self.run.delays is not None
            self.run.delays.record(intended, reached, sent)
        self.inflight.append((message, intended, sent))

    def sendScheduled(self, intended: float) -> None:
        """Open loop: send now, or as soon as the pipeline has room."""
        if len(self.inflight) < self.pipeline:
            self.send(intended)
        else:
            self.backlog.append((intended, self.now()))

    def recordEcho(self, intended: float, sent: float, now: float) -> None:
        """Record the latency of one verified echo, while measuring."""
        run = self.run
        if run.measuring:
            run.recorder.samples.append(int((now - intended) * 1e6))
            if run.uncorrected is not None:
                run.uncorrected.samples.append(int((now - sent) * 1e6))

    def sendNext(self) -> None:
        """One message is out of flight: send the next one, if the run goes on."""
        if not self.run.running:
            return
        if not self.openLoop:
            self.send()
        elif self.backlog:
            self.send(*self.backlog.popleft())


@implementer(IHandshakeListener)
class LoadConnection(Sending, Protocol):
    """One pingpong connection: send, verify every echoed byte, repeat."""

    def __init__(self, run: LoadRun, slot: int, cid: int) -> None:
        Sending.__init__(self, run, slot, cid)
        self.pending = b""
        self.previous: bytes | None = None
        self.failed = False
        self.closed = False

    def handshakeCompleted(self) -> None:
        """TLS: the connection is up only now (IHandshakeListener)."""
        factory = getattr(self, "factory", None)
        if isinstance(factory, LoadFactory):
            factory._made()

    def connectionMade(self) -> None:
        """Disable Nagle, take the slot, and start if the run has begun."""
        assert self.transport is not None
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        if not self.run.running:
            # A replacement that connected after the run ended.
            self.failed = True
            self.abort()
            return
        self.run.slots[self.slot] = self
        if self.run.begun:
            self.start()

    def nextMessage(self) -> bytes:
        """The next message, numbered for this connection."""
        return self.payload.message(self.cid, self.seq)

    def write(self, message: bytes) -> None:
        """Write C{message}: straight to the socket when nothing is queued.

        C{transport.write} only queues: the bytes leave on the reactor's
        next turn, after every other ready connection has been read, at the
        cost of two C{epoll_ctl} calls and a write event per message.  For
        a load generator that delay and work is most of its own cost per
        echo, so L{echotwist.internals.writepath.sendNow} sends at once when the
        transport has nothing queued (ordering is kept); anything else
        goes through C{transport.write} as usual.
        """
        assert self.transport is not None
        sendNow(self.transport, message)

    # Sending writes each message this way: no extra call per send.
    writeMessage = write

    def dataReceived(self, data: bytes) -> None:
        """Verify the echo; the common case is one whole message per read.

        In open loop, then make any send that has fallen due meanwhile,
        by the clock after this echo's work.
        """
        now = self.now()
        if not self.pending and self.inflight:
            message, intended, sent = self.inflight[0]
            if data == message:
                self.inflight.popleft()
                self.echoed(message, intended, sent, now)
            else:
                self.verifyPieces(data, now)
        else:
            self.verifyPieces(data, now)
        # The clock read anew: a send can fall due while this echo's work
        # is done (in a third of echoes at 50,000 sends/s, measured on a
        # busy host), and the next check could be a reactor turn away.
        if self.openLoop and self.now() >= self.run.dueAt:
            self.run.tick()

    def verifyPieces(self, data: bytes, now: float) -> None:
        """Verify echoes that arrive in pieces, several at once, or wrong.

        C{data} can only echo the messages in flight when it arrived: each
        verified echo sends the next message at once, but bytes read
        before that message left are no echo of it.  Bytes beyond those
        messages are C{excess} (C{duplicated} if they repeat the last echo).
        """
        buffer = self.pending + data
        due = len(self.inflight)
        while buffer:
            if not due:
                self.fail(classifyExcess(buffer, self.previous))
                return
            message, intended, sent = self.inflight[0]
            head = buffer[: len(message)]
            if not message.startswith(head):
                later = [m for m, _, _ in list(self.inflight)[1:due]]
                self.fail(classifyMismatch(head, later, self.previous))
                return
            if len(head) < len(message):
                break
            self.inflight.popleft()
            due -= 1
            buffer = buffer[len(message) :]
            self.echoed(message, intended, sent, now)
            if self.failed:
                return
        self.pending = buffer

    def echoed(self, message: bytes, intended: float, sent: float, now: float) -> None:
        """Record one verified echo and send the next message."""
        self.previous = message
        self.recordEcho(intended, sent, now)
        self.sendNext()

    def oldestSend(self, now: float) -> float:
        """How long the oldest echo still due has been waiting (0 if none)."""
        if not self.inflight:
            return 0.0
        return now - self.inflight[0][2]

    def fail(self, kind: str) -> None:
        """Count an error of C{kind}; drop this connection and replace it."""
        if self.failed:
            return
        self.failed = True
        self.run.error(kind)
        self.abort()
        self.run.replace(self.slot)

    def abort(self) -> None:
        """Drop the connection without waiting for anything."""
        if self.transport is not None and not self.closed:
            cast(ITCPTransport, self.transport).abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """A close the run did not ask for is an error: the server hung up."""
        self.closed = True
        factory = getattr(self, "factory", None)
        if isinstance(factory, LoadFactory) and not factory.connected.called:
            # Lost before the TLS handshake was done: a failed connection.
            factory.connected.errback(reason)
            return
        if self.failed or not self.run.running:
            return
        self.failed = True
        if reason.check(*TLS_ERRORS):
            self.run.error("tls")
        elif self.pending:
            self.run.error("truncated")
        else:
            self.run.error("closed")
        self.run.replace(self.slot)


class LoadFactory(ClientFactory):
    """Build the one L{LoadConnection} of a slot; C{connected} fires on connect."""

    noisy = False

    def __init__(self, run: LoadRun, slot: int) -> None:
        self.run = run
        self.slot = slot
        self.cid = run.newCid()
        self.connected: Deferred[None] = Deferred()

    def buildProtocol(self, addr: object) -> LoadConnection:
        """The slot's connection (it takes its slot once connected)."""
        protocol = LoadConnection(self.run, self.slot, self.cid)
        protocol.factory = self
        if not self.run.config.tls:
            # Over TLS the handshake's end says so (handshakeCompleted).
            self.run.reactor.callLater(0, self._made)
        return protocol

    def _made(self) -> None:
        if not self.connected.called:
            self.connected.callback(None)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """Count the failure; the caller decides whether to retry."""
        self.run.error("connect")
        if not self.connected.called:
            self.connected.errback(reason)


async def sleep(reactor: IReactorTime, seconds: float) -> None:
    """Wait C{seconds} on C{reactor}'s clock (0: until its next turn)."""
    await task.deferLater(reactor, max(seconds, 0.0), lambda: None)


def _firstFailure(results: list[tuple[bool, object]]) -> Failure | None:
    for ok, result in results:
        if not ok and isinstance(result, Failure):
            return result
    return None


def describeConnectFailure(failure: Failure, host: str, port: int) -> str:
    """One line saying why no connection to C{host}:C{port} could be made."""
    where = formatHostPort(host, port)
    if failure.check(ConnectionRefusedError):
        return f"connection refused by {where}"
    if failure.check(*TLS_ERRORS):
        return (
            f"TLS with {where} failed: {failure.getErrorMessage()}"
            " (--insecure skips the certificate check)"
        )
    return f"cannot connect to {where}: {failure.getErrorMessage()}"


async def measure(
    run: LoadRun,
    reactor: IReactorTime,
    observer: IntervalObserver | None,
    warmup: float,
) -> float:
    """Warm up, then measure for the configured duration; return the window.

    Every C{interval} seconds the collected latencies go into the
    histograms and C{observer} hears about the interval.
    """
    # Every recorder of the run: the latencies first, then (open loop) the
    # uncorrected ones and the send delays.
    recorders = [run.recorder]
    if run.uncorrected is not None:
        recorders.append(run.uncorrected)
    if run.delays is not None:
        recorders += run.delays.recorders()
    await sleep(reactor, warmup)
    for recorder in recorders:
        recorder.clear()
    run.measuring = True
    start = previous = run.now()
    end = start + run.config.duration
    while True:
        await sleep(reactor, min(run.config.interval, end - run.now()))
        now = run.now()
        last = now >= end
        if last:
            # Stop counting in the same turn as the final flush, so no echo
            # falls between the two.
            run.measuring = False
        # Taken in this turn, counted over the next ones (see flushInSlices),
        # in pauses that make the sends due and give the reactor its turns.
        taken = [(recorder, recorder.take()) for recorder in recorders]
        breaks = Breaks(reactor, run.now, run)
        batches = [
            await flushInSlices(breaks, recorder, samples)
            for recorder, samples in taken
        ]
        batch, summary = batches[0]
        uncorrected = batches[1][0] if run.uncorrected is not None else None
        run.interval = dataclasses.replace(
            summary, start=previous - start, end=now - start
        )
        if observer is not None:
            observer(batch, uncorrected, previous - start, now - start, run)
        previous = now
        if last:
            return now - start


# The per-interval work runs in chunks of about 15 us here (128 samples
# took 14 us to count, 16 values 14 us to quantize, 4 buckets 15 us to
# record).  Between two chunks a send that has fallen due is made; after
# SLICE seconds of work the reactor gets a turn (reads the echoes waiting).
# Slices of a whole reactor turn each (4,096 samples, 512 values, 64
# buckets: about half a millisecond) held up every send due meanwhile: at
# 50,000 sends/s that set the send delay's p99.
COUNT_CHUNK = 128
QUANTIZE_CHUNK = 16
RECORD_CHUNK = 4
SLICE = 100e-6


class Paced(TypingProtocol):
    """An open-loop schedule, as far as work that must not delay it sees it."""

    # When the next send is due (infinity: none is).
    dueAt: float

    def tick(self) -> None:
        """Make the sends due by now."""


class Breaks:
    """Pauses in long work, so that it holds up neither sends nor reads.

    The work calls L{take} after each chunk of a few microseconds: an
    open-loop send that has fallen due by then is made at once, and once
    C{sliceSeconds} have passed since the reactor's last turn the work
    waits for the next turn, in which echoes are read.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        now: Callable[[], float],
        paced: Paced | None = None,
        sliceSeconds: float = SLICE,
    ) -> None:
        self.reactor = reactor
        self.now = now
        self.paced = paced
        self.sliceSeconds = sliceSeconds
        self.turns = 0
        self.sliceEnd = now() + sliceSeconds

    async def take(self) -> None:
        """Make the sends due; let the reactor run if this slice is used up."""
        now = self.now()
        paced = self.paced
        if paced is not None and now >= paced.dueAt:
            paced.tick()
        if now >= self.sliceEnd:
            self.turns += 1
            await sleep(self.reactor, 0)
            self.sliceEnd = self.now() + self.sliceSeconds


async def flushInSlices(
    breaks: Breaks, recorder: LatencyRecorder, samples: Sequence[int]
) -> tuple[HdrHistogram, Interval]:
    """Record C{samples} into C{recorder}'s histogram in small chunks.

    Counting a second's samples and recording each distinct value in the
    pure-Python histogram takes milliseconds (more at high rates and with
    widely spread latencies); done at once it would hold up every send
    due meanwhile, and the open loop's send delay would show a spike each
    second.  Chunks of a few microseconds, with L{Breaks} between them,
    hold up a send by about one chunk.  Returns the batch's own histogram
    and its summary (whose start and end are left at 0).
    """
    exact: Counter[int] = Counter()
    for first in range(0, len(samples), COUNT_CHUNK):
        exact.update(samples[first : first + COUNT_CHUNK])
        await breaks.take()
    counts: Counter[int] = Counter()
    for i, (value, count) in enumerate(exact.items()):
        counts[quantize(min(max(value, 0), HIGHEST_US))] += count
        if i % QUANTIZE_CHUNK == QUANTIZE_CHUNK - 1:
            await breaks.take()
    batch = newHistogram()
    await breaks.take()
    for i, (value, count) in enumerate(counts.items()):
        batch.record_value(value, count)
        if i % RECORD_CHUNK == RECORD_CHUNK - 1:
            await breaks.take()
    await breaks.take()
    recorder.histogram.add(batch)
    return batch, Interval.ofCounts(counts, 0.0, 0.0)


def resultsOf(run: LoadRun, seconds: float, echoes: int | None = None) -> Results:
    """What C{run} has measured in C{seconds} (so far, if it is still going)."""
    config = run.config
    histogram = run.recorder.histogram
    return Results(
        mode=config.mode,
        connections=config.connections,
        size=config.size,
        seconds=seconds,
        echoes=histogram.get_total_count() if echoes is None else echoes,
        histogram=histogram,
        errors=run.errors,
        pipeline=config.pipeline,
        uncorrected=run.uncorrected.histogram if run.uncorrected else None,
        targetRate=config.rate,
        delays=run.delays.sendDelays() if run.delays else None,
        scheduleDelays=run.delays.scheduleDelays() if run.delays else None,
        held=run.delays.heldCount() if run.delays else None,
        lost=run.lost if config.udp else None,
        late=run.late if config.udp else None,
    )


async def runPingpong(
    reactor: IReactorTime,
    now: Callable[[], float],
    config: LoadConfig,
    address: str,
    observer: IntervalObserver | None = None,
    *,
    makeWaker: Callable[[IReactorTime, Callable[[], object]], Waker] = makeWaker,
) -> Results:
    """Pingpong load, closed or open loop, on C{config.connections} connections.

    C{makeWaker} makes the open loop's timer (L{echotwist.bench.timer}).
    """
    run = LoadRun(reactor, now, config, address, makeWaker)
    outcomes = await DeferredList(
        [run.connectSlot(slot) for slot in range(config.connections)],
        consumeErrors=True,
    )
    failure = _firstFailure(list(outcomes))
    if all(not ok for ok, _ in outcomes) and failure is not None:
        run.finish()
        raise SetupError(describeConnectFailure(failure, config.host, config.port))
    for slot, (ok, _) in enumerate(outcomes):
        if not ok:
            run.replace(slot)
    run.begin()
    try:
        seconds = await measure(run, reactor, observer, config.warmup)
    finally:
        run.finish()
    return resultsOf(run, seconds)


class TransactionConnection(Protocol):
    """Connect mode: send one message, verify its echo, close (TCP_CRR).

    In hold mode the connection stays open after its verified echo, and
    L{finalEcho} checks at the end of the hold that it still answers.
    """

    def __init__(
        self,
        run: LoadRun,
        message: bytes,
        started: float,
        intended: float | None = None,
    ) -> None:
        self.run = run
        self.message = message
        self.started = started
        # When the transaction was due (open loop), else when it started.
        self.intended = started if intended is None else intended
        self.received = b""
        self.done = False
        self.finished: Deferred[None] = Deferred()
        # Set when the whole echo is verified and the connection held (hold).
        self.holding = False
        self.hold = False
        # Error kinds are prefixed with this: "hold_final_" during the
        # final echo, so its failures are told apart from the set-up's.
        self.phase = ""
        self.answered = False

    def connectionMade(self) -> None:
        """Send the message at once."""
        assert self.transport is not None
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.transport.write(self.message)

    def finalEcho(self, message: bytes) -> Deferred[None]:
        """Hold mode: send C{message} on the held connection and verify its echo.

        The returned Deferred fires when the echo is whole (C{answered} is
        then set and the connection held again) or has gone wrong (counted
        as a C{hold_final_...} error, the connection aborted).
        """
        assert self.transport is not None
        self.holding = False
        self.phase = "hold_final_"
        self.message = message
        self.received = b""
        self.finished = Deferred()
        self.transport.write(message)
        return self.finished

    def dataReceived(self, data: bytes) -> None:
        """Verify the echo as it comes; close when it is whole."""
        if self.done:
            # Bytes still in flight after a timeout ended the connection.
            return
        if self.holding:
            self.end("hold_data")
            return
        self.received += data
        if not self.message.startswith(self.received[: len(self.message)]):
            self.end(self.phase + "corrupt")
        elif len(self.received) > len(self.message):
            self.end(self.phase + "excess")
        elif len(self.received) == len(self.message):
            run = self.run
            if self.phase:
                self.answered = True
                self.holding = True
                self.finished.callback(None)
                return
            if run.measuring or self.hold:
                now = run.now()
                run.recorder.samples.append(int((now - self.intended) * 1e6))
                if run.uncorrected is not None:
                    run.uncorrected.samples.append(int((now - self.started) * 1e6))
            if self.hold:
                self.holding = True
                self.finished.callback(None)
            else:
                self.end(None)

    def end(self, error: str | None) -> None:
        """Close (aborting after an error) and let the slot go on."""
        if self.done:
            return
        self.done = True
        assert self.transport is not None
        if error is not None:
            self.run.error(error)
            cast(ITCPTransport, self.transport).abortConnection()
        else:
            self.transport.loseConnection()
        if not self.finished.called:
            self.finished.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """A close before the echo was whole, or during a hold, is an error."""
        if self.done or not self.run.running:
            self.done = True
            return
        if self.holding:
            kind = "hold_closed"
        elif reason.check(*TLS_ERRORS):
            kind = self.phase + "tls"
        else:
            kind = self.phase + ("truncated" if self.received else "closed")
        self.end(kind)


class TransactionFactory(ClientFactory):
    """Make one L{TransactionConnection}; C{finished} fires when it is over."""

    noisy = False

    def __init__(
        self,
        run: LoadRun,
        message: bytes,
        hold: bool = False,
        cid: int = 0,
        intended: float | None = None,
    ) -> None:
        self.run = run
        self.cid = cid
        self.message = message
        self.started = run.now()
        self.intended = intended
        self.finished: Deferred[None] = Deferred()
        self.connection: TransactionConnection | None = None
        self.hold = hold

    def buildProtocol(self, addr: object) -> TransactionConnection:
        """The connection, reporting to C{finished}."""
        protocol = TransactionConnection(
            self.run, self.message, self.started, self.intended
        )
        protocol.hold = self.hold
        protocol.finished.chainDeferred(self.finished)
        self.connection = protocol
        return protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """Count the failure and let the slot go on."""
        self.run.error("connect")
        if not self.finished.called:
            self.finished.callback(None)


def startTransaction(
    run: LoadRun, hold: bool = False, intended: float | None = None
) -> TransactionFactory:
    """Connect for one transaction from the next source address.

    C{intended} is when it was due (open loop), for its corrected latency.
    """
    cid = run.newCid()
    factory = TransactionFactory(run, run.payload.message(cid, 0), hold, cid, intended)
    run.connect(factory, cid)
    return factory


async def runConnect(
    reactor: IReactorTime,
    now: Callable[[], float],
    config: LoadConfig,
    address: str,
    observer: IntervalObserver | None = None,
    *,
    makeWaker: Callable[[IReactorTime, Callable[[], object]], Waker] = makeWaker,
) -> Results:
    """Connect mode: C{config.connections} slots loop connect/echo/close.

    With C{config.rate}, new connections start on the open-loop schedule
    instead, at most C{config.connections} in progress at once (one due
    beyond that starts when one ends, late).
    """
    run = LoadRun(reactor, now, config, address, makeWaker)

    def slotLoop(_: object = None) -> None:
        if not run.running:
            return
        errors = sum(run.errors.values())
        factory = startTransaction(run)

        def next(_: object) -> None:
            # Back off a little after an error so a dead server is not
            # hammered in a tight loop; otherwise go straight on.
            if sum(run.errors.values()) > errors:
                run.later(RECONNECT_DELAY, slotLoop)
            else:
                run.later(0, slotLoop)

        factory.finished.addCallback(next)

    # Check that the server is there before starting the slots.
    probe = startTransaction(run)
    await probe.finished
    if run.errors:
        run.finish()
        raise SetupError(
            f"cannot echo with {formatHostPort(config.host, config.port)}"
            f" ({', '.join(sorted(run.errors))})"
        )
    if config.rate is None:
        for _ in range(config.connections):
            slotLoop()
    else:
        run.beginConnecting()
    try:
        seconds = await measure(run, reactor, observer, config.warmup)
    finally:
        run.finish()
    return resultsOf(run, seconds)


async def runHold(
    reactor: IReactorTime,
    now: Callable[[], float],
    config: LoadConfig,
    address: str,
    observer: IntervalObserver | None = None,
) -> Results:
    """Hold mode: open C{config.connections}, one verified echo each, hold them.

    The histogram holds the set-up latencies (connect to verified echo);
    C{echoes} is the number of connections still held, unharmed, at the
    end of the hold.  Then each of those sends one more message, and
    C{answered} counts the ones whose echo came back whole and right
    within twice the connect timeout (the others count as
    C{hold_final_...} errors).
    """
    run = LoadRun(reactor, now, config, address)
    run.measuring = True
    semaphore = DeferredSemaphore(SETUP_CONCURRENCY)
    factories: list[TransactionFactory] = []
    wait = config.connectTimeout * 2

    async def openOne() -> None:
        factory = startTransaction(run, hold=True)
        factories.append(factory)
        try:
            await factory.finished.addTimeout(wait, reactor)
        except TimeoutError:
            # No verified echo in time: count it, and do not hold it.
            run.error("timeout")
            if factory.connection is not None:
                factory.connection.end(None)

    async def checkOne(factory: TransactionFactory) -> None:
        connection = factory.connection
        assert connection is not None
        if connection.done:
            # Lost while waiting for its turn: already counted (hold_closed).
            return
        echo = connection.finalEcho(run.payload.message(factory.cid, 1))
        try:
            await echo.addTimeout(wait, reactor)
        except TimeoutError:
            connection.end("hold_final_timeout")

    def held() -> list[TransactionFactory]:
        return [
            f
            for f in factories
            if f.connection is not None
            and f.connection.holding
            and not f.connection.done
        ]

    started = now()
    await DeferredList(
        [
            semaphore.run(lambda: Deferred.fromCoroutine(openOne()))
            for _ in range(config.connections)
        ],
        consumeErrors=True,
    )
    setupSeconds = now() - started
    if not held():
        run.finish()
        for factory in factories:
            if factory.connection is not None:
                factory.connection.end(None)
        raise SetupError(
            "cannot hold connections to"
            f" {formatHostPort(config.host, config.port)}"
            f" ({', '.join(sorted(run.errors)) or 'no echo'})"
        )
    run.recorder.flush()
    try:
        seconds = await measure(run, reactor, observer, 0)
        holding = held()
        checking = now()
        # At most SETUP_CONCURRENCY echoes in flight, so that each one's
        # timeout measures the server's answer, not a queue of our own.
        await DeferredList(
            [
                semaphore.run(
                    lambda factory: Deferred.fromCoroutine(checkOne(factory)),
                    factory,
                )
                for factory in holding
            ],
            consumeErrors=True,
        )
        finalSeconds = now() - checking
    finally:
        run.finish()
        for factory in factories:
            if factory.connection is not None:
                factory.connection.end(None)
    results = resultsOf(run, seconds, echoes=len(holding))
    results.answered = sum(
        1 for f in holding if f.connection is not None and f.connection.answered
    )
    results.setupSeconds = setupSeconds
    results.finalSeconds = finalSeconds
    return results
