"""Unit tests for the bench's open-loop timing and its wrk2-style output.

No sockets and no real time: the open loop runs on a memory reactor with
L{CallLaterWaker}, the timerfd waker on a stand-in timer.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import select
import sys
from collections import Counter
from collections.abc import Callable
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from echotwist.bench.arguments import buildParser
from echotwist.bench.compare import (
    BadReport,
    change,
    checkReport,
    compareRows,
    formatRows,
)
from echotwist.bench.hlog import IntervalLogWriter, mergeLogs
from echotwist.bench.load import COUNT_CHUNK, Breaks, LoadConnection, flushInSlices
from echotwist.bench.plot import curve, maximum, title
from echotwist.bench.report import IntervalLines, writeReport
from echotwist.bench.results import (
    Interval,
    LatencyRecorder,
    Results,
    SendDelays,
    childReport,
    encodeHistogram,
    flatten,
    formatDistribution,
    formatReport,
    highest,
    machineContext,
    newHistogram,
    percentiles,
    quantize,
    resultsFromChild,
)
from echotwist.bench.schedule import waitBefore
from echotwist.bench.timer import CallLaterWaker, Timerfd, TimerfdWaker
from echotwist.test.test_bench import attach, startRun


def histogramOf(values: list[int]) -> LatencyRecorder:
    """A recorder holding C{values}, flushed into its histogram."""
    recorder = LatencyRecorder()
    recorder.samples.extend(values)
    recorder.flush()
    return recorder


class WaitTests(SynchronousTestCase):
    """L{waitBefore} sleeps until C{lead} before a send, then spins."""

    def test_wait(self) -> None:
        """Far sends are slept for less the lead; near or late ones not at all."""
        self.assertAlmostEqual(waitBefore(1.0, 0.5, 0.0001), 0.4999)
        self.assertEqual(waitBefore(1.0, 0.99995, 0.0001), 0.0)
        self.assertEqual(waitBefore(1.0, 2.0, 0.0001), 0.0)


class OpenLoopTimingTests(SynchronousTestCase):
    """The open loop sends on time and reports how late each send left."""

    def test_sendDelayRecorded(self) -> None:
        """Each send's lateness (actual minus intended) is recorded in us."""
        # Times in powers of two, which floating point holds exactly.
        reactor, run = startRun(rate=1024, pipeline=4)
        run.measuring = True
        attach(run)
        run.begin()
        # A send is due every 1/1024 s; the wake-up comes 2**-12 s late.
        reactor.advance(2**-10 + 2**-12)
        assert run.delays is not None
        self.assertEqual(list(run.delays.made.samples), [0, 244])

    def test_wakesEarlyAndSpins(self) -> None:
        """The timer is set C{spin} before the next send, then the loop spins."""
        reactor, run = startRun(rate=100, spin=0.001)
        attach(run)
        run.begin()
        self.assertEqual(
            [round(call.getTime(), 6) for call in reactor.getDelayedCalls()], [0.009]
        )
        # Woken at 9 ms (the memory clock stands still, so the spin is
        # looked at, not run): the next turn is asked for at once.
        reactor.rightNow = 0.009
        run.tick()
        self.assertEqual(
            [round(call.getTime(), 6) for call in reactor.getDelayedCalls()], [0.009]
        )

    def test_echoMakesDueSends(self) -> None:
        """An echo read after a send fell due makes that send at once."""
        reactor, run = startRun(rate=1000, pipeline=4)
        run.measuring = True
        connection, written = attach(run)
        run.begin()
        first = written.getvalue()
        # The clock passes the next send's time without the timer firing.
        reactor.rightNow += 0.001
        connection.dataReceived(first)
        self.assertEqual(len(written.getvalue()), 2 * len(first))
        assert run.delays is not None
        self.assertEqual(list(run.delays.made.samples), [0, 0])

    def test_dueCheckedAfterTheEcho(self) -> None:
        """A send that falls due while an echo is handled is made after it.

        The clock is read again once the echo's work is done, not taken
        from before it.
        """
        reactor, run = startRun(rate=1024, pipeline=1)
        run.measuring = True
        connection = LoadConnection(run, 0, run.newCid())
        transport = SlowTransport(reactor)
        connection.makeConnection(transport)
        run.begin()
        first = transport.value()
        reactor.advance(2**-10)
        # The echo comes 2**-12 s later; sending the held second message
        # takes 2**-10 s, past the third's time (no timer fires meanwhile).
        reactor.rightNow += 2**-12
        transport.seconds = 2**-10
        connection.dataReceived(first)
        # The third send was reached (and held) right after the echo.
        self.assertEqual(list(connection.backlog), [(2 * 2**-10, 2 * 2**-10 + 2**-12)])

    def test_heldSendTimedTwice(self) -> None:
        """A send due while its pipeline is full: reached on time, sent late.

        The wait for the echo that makes room is the server's latency: it
        is in the send delay, not in the schedule delay.
        """
        reactor, run = startRun(rate=1024, pipeline=1)
        run.measuring = True
        connection, written = attach(run)
        run.begin()
        first = written.getvalue()
        # The second send falls due with the first still in flight ...
        reactor.advance(2**-10)
        self.assertEqual(written.getvalue(), first)
        # ... and leaves with the echo, 2**-12 s later.
        reactor.advance(2**-12)
        connection.dataReceived(first)
        self.assertEqual(len(written.getvalue()), 2 * len(first))
        delays = run.delays
        assert delays is not None
        self.assertEqual(
            [list(r.samples) for r in (delays.made, delays.reached, delays.held)],
            [[0], [0], [244]],
        )

    def test_sendAndScheduleDelaysCombined(self) -> None:
        """Each send counts once in each delay; the held ones are counted."""
        delays = SendDelays()
        delays.made.samples.extend([5, 6])
        delays.reached.samples.append(10)
        delays.held.samples.append(300)
        for recorder in delays.recorders():
            recorder.flush()
        sent, scheduled = delays.sendDelays(), delays.scheduleDelays()
        self.assertEqual(
            (sent.get_total_count(), sent.get_max_value()),
            (3, 300),
        )
        self.assertEqual(
            (scheduled.get_total_count(), scheduled.get_max_value()),
            (3, 10),
        )
        self.assertEqual(delays.heldCount(), 1)

    def test_finishStopsTheWaker(self) -> None:
        """After the run, no timer is left and no echo sends anything."""
        reactor, run = startRun(rate=1000)
        connection, written = attach(run)
        run.begin()
        run.finish()
        self.assertEqual(reactor.getDelayedCalls(), [])
        reactor.rightNow += 1
        sent = written.getvalue()
        connection.dataReceived(b"")
        self.assertEqual(written.getvalue(), sent)

    def test_delaysReachTheReport(self) -> None:
        """The send delays are their own line, JSON object and child field."""
        results = Results("pingpong", 1, 8, 1.0, 3, histogramOf([100]).histogram)
        results.uncorrected = histogramOf([90]).histogram
        results.delays = histogramOf([4, 7]).histogram
        results.targetRate = 100.0
        self.assertIn(
            "send delay (actual - intended send): p50 4  p90 7",
            "\n".join(formatReport(results)),
        )
        self.assertEqual(results.toJSON()["send_delay"]["max_us"], 7)
        rebuilt = resultsFromChild(json.loads(json.dumps(childReport(results))))
        assert rebuilt.delays is not None
        self.assertEqual(rebuilt.delays.get_total_count(), 2)

    def test_scheduleDelaysReachTheReport(self) -> None:
        """The schedule delay and the held sends: lines, JSON, child, merge."""
        results = Results("pingpong", 1, 8, 1.0, 4, histogramOf([100]).histogram)
        results.uncorrected = histogramOf([90]).histogram
        results.delays = histogramOf([4, 7, 900, 1000]).histogram
        results.scheduleDelays = histogramOf([4, 7, 8, 9]).histogram
        results.held = 2
        results.targetRate = 100.0
        report = "\n".join(formatReport(results))
        self.assertIn("schedule delay (reached - intended send): p50 7  p90 9", report)
        self.assertIn("held for room in the pipeline: 2 of 4 sends (50.00%)", report)
        self.assertIn(
            "Schedule delay distribution (reached - intended send)",
            "\n".join(formatDistribution(results)),
        )
        reported = results.toJSON()
        self.assertEqual(
            (reported["schedule_delay"]["max_us"], reported["held_sends"]), (9, 2)
        )
        # Connect mode: a transaction waits for one in progress to end.
        connect = Results("connect", 2, 8, 1.0, 3, histogramOf([100]).histogram)
        connect.delays = histogramOf([4, 5, 900]).histogram
        connect.scheduleDelays = histogramOf([4, 5, 6]).histogram
        connect.held = 1
        self.assertIn(
            "held for a free slot (all connections busy): 1 of 3 sends (33.33%)",
            "\n".join(formatReport(connect)),
        )
        rebuilt = resultsFromChild(json.loads(json.dumps(childReport(results))))
        rebuilt.add(results)
        assert rebuilt.scheduleDelays is not None
        self.assertEqual(
            (rebuilt.scheduleDelays.get_total_count(), rebuilt.held), (8, 4)
        )


class CountingClock(Clock):
    """A clock that counts the calls scheduled on it (each a reactor turn)."""

    scheduled = 0

    def callLater(  # type: ignore[override]
        self, delay: float, callable: Callable[..., object], *args: object
    ) -> IDelayedCall:
        """Count, then schedule as L{Clock} does."""
        self.scheduled += 1
        return super().callLater(delay, callable, *args)


class SteppingTime:
    """A clock that moves C{step} seconds on every read (work takes time)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.reads = 0

    def now(self) -> float:
        """The time: C{step} more than at the last read."""
        self.reads += 1
        return self.reads * self.step


class Schedule:
    """An open-loop schedule with a send due every C{period} seconds."""

    def __init__(self, time: SteppingTime, period: float) -> None:
        self.time = time
        self.period = period
        self.dueAt = period
        # (due, made) for each send made.
        self.made: list[tuple[float, float]] = []

    def tick(self) -> None:
        """Make the send due; the next is due a period later."""
        self.made.append((self.dueAt, self.time.now()))
        self.dueAt = self.period * (len(self.made) + 1)


class FlushTests(SynchronousTestCase):
    """The per-interval histogram work pauses between small chunks."""

    def test_inSlices(self) -> None:
        """20,000 samples take many reactor turns, and land whole."""
        clock = CountingClock()
        # Every chunk reads the clock once, and takes 10 us.
        time = SteppingTime(10e-6)
        recorder = LatencyRecorder()
        samples = [(i * 7919) % 50_000 for i in range(20_000)]
        breaks = Breaks(clock, time.now)
        d = Deferred.fromCoroutine(flushInSlices(breaks, recorder, samples))
        self.assertNoResult(d)
        clock.advance(0)
        # A turn at least every 11 chunks (100 us) of counting alone.
        self.assertGreater(clock.scheduled, 20_000 // COUNT_CHUNK // 11)
        self.assertEqual(breaks.turns, clock.scheduled)
        batch, summary = self.successResultOf(d)
        self.assertEqual(batch.get_total_count(), 20_000)
        self.assertEqual(recorder.histogram.get_total_count(), 20_000)
        self.assertEqual(summary.count, 20_000)

    def test_sendsMadeBetweenChunks(self) -> None:
        """A send due during the work is made after the chunk in hand."""
        clock = CountingClock()
        time = SteppingTime(10e-6)
        schedule = Schedule(time, 250e-6)
        breaks = Breaks(clock, time.now, schedule)
        samples = [(i * 7919) % 50_000 for i in range(20_000)]
        d = Deferred.fromCoroutine(flushInSlices(breaks, LatencyRecorder(), samples))
        clock.advance(0)
        self.successResultOf(d)
        # Every send due while the work went on was made, in order...
        self.assertGreater(len(schedule.made), 20_000 // COUNT_CHUNK // 25)
        self.assertEqual(
            [due for due, _ in schedule.made],
            [schedule.period * (n + 1) for n in range(len(schedule.made))],
        )
        # ... at most a chunk and a reactor turn (two clock reads) late.
        self.assertLessEqual(
            max(made - due for due, made in schedule.made), 2 * time.step + 1e-9
        )

    def test_takeHandsTheListOver(self) -> None:
        """C{take} hands over the samples; later ones start a new array."""
        recorder = LatencyRecorder()
        recorder.samples.append(1)
        taken = recorder.take()
        recorder.samples.append(2)
        self.assertEqual((list(taken), list(recorder.samples)), ([1], [2]))

    def test_samplesNotWalkedByTheCollector(self) -> None:
        """The garbage collector does not walk the samples item by item.

        A second's samples are tens of thousands of items; a container the
        collector tracks is walked item by item in its collections, a pause
        in the load.
        """
        recorder = LatencyRecorder()
        recorder.samples.extend(range(1000))
        taken = recorder.take()
        recorder.samples.extend(range(1000))
        for samples in (taken, recorder.samples):
            walked = [r for r in gc.get_referents(samples) if isinstance(r, int)]
            self.assertEqual(walked, [])

    def test_clearDropsTheSamples(self) -> None:
        """C{clear} drops what was collected; the histogram is untouched."""
        recorder = LatencyRecorder()
        recorder.samples.extend([5, 6])
        recorder.clear()
        recorder.samples.append(7)
        recorder.flush()
        self.assertEqual(recorder.histogram.get_total_count(), 1)


class SlowTransport(StringTransport):
    """A transport whose writes take C{seconds} of a memory reactor's time."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        # StringTransport is not annotated.
        super().__init__()  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.seconds = 0.0

    def write(self, data: bytes) -> None:
        """Record C{data}; the clock moves on, no timer firing."""
        super().write(data)  # type: ignore[no-untyped-call]
        self.reactor.rightNow += self.seconds


class FakeTimer:
    """A stand-in for L{Timerfd}: records armings, expires when told."""

    descriptor = 99

    def __init__(self) -> None:
        self.armed: list[int] = []
        self.expired = 0
        self.closed = False

    def arm(self, nanoseconds: int) -> None:
        """Record the arming."""
        self.armed.append(nanoseconds)

    def read(self) -> int:
        """The expirations since the last read."""
        expired, self.expired = self.expired, 0
        return expired

    def close(self) -> None:
        """Note the close."""
        self.closed = True


class WakerTests(SynchronousTestCase):
    """Wakers call back once per arming, the latest arming winning."""

    def fakeWaker(
        self, callback: Callable[[], object]
    ) -> tuple[TimerfdWaker, FakeTimer, MemoryReactorClock]:
        """A timerfd waker on a stand-in timer, watched by a memory reactor."""
        reactor = MemoryReactorClock()
        timer = FakeTimer()
        waker = TimerfdWaker(
            cast(IReactorFDSet, reactor), callback, cast(Timerfd, timer)
        )
        return waker, timer, reactor

    def test_callLater(self) -> None:
        """Arming again replaces the earlier arming."""
        clock = Clock()
        calls: list[float] = []
        waker = CallLaterWaker(clock, lambda: calls.append(clock.seconds()))
        waker.wakeIn(1.0)
        waker.wakeIn(0.5)
        clock.advance(0.5)
        clock.advance(1)
        self.assertEqual(calls, [0.5])
        waker.wakeIn(1.0)
        waker.stop()
        clock.advance(2)
        self.assertEqual(calls, [0.5])

    def test_timerfd(self) -> None:
        """The timer is armed in nanoseconds, watched, and closed on stop."""
        calls: list[None] = []
        waker, timer, reactor = self.fakeWaker(lambda: calls.append(None))
        self.assertIn(waker, reactor.getReaders())
        waker.wakeIn(0.000250)
        self.assertEqual(timer.armed, [250_000])
        waker.doRead()
        self.assertEqual(calls, [])
        timer.expired = 1
        waker.doRead()
        self.assertEqual(calls, [None])
        # A spin: the timer armed to expire at once and left unread (the
        # descriptor stays readable), one call back per asking.
        waker.wakeIn(0)
        waker.wakeIn(0)
        self.assertEqual(timer.armed, [250_000, 1])
        waker.doRead()
        self.assertEqual(calls, [None, None])
        # Not asked again: the next turn stops the spin, disarming.
        waker.doRead()
        self.assertEqual((len(calls), timer.armed), (2, [250_000, 1, 0]))
        # A wait ends a spin by arming for its end.
        waker.wakeIn(0)
        waker.wakeIn(0.001)
        waker.doRead()
        self.assertEqual((len(calls), timer.armed), (2, [250_000, 1, 0, 1, 1_000_000]))
        waker.stop()
        self.assertNotIn(waker, reactor.getReaders())
        self.assertTrue(timer.closed)

    def test_timerfdSpinTurns(self) -> None:
        """A callback that asks for the next turn each time costs no arming."""
        calls: list[None] = []

        def tick() -> None:
            calls.append(None)
            if len(calls) < 3:
                waker.wakeIn(0)

        waker, timer, _ = self.fakeWaker(tick)
        waker.wakeIn(0)
        for _ in range(5):
            waker.doRead()
        self.assertEqual((len(calls), timer.armed), (3, [1, 0]))

    def test_timerfdStopInCallback(self) -> None:
        """A callback that stops the waker leaves the closed timer alone."""

        def stopWaker() -> None:
            waker.stop()

        waker, timer, _ = self.fakeWaker(stopWaker)
        waker.wakeIn(0)
        waker.doRead()
        self.assertEqual((timer.armed, timer.closed), ([1], True))

    def test_timerfdCallbackRaises(self) -> None:
        """A callback that raises is logged; the waker goes on spinning."""
        calls: list[None] = []

        def tick() -> None:
            calls.append(None)
            waker.wakeIn(0)
            if len(calls) == 1:
                raise ZeroDivisionError()

        waker, timer, reactor = self.fakeWaker(tick)
        waker.wakeIn(0)
        waker.doRead()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        waker.doRead()
        self.assertEqual((len(calls), timer.armed), (2, [1]))
        self.assertIn(waker, reactor.getReaders())

    def test_timerfdNotArmedOnceStopped(self) -> None:
        """After C{stop}, an arming is ignored (the descriptor is closed)."""
        waker, timer, _ = self.fakeWaker(lambda: None)
        waker.stop()
        waker.wakeIn(0)
        waker.wakeIn(0.5)
        self.assertEqual(timer.armed, [])

    def test_timerfdDescriptor(self) -> None:
        """On Linux a real timerfd opens, disarmed, and closes."""
        if not sys.platform.startswith("linux"):
            raise self.skipTest("timerfd is Linux only")
        timer = Timerfd()
        self.addCleanup(timer.close)
        timer.arm(0)
        self.assertEqual(timer.read(), 0)

    def test_timerfdArmingClearsAnExpiry(self) -> None:
        """An expiry left unread keeps the timer readable until an arming.

        The spin relies on both: the kernel's C{timerfd_settime} clears an
        expiry not read yet, whether it arms or disarms.
        """
        if not sys.platform.startswith("linux"):
            raise self.skipTest("timerfd is Linux only")
        timer = Timerfd()
        self.addCleanup(timer.close)
        poller = select.epoll()
        self.addCleanup(poller.close)
        poller.register(timer.descriptor, select.EPOLLIN)
        timer.arm(1)
        # Expired 1 ns after the arming: readable at once, and again.
        self.assertEqual(poller.poll(1.0), [(timer.descriptor, select.EPOLLIN)])
        self.assertEqual(poller.poll(0), [(timer.descriptor, select.EPOLLIN)])
        timer.arm(60 * 10**9)
        self.assertEqual(poller.poll(0), [])
        timer.arm(1)
        self.assertEqual(poller.poll(1.0), [(timer.descriptor, select.EPOLLIN)])
        timer.arm(0)
        self.assertEqual((poller.poll(0), timer.read()), ([], 0))


class OutputTests(SynchronousTestCase):
    """Mean, stdev, p99.99, the spectrum, CSV, target and start time."""

    def results(self) -> Results:
        """A run of 1,000 echoes of 1 to 1,000 us against 127.0.0.1:5000."""
        results = Results(
            "pingpong", 2, 8, 1.0, 1000, histogramOf(list(range(1, 1001))).histogram
        )
        results.target = {"host": "localhost", "port": 5000, "address": "127.0.0.1"}
        results.parameters = {"rate": None, "connections": 2}
        results.startedAt = 1_700_000_000.5
        return results

    def test_percentiles(self) -> None:
        """p99.99, the mean and the standard deviation are reported."""
        values = percentiles(self.results().histogram)
        self.assertEqual((values["p9999_us"], values["max_us"]), (1000, 1000))
        self.assertEqual((values["mean_us"], values["stdev_us"]), (500.5, 288.7))

    def test_readable(self) -> None:
        """The text report names the target and start, and the new figures."""
        lines = formatReport(self.results())
        self.assertIn(
            "latency: p50 500  p90 900  p99 990  p99.9 999  p99.99 1000  max 1000 us"
            " (mean 500.5, stdev 288.7)",
            lines,
        )
        self.assertIn(
            "target: localhost:5000 (127.0.0.1), started 2023-11-14T22:13:20.500Z",
            lines,
        )

    def test_hostSteal(self) -> None:
        """The machine line gives the host's steal; from 1 % it says what that means."""
        results = self.results()
        results.machine = machineContext("R", 0.43)
        lines = formatReport(results)
        self.assertTrue(lines[-1].endswith(", R, host steal 0.4%"), lines[-1])
        results.machine = machineContext("R", 12.34)
        self.assertTrue(
            formatReport(results)[-1].endswith(
                ", R, host steal 12.3%: the host took that share of the CPU time,"
                " and these figures measure it too"
            )
        )
        self.assertEqual(results.toJSON()["machine"]["steal_percent"], 12.3)

    def test_stealUnknown(self) -> None:
        """Where steal could not be read, nothing is said of it."""
        results = self.results()
        results.machine = machineContext("R")
        self.assertNotIn("steal_percent", results.machine)
        self.assertTrue(formatReport(results)[-1].endswith(", R"))

    def test_json(self) -> None:
        """The JSON carries target, parameters and start time first."""
        report = self.results().toJSON()
        self.assertEqual(list(report)[:3], ["started", "target", "parameters"])
        self.assertEqual(report["started"], "2023-11-14T22:13:20.500Z")
        self.assertEqual(report["target"]["port"], 5000)
        self.assertEqual(report["parameters"]["connections"], 2)

    def test_distribution(self) -> None:
        """--latency prints HdrHistogram's spectrum, ending at the maximum."""
        lines = formatDistribution(self.results())
        self.assertEqual(lines[1], "Latency distribution, value in us:")
        self.assertIn("Value     Percentile TotalCount 1/(1-Percentile)", lines[2])
        last = [line for line in lines if line.strip().startswith("1000.000 1.0")]
        self.assertEqual(len(last), 1)
        self.assertTrue(lines[-3].startswith("#[Mean    =      500.5"), lines[-3])

    def test_csv(self) -> None:
        """--csv is a header line and one row of the flattened JSON."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        args = buildParser().parse_args(["--csv", "h"])
        writeReport(self.results(), args)
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["target.port"], "5000")
        self.assertEqual(rows[0]["parameters.rate"], "")
        self.assertEqual(rows[0]["p50_us"], "500")

    def test_flatten(self) -> None:
        """Nested objects become dotted keys."""
        self.assertEqual(
            flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}}),
            {"a": 1, "b.c": 2, "b.d.e": 3},
        )

    def test_intervalLines(self) -> None:
        """Output that is not a terminal gets one lasting line per interval."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        _, run = startRun()
        run.errors["corrupt"] += 2
        IntervalLines().update(
            histogramOf([100, 200, 300]).histogram, None, 1.0, 2.0, run
        )
        self.assertEqual(
            out.getvalue(),
            "   2.0 s  3 echoes/s  p50 200  p99 300  max 300 us  errors 2\n",
        )

    def test_intervalOfNothing(self) -> None:
        """An interval without echoes is all zeros, not an error."""
        self.assertEqual(
            Interval.of(newHistogram(), 0.0, 1.0), Interval(0.0, 1.0, 0, 0, 0, 0)
        )


class QuantizeTests(SynchronousTestCase):
    """Counting by histogram bucket changes nothing the histogram reports."""

    def test_quantize(self) -> None:
        """Below 2,048 values stay; above, they fall to their bucket's start."""
        self.assertEqual(
            [quantize(v) for v in (0, 1, 2047, 2048, 2049, 4097, 4099, 10**6 + 7)],
            [0, 1, 2047, 2048, 2048, 4096, 4096, 999_936],
        )
        self.assertEqual([highest(v) for v in (5, 2049, 4096)], [5, 2049, 4099])

    def test_sameHistogram(self) -> None:
        """Quantized values land in the same buckets as the values themselves."""
        values = [(i * 7919) % 3_000_000 for i in range(3000)]
        exact, quantized = newHistogram(), newHistogram()
        for value in values:
            exact.record_value(value)
            quantized.record_value(quantize(value))
        self.assertEqual(encodeHistogram(exact), encodeHistogram(quantized))

    def test_summaryOfCounts(self) -> None:
        """The summary from counts has the histogram's p50, p99 and max."""
        values = [(i * 7919) % 30_000 for i in range(5000)]
        counts = Counter(quantize(value) for value in values)
        histogram = histogramOf(values).histogram
        self.assertEqual(
            Interval.ofCounts(counts, 1.0, 2.0), Interval.of(histogram, 1.0, 2.0)
        )


class CompareTests(SynchronousTestCase):
    """C{compare} sets two JSON reports side by side with the change."""

    def test_rows(self) -> None:
        """Figures both reports hold, with B's change from A in percent."""
        a = {"echoes": 1, "echoes_per_s": 1000.0, "p50_us": 200, "errors": 0}
        b = {
            "echoes": 1,
            "echoes_per_s": 1100.0,
            "p50_us": 150,
            "errors": 0,
            "uncorrected": {"p50_us": 100},
        }
        rows = compareRows(a, b)
        self.assertEqual(
            rows,
            [
                ("echoes/s", 1000.0, 1100.0, 10.0),
                ("p50 us", 200.0, 150.0, -25.0),
                ("errors", 0.0, 0.0, 0.0),
            ],
        )
        lines = formatRows(rows, ("a.json", "b.json"))
        self.assertRegex(lines[1], r"^echoes/s\s+1,000\s+1,100\s+\+10\.0%$")
        self.assertEqual(lines[-2:], ["A: a.json", "B: b.json"])

    def test_change(self) -> None:
        """From zero, a change has no percentage unless there is none."""
        self.assertIsNone(change(0, 5))
        self.assertEqual(change(0, 0), 0.0)

    def test_notAReport(self) -> None:
        """Anything but a bench JSON report is refused, naming the file."""
        for value in ([1], {"mode": "x"}, "text"):
            error = self.assertRaises(BadReport, checkReport, "x.json", value)
            self.assertEqual(str(error), "x.json is not a result written with --json")


class PlotTests(SynchronousTestCase):
    """Where the plot's points go, and what it is titled."""

    def test_curveStopsAtTheSamples(self) -> None:
        """No percentile finer than one sample in N is drawn; the max is apart."""
        histogram = histogramOf(list(range(1, 101))).histogram
        xs, ys = curve(histogram)
        self.assertLessEqual(max(xs), 2.0)
        self.assertEqual(ys, sorted(ys))
        self.assertEqual(maximum(histogram), (2.0, 100))
        self.assertIsNone(maximum(newHistogram()))

    def test_title(self) -> None:
        """An open-loop run is titled as one, with its target rate."""
        results = Results("pingpong", 10, 512, 1.0, 2000, newHistogram())
        self.assertTrue(title(results).startswith("pingpong: 10 connections"))
        results.targetRate = 2000.0
        self.assertTrue(title(results).startswith("open loop at 2,000/s target:"))


class MergeTimelineTests(SynchronousTestCase):
    """Merged logs keep each interval's percentiles over all the logs."""

    def test_timeline(self) -> None:
        """Interval i of the merge holds interval i of every log."""
        paths = []
        for values in ([[100] * 10, [200] * 10], [[300] * 10]):
            path = self.mktemp()
            with open(path, "w", encoding="utf-8") as f:
                log = IntervalLogWriter(f, 1_700_000_000.0)
                for i, part in enumerate(values):
                    log.interval(histogramOf(part).histogram, float(i), float(i + 1))
                log.finish(
                    Results("pingpong", 1, 8, 2.0, 10, newHistogram(), Counter())
                )
            paths.append(path)
        merged = mergeLogs(paths)
        self.assertEqual(
            [(i.count, i.p50, i.max) for i in merged.timeline],
            [(20, 100, 300), (10, 200, 200)],
        )
        self.assertAlmostEqual(merged.timeline[1].end, 2.0, places=3)
