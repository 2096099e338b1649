"""Unit tests for limits, idle timeout and drain in the echo factory/protocol.

No sockets, no real time: string transports and L{task.Clock}.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.base import ReactorBase
from twisted.internet.error import ConnectionLost, ReactorNotRunning
from twisted.internet.interfaces import ITransport, _ISupportsExitSignalCapturing
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist.protocol import Echo, EchoFactory, Rejected
from echotwist.server.filelimit import FileLimitService
from echotwist.server.limits import AddressPolicy, ConnectionLimits, parseNetwork
from echotwist.server.shutdown import CleanExitService, DrainService, exitAtEnd
from echotwist.server.sockets import unsentBytes
from echotwist.test.test_protocol import TCPStringTransport


class Probe:
    """A stand-in for the kernel's unsent-byte count of a socket."""

    def __init__(self) -> None:
        self.unsent: int | None = None

    def __call__(self, transport: ITransport) -> int | None:
        """Report the current unsent count."""
        return self.unsent


def connect(
    factory: EchoFactory, host: str = "192.0.2.7", port: int = 40000
) -> tuple[Echo | Rejected, TCPStringTransport]:
    """Connect a client at C{host}:C{port} through C{factory}."""
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = TCPStringTransport(peerAddress=address)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


def echoFactory(
    clock: Clock | None = None,
    limits: ConnectionLimits | None = None,
    idleTimeout: float = 0.0,
    probe: Callable[[ITransport], int | None] | None = None,
) -> EchoFactory:
    """An L{EchoFactory} on C{clock} with no real socket probing."""
    return EchoFactory(
        clock=clock or Clock(),
        limits=limits,
        idleTimeout=idleTimeout,
        unsentBytes=probe or Probe(),
    )


def advance(clock: Clock, seconds: float) -> None:
    """Let C{seconds} pass in quarter-second steps, as a running reactor would.

    C{Clock.advance} jumps at once, so a timer that reschedules itself would
    otherwise only fire once per call.
    """
    clock.pump([0.25] * round(seconds / 0.25))


class IdleTimeoutTests(SynchronousTestCase):
    """Connections without traffic are aborted after the idle timeout."""

    def test_silentConnectionAborted(self) -> None:
        """No traffic at all: open just before the timeout, aborted at it."""
        clock = Clock()
        factory = echoFactory(clock, idleTimeout=4)
        with capturedLogs() as events:
            _, transport = connect(factory)
            advance(clock, 3.75)
            self.assertTrue(transport.connected)
            advance(clock, 0.25)
        self.assertFalse(transport.connected)
        self.assertTrue(transport.disconnected, "aborted, not closed cleanly")
        idle = [e for e in events if e.get("reason") == "idle"]
        self.assertEqual(len(idle), 2, "the idle line and the close line")
        self.assertEqual(idle[0]["timeout"], 4)
        self.assertEqual(idle[1]["bytes"], 0)
        self.assertEqual(factory.stats.connectionsActive, 0)

    def test_trafficKeepsAlive(self) -> None:
        """Reads every half timeout keep the connection; then silence ends it."""
        clock = Clock()
        factory = echoFactory(clock, idleTimeout=4)
        protocol, transport = connect(factory)
        for _ in range(20):
            advance(clock, 2)
            protocol.dataReceived(b"x")
        self.assertTrue(transport.connected)
        advance(clock, 4)
        self.assertTrue(transport.connected, "between 1 and 1.25 timeouts")
        advance(clock, 1)
        self.assertFalse(transport.connected)

    def test_drainingOutputIsTraffic(self) -> None:
        """A client slowly reading a long echo (unsent count falling) is not idle."""
        clock = Clock()
        probe = Probe()
        factory = echoFactory(clock, idleTimeout=4, probe=probe)
        _, transport = connect(factory)
        for unsent in range(100000, 0, -5000):
            probe.unsent = unsent
            advance(clock, 1)
        self.assertTrue(transport.connected)

    def test_neverReadingClientIsIdle(self) -> None:
        """Output stuck in the kernel (a client that never reads) is idle."""
        clock = Clock()
        probe = Probe()
        factory = echoFactory(clock, idleTimeout=4, probe=probe)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"y" * 1000)
        probe.unsent = 2_500_000
        advance(clock, 5)
        self.assertFalse(transport.connected)

    def test_readsDoNotTouchTheTimer(self) -> None:
        """The hot path leaves the one pending timer alone: no reset per read."""
        clock = Clock()
        factory = echoFactory(clock, idleTimeout=4)
        protocol, _ = connect(factory)
        [pending] = clock.getDelayedCalls()
        due = pending.getTime()
        for _ in range(1000):
            protocol.dataReceived(b"z")
        self.assertEqual(clock.getDelayedCalls(), [pending])
        self.assertEqual(pending.getTime(), due)

    def test_oneTimerForAllConnections(self) -> None:
        """Many connections share one idle timer; only the quiet one is aborted."""
        clock = Clock()
        factory = echoFactory(clock, idleTimeout=4)
        busy, busyTransport = connect(factory)
        _, quietTransport = connect(factory, port=40001)
        _, otherQuiet = connect(factory, port=40002)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        for _ in range(10):
            advance(clock, 1)
            busy.dataReceived(b"!")
        self.assertTrue(busyTransport.connected)
        self.assertFalse(quietTransport.connected)
        self.assertFalse(otherQuiet.connected)
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_offMeansNoTimer(self) -> None:
        """An idle timeout of 0 schedules nothing."""
        clock = Clock()
        _, transport = connect(echoFactory(clock, idleTimeout=0))
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10**6)
        self.assertTrue(transport.connected)

    def test_closeCancelsTimer(self) -> None:
        """A closed connection leaves no timer behind."""
        clock = Clock()
        _, transport = connect(echoFactory(clock, idleTimeout=4))
        transport.loseConnection()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unsentBytesWithoutSocket(self) -> None:
        """A transport without a real socket gives no drain information."""
        self.assertIsNone(unsentBytes(StringTransport()))


class AdmissionTests(SynchronousTestCase):
    """The factory admits clients under its limits and rejects the rest."""

    def test_limitRejectsAndCounts(self) -> None:
        """Past the cap: aborted at once, logged and counted; the first is served."""
        factory = echoFactory(limits=ConnectionLimits(maxConnections=1))
        first, firstTransport = connect(factory)
        with capturedLogs() as events:
            second, secondTransport = connect(factory, port=40001)
        self.assertIsInstance(first, Echo)
        self.assertIsInstance(second, Rejected)
        self.assertTrue(secondTransport.disconnected)
        self.assertTrue(firstTransport.connected)
        self.assertEqual(factory.stats.rejected, {"limit": 1})
        self.assertEqual(
            [(e["host"], e["port"], e["reason"]) for e in events],
            [("192.0.2.7", "40001", "limit")],
        )
        first.dataReceived(b"still echoing")
        self.assertEqual(firstTransport.value(), b"still echoing")

    def test_slotFreedOnClose(self) -> None:
        """A closed connection frees its slot for the next client."""
        factory = echoFactory(limits=ConnectionLimits(maxConnections=1))
        _, transport = connect(factory)
        transport.loseConnection()
        protocol, _ = connect(factory, port=40001)
        self.assertIsInstance(protocol, Echo)

    def test_perIpAndDenied(self) -> None:
        """Per-IP and address-policy rejections are counted by their reasons."""
        limits = ConnectionLimits(
            maxPerIp=1, policy=AddressPolicy(deny=[parseNetwork("203.0.113.0/24")])
        )
        factory = echoFactory(limits=limits)
        connect(factory, "192.0.2.7")
        connect(factory, "192.0.2.7", 40001)
        connect(factory, "203.0.113.5")
        protocol, _ = connect(factory, "192.0.2.8")
        self.assertIsInstance(protocol, Echo)
        self.assertEqual(factory.stats.rejected, {"per-ip": 1, "denied": 1})

    def test_ipv6AndUnix(self) -> None:
        """IPv6 peers are matched by the policy; UNIX peers are exempt from it."""
        limits = ConnectionLimits(
            policy=AddressPolicy(allow=[parseNetwork("2001:db8::/32")])
        )
        factory = echoFactory(limits=limits)
        allowed = factory.buildProtocol(IPv6Address("TCP", "2001:db8::1", 1))
        refused = factory.buildProtocol(IPv6Address("TCP", "2001:db9::1", 1))
        local = factory.buildProtocol(UNIXAddress(b"/tmp/echo.sock"))
        self.assertIsInstance(allowed, Echo)
        self.assertIsInstance(refused, Rejected)
        self.assertIsInstance(local, Echo)


class DrainTests(SynchronousTestCase):
    """L{EchoFactory.drain} lets connections finish, then aborts the rest."""

    def test_waitsForConnections(self) -> None:
        """The drain ends when the last open connection closes, echoing meanwhile."""
        clock = Clock()
        factory = echoFactory(clock)
        one, oneTransport = connect(factory)
        _, twoTransport = connect(factory, port=40001)
        drained = factory.drain(10)
        self.assertNoResult(drained)
        one.dataReceived(b"after SIGTERM")
        self.assertEqual(oneTransport.value(), b"after SIGTERM")
        oneTransport.loseConnection()
        self.assertNoResult(drained)
        twoTransport.loseConnection()
        self.successResultOf(drained)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_abortsAfterTimeout(self) -> None:
        """Connections still open at the deadline are aborted; the drain ends."""
        clock = Clock()
        factory = echoFactory(clock)
        _, transport = connect(factory)
        drained = factory.drain(10)
        clock.advance(9.9)
        self.assertNoResult(drained)
        self.assertTrue(transport.connected)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.successResultOf(drained)

    def test_closeReasons(self) -> None:
        """The close line says why: done, lost, or shutdown when the drain aborts."""
        clock = Clock()
        factory = echoFactory(clock)
        _, clean = connect(factory)
        _, lost = connect(factory, port=40001)
        connect(factory, port=40002)
        with capturedLogs() as events:
            clean.loseConnection()
            assert lost.protocol is not None
            lost.protocol.connectionLost(Failure(ConnectionLost()))
            factory.drain(1)
            clock.advance(1)
        self.assertEqual(
            [e["reason"] for e in events if "bytes" in e], ["done", "lost", "shutdown"]
        )

    def test_nothingToDrain(self) -> None:
        """With no connection open the drain ends at once."""
        self.successResultOf(echoFactory().drain(10))


@implementer(_ISupportsExitSignalCapturing)
class FakeReactor(MemoryReactorClock):
    """A memory reactor that queues calls from 'other threads' and counts stops.

    Like Twisted's reactors it captures exit signals: twistd kills itself
    with whatever signal a SIGTERM handler records in C{_exitSignal}, which
    starts as C{None}.
    """

    def __init__(self) -> None:
        # Twisted's memory reactors are not annotated.
        super().__init__()  # type: ignore[no-untyped-call]
        self.stopRequests = 0
        self.fromThreads: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        self._exitSignal: int | None = None

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        """Queue C{f} for the reactor's loop (signal handlers reach it this way)."""
        self.fromThreads.append((f, args))

    def runFromThreads(self) -> None:
        """Run the queued calls, as the reactor's loop would."""
        queued, self.fromThreads = self.fromThreads, []
        for f, args in queued:
            f(*args)

    def stop(self) -> None:
        """Count requests to stop; like a reactor's, a second one raises."""
        self.stopRequests += 1
        if self.stopRequests > 1:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")


class DrainServiceTests(SynchronousTestCase):
    """L{DrainService} handles SIGTERM itself and drains on stop."""

    def startDrain(
        self, reactor: FakeReactor
    ) -> tuple[DrainService, dict[int, Callable[[int, FrameType | None], None]]]:
        """A started L{DrainService} and the signal handlers it installed."""
        installed: dict[int, Callable[[int, FrameType | None], None]] = {}

        def install(
            number: int, handler: Callable[[int, FrameType | None], None]
        ) -> None:
            installed[number] = handler

        service = DrainService(reactor, echoFactory(reactor), 10, install)
        service.privilegedStartService()
        return service, installed

    def test_sigtermStopsReactorWithoutExitSignal(self) -> None:
        """SIGTERM is ours from the start: it stops the reactor, records no signal."""
        reactor = FakeReactor()
        service, installed = self.startDrain(reactor)
        self.assertEqual(
            installed,
            {
                signal.SIGTERM: service.stopSignal,
                signal.SIGINT: service.stopSignal,
                signal.SIGHUP: service.hangUpSignal,
            },
        )
        # The handlers the reactor will install when it runs are ours too.
        self.assertEqual(getattr(reactor, "sigTerm", None), service.stopSignal)
        self.assertEqual(getattr(reactor, "sigInt", None), service.stopSignal)
        with capturedLogs() as events:
            installed[signal.SIGTERM](signal.SIGTERM, None)
            # From the signal handler only a request, through the reactor's
            # thread-safe queue: the stop itself happens in the reactor's loop.
            self.assertEqual(events, [])
            self.assertEqual(reactor.stopRequests, 0)
            reactor.runFromThreads()
        self.assertEqual(reactor.stopRequests, 1)
        self.assertIsNone(reactor._exitSignal)
        self.assertEqual(
            [e["log_format"].format(**e) for e in events],
            ["Received SIGTERM, draining and shutting down."],
        )

    def test_sigintStopsLikeSigterm(self) -> None:
        """Ctrl-C drains and exits 0 too: no exit signal is recorded."""
        reactor = FakeReactor()
        _, installed = self.startDrain(reactor)
        installed[signal.SIGINT](signal.SIGINT, None)
        reactor.runFromThreads()
        self.assertEqual(reactor.stopRequests, 1)
        self.assertIsNone(reactor._exitSignal)

    def test_secondSignalStopsNothing(self) -> None:
        """A signal to the whole group, then the supervisor's: one stop, no error."""
        reactor = FakeReactor()
        _, installed = self.startDrain(reactor)
        installed[signal.SIGINT](signal.SIGINT, None)
        installed[signal.SIGTERM](signal.SIGTERM, None)
        with capturedLogs() as events:
            reactor.runFromThreads()
        self.assertEqual(reactor.stopRequests, 1)
        self.assertEqual(
            [e["log_format"].format(**e) for e in events],
            [
                "Received SIGINT, draining and shutting down.",
                "Received SIGTERM again; already shutting down",
            ],
        )

    def test_stopWhileStopping(self) -> None:
        """A stop signal while the reactor is already stopping is no error."""
        reactor = FakeReactor()
        _, installed = self.startDrain(reactor)
        reactor.stop()
        installed[signal.SIGTERM](signal.SIGTERM, None)
        reactor.runFromThreads()
        self.assertEqual(reactor.stopRequests, 2)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_hangUpServesOn(self) -> None:
        """SIGHUP in one process is logged, and the server serves on."""
        reactor = FakeReactor()
        _, installed = self.startDrain(reactor)
        with capturedLogs() as events:
            installed[signal.SIGHUP](signal.SIGHUP, None)
            reactor.runFromThreads()
        self.assertEqual(reactor.stopRequests, 0)
        self.assertEqual(len(events), 1)
        self.assertIn("Received SIGHUP", events[0]["log_format"])

    def test_hangUpReloads(self) -> None:
        """With a reload function, SIGHUP calls it from the reactor's loop."""
        reactor = FakeReactor()
        reloads: list[None] = []
        installed: dict[int, Callable[[int, FrameType | None], None]] = {}
        service = CleanExitService(
            reactor,
            installed.__setitem__,
            reload=lambda: reloads.append(None),
        )
        service.privilegedStartService()
        installed[signal.SIGHUP](signal.SIGHUP, None)
        self.assertEqual(reloads, [])
        reactor.runFromThreads()
        self.assertEqual(reloads, [None])
        self.assertEqual(reactor.stopRequests, 0)

    def test_reactorHandlerRecordsExitSignal(self) -> None:
        """Twisted's own SIGTERM handler, on the same fake, records the signal."""
        # The control for the test above: the fake captures what makes
        # twistd exit with -SIGTERM, so a handler that recorded it would fail.
        reactor = FakeReactor()
        ReactorBase.sigTerm(cast(ReactorBase, reactor), signal.SIGTERM)
        self.assertEqual(reactor.fromThreads, [(reactor.stop, ())])
        self.assertEqual(reactor._exitSignal, signal.SIGTERM)

    def test_stopDrains(self) -> None:
        """Stopping the service waits for open connections, up to the timeout."""
        reactor = FakeReactor()
        factory = echoFactory(reactor)
        _, transport = connect(factory)
        service = DrainService(reactor, factory, 5, None)
        service.privilegedStartService()
        service.startService()
        stopping = service.stopService()
        self.assertNoResult(stopping)
        reactor.advance(5)
        self.assertTrue(transport.disconnected)
        self.successResultOf(stopping)


class ExitAtEndTests(SynchronousTestCase):
    """L{exitAtEnd} leaves the exit status for the end of the process."""

    def test_registersOnly(self) -> None:
        """Nothing exits now: one function is registered to run at exit."""
        registered: list[Callable[[], object]] = []
        exitAtEnd(1, registered.append)
        self.assertEqual(len(registered), 1)
        self.assertTrue(callable(registered[0]))


class FileLimitServiceTests(SynchronousTestCase):
    """The server raises its soft open-file limit for --max-connections."""

    def startWith(
        self, maxConnections: int, soft: int, hard: int
    ) -> tuple[list[tuple[int, int]], list[LogEvent]]:
        """Start a L{FileLimitService} on fake limits; the limits set, the logs."""
        limits: list[tuple[int, int]] = []
        service = FileLimitService(
            maxConnections, getLimit=lambda: (soft, hard), setLimit=limits.append
        )
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
        return limits, list(events)

    def test_raised(self) -> None:
        """A low soft limit is raised once, with one info line."""
        limits, events = self.startWith(15000, 1024, 20000)
        self.assertEqual(limits, [(15064, 20000)])
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.info)
        self.assertEqual((events[0]["soft"], events[0]["target"]), (1024, 15064))

    def test_hardTooLow(self) -> None:
        """Raised to the hard limit, with one warning that it is not enough."""
        limits, events = self.startWith(30000, 1024, 20000)
        self.assertEqual(limits, [(20000, 20000)])
        self.assertEqual(
            [(e["log_level"], e.get("needed")) for e in events],
            [(LogLevel.info, None), (LogLevel.warn, 30064)],
        )

    def test_enough(self) -> None:
        """A soft limit already high enough is left alone, without a word."""
        limits, events = self.startWith(100, 1024, 20000)
        self.assertEqual((limits, events), ([], []))

    def test_cannotRaise(self) -> None:
        """A refused raise is one warning; the server goes on."""

        def refuse(limit: tuple[int, int]) -> None:
            raise ValueError("not allowed")

        service = FileLimitService(10, getLimit=lambda: (8, 100), setLimit=refuse)
        with capturedLogs() as events:
            service.privilegedStartService()
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
