"""Unit tests for the load generator: no sockets, no real time."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.task import Clock
from twisted.internet.tcp import Client
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist import versionText
from echotwist.bench import plot
from echotwist.bench.arguments import (
    UsageError,
    buildMergeParser,
    buildParser,
    checkOptions,
    childArguments,
    holdSources,
    parseDuration,
    sourceAddresses,
    splitEvenly,
)
from echotwist.bench.cli import System, main, resolve
from echotwist.bench.content import Payload, classifyExcess, classifyMismatch, mix
from echotwist.bench.cpustat import CpuTimes
from echotwist.bench.hlog import BadLog, IntervalLogWriter, mergeLogs, readLog
from echotwist.bench.load import (
    LoadConfig,
    LoadConnection,
    LoadRun,
    SetupError,
    TransactionConnection,
    measure,
    resultsOf,
    runConnect,
    runHold,
)
from echotwist.bench.plot import curve
from echotwist.bench.processes import (
    CHILD_GRACE,
    ChildProcess,
    Interrupt,
    RunProcesses,
    fileLimitError,
    raiseFileLimit,
    watchParent,
)
from echotwist.bench.report import emit
from echotwist.bench.results import (
    LatencyRecorder,
    Results,
    decodeHistogram,
    encodeHistogram,
    formatReport,
    newHistogram,
    percentiles,
    resultsFromChild,
)
from echotwist.bench.schedule import OpenLoopSchedule
from echotwist.bench.timer import CallLaterWaker
from echotwist.test.transports import FakeSocket, client


class ContentTests(SynchronousTestCase):
    """Message contents differ per connection and sequence; mismatches are named."""

    def test_messagesDiffer(self) -> None:
        """Messages of one connection, and of two, are (almost all) distinct."""
        payload = Payload(64)
        messages = {payload.message(cid, seq) for cid in range(20) for seq in range(50)}
        self.assertEqual(len(messages), 1000)
        self.assertEqual({len(m) for m in messages}, {64})

    def test_deterministic(self) -> None:
        """Every process computes the same message for the same ids."""
        self.assertEqual(Payload(32).message(3, 9), Payload(32).message(3, 9))
        self.assertEqual(mix(3, 9), mix(3, 9))

    def test_classify(self) -> None:
        """Duplicated, reordered and corrupt echoes are told apart, on prefixes too."""
        a, b, c = b"aaaa", b"bbbb", b"cccc"
        self.assertEqual(classifyMismatch(a, [c], previous=a), "duplicated")
        self.assertEqual(classifyMismatch(b"aa", [c], previous=a), "duplicated")
        self.assertEqual(classifyMismatch(c, [b, c], previous=a), "reordered")
        self.assertEqual(classifyMismatch(b"abab", [c], previous=a), "corrupt")
        self.assertEqual(classifyMismatch(b"x", [], previous=None), "corrupt")

    def test_classifyExcess(self) -> None:
        """Bytes beyond every message sent are excess, unless they repeat the last."""
        self.assertEqual(classifyExcess(b"abab", previous=b"abab"), "duplicated")
        self.assertEqual(classifyExcess(b"ab", previous=b"abab"), "duplicated")
        self.assertEqual(classifyExcess(b"ababab", previous=b"abab"), "duplicated")
        self.assertEqual(classifyExcess(b"abx", previous=b"abab"), "excess")
        self.assertEqual(classifyExcess(b"ab", previous=None), "excess")


class ScheduleTests(SynchronousTestCase):
    """L{OpenLoopSchedule} hands out sends at the rate, whenever asked."""

    def test_due(self) -> None:
        """At 100/s from t=10, sends 0..5 are due by 10.05, then none until 10.06."""
        schedule = OpenLoopSchedule(100, 10.0, slots=3)
        self.assertEqual(list(schedule.due(10.05)), [0, 1, 2, 3, 4, 5])
        self.assertEqual(list(schedule.due(10.055)), [])
        self.assertAlmostEqual(schedule.nextDue(), 10.06)
        self.assertEqual(list(schedule.due(10.06)), [6])

    def test_lateWakeUp(self) -> None:
        """A late wake-up gets every missed send, each keeping its intended time."""
        schedule = OpenLoopSchedule(1000, 0.0, slots=2)
        sends = list(schedule.due(0.0105))
        self.assertEqual(len(sends), 11)
        self.assertAlmostEqual(schedule.intended(sends[-1]), 0.010)
        self.assertEqual([schedule.slot(n) for n in sends[:4]], [0, 1, 0, 1])

    def test_badRate(self) -> None:
        """A rate of zero is refused."""
        self.assertRaises(ValueError, OpenLoopSchedule, 0, 0.0, 1)


class ResultsTests(SynchronousTestCase):
    """Batches go into HDR histograms exactly; reports say what was measured."""

    def test_flush(self) -> None:
        """Each flush returns its batch; the recorder keeps the total."""
        recorder = LatencyRecorder()
        recorder.samples.extend([100] * 99 + [5000])
        batch = recorder.flush()
        self.assertEqual(list(recorder.samples), [])
        recorder.samples.append(7)
        second = recorder.flush()
        self.assertEqual((batch.get_total_count(), second.get_total_count()), (100, 1))
        self.assertEqual(recorder.histogram.get_total_count(), 101)
        values = percentiles(batch)
        self.assertEqual(values["p50_us"], 100)
        self.assertEqual(values["max_us"], 5003)  # 3 significant digits

    def test_json(self) -> None:
        """The JSON report has the fields scripts rely on."""
        recorder = LatencyRecorder()
        recorder.samples.extend([200] * 50)
        recorder.flush()
        results = Results(
            mode="pingpong",
            connections=2,
            size=100,
            seconds=2.0,
            echoes=50,
            histogram=recorder.histogram,
            errors=Counter({"corrupt": 2, "stalled": 1}),
        )
        report = results.toJSON()
        self.assertEqual(
            {k: report[k] for k in ("echoes", "echoes_per_s", "p50_us", "errors")},
            {"echoes": 50, "echoes_per_s": 25.0, "p50_us": 200, "errors": 3},
        )
        self.assertEqual(report["MB_per_s"], 0.003)
        self.assertEqual(report["error_kinds"], {"corrupt": 2, "stalled": 1})
        self.assertIn("errors: 3 (corrupt 2, stalled 1)", formatReport(results))

    def test_holdReport(self) -> None:
        """Hold mode reports connections held and set-up latency, no rates."""
        recorder = LatencyRecorder()
        recorder.samples.extend([300] * 10)
        recorder.flush()
        lines = formatReport(Results("hold", 10, 512, 2.0, 9, recorder.histogram))
        self.assertEqual(lines[1], "9 connections held for 2.00 s")
        self.assertTrue(lines[2].startswith("set-up latency (connect to verified"))

    def test_holdFinalEchoes(self) -> None:
        """Hold results say how many answered at the end; merging adds them up."""
        a = Results("hold", 10, 512, 2.0, 9, newHistogram(), answered=8)
        a.setupSeconds, a.finalSeconds = 1.5, 0.75
        b = Results("hold", 10, 512, 2.0, 10, newHistogram(), answered=10)
        b.setupSeconds, b.finalSeconds = 2.5, 0.5
        report = b.toJSON()
        report["histogram"] = encodeHistogram(b.histogram)
        a.add(resultsFromChild(json.loads(json.dumps(report))))
        self.assertEqual((a.echoes, a.answered, a.setupSeconds), (19, 18, 2.5))
        self.assertEqual(
            formatReport(a)[1:3],
            [
                "19 connections held for 2.00 s (set up in 2.50 s)",
                "18 answered a final echo after the hold, 1 did not"
                " (checked in 0.75 s)",
            ],
        )
        self.assertEqual(
            {k: a.toJSON()[k] for k in ("echoes", "answered", "setup_s", "final_s")},
            {"echoes": 19, "answered": 18, "setup_s": 2.5, "final_s": 0.75},
        )

    def test_addIsExact(self) -> None:
        """Adding runs adds counts and merges histograms, never averaging."""
        fast, slow = LatencyRecorder(), LatencyRecorder()
        fast.samples.extend([100] * 90)
        slow.samples.extend([10000] * 10)
        fast.flush()
        slow.flush()
        a = Results("pingpong", 1, 8, 1.0, 90, fast.histogram)
        b = Results("pingpong", 1, 8, 2.0, 10, slow.histogram, Counter(corrupt=1))
        a.add(b)
        self.assertEqual((a.echoes, a.seconds, a.runs), (100, 2.0, 2))
        self.assertIn("merged from 2 runs", formatReport(a)[0])
        self.assertEqual(a.errors, Counter(corrupt=1))
        values = percentiles(a.histogram)
        self.assertEqual(values["p50_us"], 100)
        self.assertEqual(values["p99_us"], 10007)

    def test_histogramRoundTrip(self) -> None:
        """A child's histogram survives its JSON encoding."""
        recorder = LatencyRecorder()
        recorder.samples.extend([1, 2, 3, 400000])
        recorder.flush()
        decoded = decodeHistogram(encodeHistogram(recorder.histogram))
        self.assertEqual(percentiles(decoded), percentiles(recorder.histogram))

    def test_plotCurve(self) -> None:
        """The plotted curve rises with the percentile and ends at the top values."""
        recorder = LatencyRecorder()
        recorder.samples.extend(list(range(1, 1001)))
        recorder.flush()
        xs, ys = curve(recorder.histogram)
        self.assertEqual(xs, sorted(xs))
        self.assertEqual(ys, sorted(ys))
        self.assertEqual((ys[0], ys[1]), (1, 500))


class IntervalLogTests(SynchronousTestCase):
    """Interval logs round-trip, and merging adds up exactly."""

    def writeLog(self, values: list[int], errors: Counter[str]) -> str:
        """Write a two-interval log of C{values} (split in halves); return its path."""
        path = str(self.mktemp())
        recorder = LatencyRecorder()
        with open(path, "w", encoding="utf-8") as f:
            log = IntervalLogWriter(f, 1_700_000_000.0)
            half = len(values) // 2
            for i, part in enumerate((values[:half], values[half:])):
                recorder.samples.extend(part)
                log.interval(recorder.flush(), float(i), float(i + 1))
            log.finish(
                Results("pingpong", 4, 16, 2.0, len(values), recorder.histogram, errors)
            )
        return path

    def test_roundTrip(self) -> None:
        """A log reads back with its totals and percentiles."""
        path = self.writeLog([50] * 10 + [70] * 10, Counter(excess=1))
        results = readLog(path)
        self.assertEqual(
            (results.echoes, results.seconds, results.errors, results.connections),
            (20, 2.0, Counter(excess=1), 4),
        )
        self.assertEqual(results.histogram.get_total_count(), 20)
        self.assertEqual(percentiles(results.histogram)["max_us"], 70)

    def test_merge(self) -> None:
        """Totals add; percentiles come from the merged histogram."""
        a = self.writeLog([100] * 98, Counter())
        b = self.writeLog([20000] * 2, Counter(corrupt=3))
        merged = mergeLogs([a, b])
        self.assertEqual((merged.echoes, merged.errors), (100, Counter(corrupt=3)))
        self.assertEqual(merged.echoesPerSecond, 50.0)
        values = percentiles(merged.histogram)
        self.assertEqual((values["p50_us"], values["p99_us"]), (100, 20015))

    def test_notALog(self) -> None:
        """A file that is not an interval log is refused, saying which."""
        path = Path(self.mktemp())
        path.write_text("hello\n")
        error = self.assertRaises(BadLog, readLog, str(path))
        self.assertIn(str(path), str(error))
        self.assertRaises(BadLog, readLog, str(path) + ".missing")


def startRun(
    rate: float | None = None,
    pipeline: int = 1,
    connections: int = 1,
    spin: float = 0.0,
) -> tuple[MemoryReactorClock, LoadRun]:
    """A run on a memory reactor whose clock also times the echoes.

    No spinning by default: a memory reactor's clock stands still while
    the loop spins, so a spin would never end.
    """
    reactor = MemoryReactorClock()
    config = LoadConfig(
        host="127.0.0.1",
        port=7,
        connections=connections,
        size=8,
        duration=2.0,
        warmup=0.0,
        pipeline=pipeline,
        rate=rate,
        spin=spin,
    )
    return reactor, LoadRun(
        reactor, reactor.seconds, config, "127.0.0.1", CallLaterWaker
    )


def attach(run: LoadRun, slot: int = 0) -> tuple[LoadConnection, io.BytesIO]:
    """A connection of C{run} on a string transport; return what it wrote."""
    connection = LoadConnection(run, slot, run.newCid())
    transport = StringTransportWithDisconnection()
    transport.protocol = connection
    connection.makeConnection(transport)
    return connection, transport.io


def connectAll(reactor: MemoryReactorClock) -> None:
    """Connect every connection the run asked C{reactor} for, on string
    transports.
    """
    for _host, _port, factory, _timeout, _bind in reactor.tcpClients:
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)


class LoadConnectionTests(SynchronousTestCase):
    """A load connection verifies every byte and counts what goes wrong."""

    def test_closedLoop(self) -> None:
        """An echo in pieces is verified, timed, and the next message follows."""
        reactor, run = startRun()
        run.measuring = True
        connection, written = attach(run)
        run.begin()
        first = run.payload.message(connection.cid, 0)
        self.assertEqual(written.getvalue(), first)
        reactor.advance(0.002)
        connection.dataReceived(first[:3])
        reactor.advance(0.001)
        connection.dataReceived(first[3:])
        self.assertEqual(list(run.recorder.samples), [3000])
        self.assertEqual(
            written.getvalue(), first + run.payload.message(connection.cid, 1)
        )
        self.assertEqual(run.errors, Counter())

    def test_pipelineBatch(self) -> None:
        """With a pipeline, several echoes in one read each count."""
        _reactor, run = startRun(pipeline=3)
        run.measuring = True
        connection, written = attach(run)
        run.begin()
        sent = written.getvalue()
        self.assertEqual(len(sent), 24)
        connection.dataReceived(sent)
        self.assertEqual(len(run.recorder.samples), 3)
        self.assertEqual(len(connection.inflight), 3)

    def corrupt(self, reply: bytes, pipeline: int = 1) -> LoadRun:
        """Feed C{reply} (with the echo's sent bytes as {sent}) and return the run."""
        reactor, run = startRun(pipeline=pipeline)
        connection, written = attach(run)
        run.begin()
        connection.dataReceived(reply.replace(b"{sent}", written.getvalue()))
        self.assertTrue(connection.failed)
        # The broken connection is replaced after a short delay.
        reactor.advance(0.05)
        self.assertEqual(len(reactor.tcpClients), 1)
        return run

    def test_corrupt(self) -> None:
        """A changed byte is a corrupt echo."""
        self.assertEqual(self.corrupt(b"\x00" * 8).errors, Counter(corrupt=1))

    def test_duplicated(self) -> None:
        """The previous echo coming again is a duplicated echo."""
        _reactor, run = startRun()
        connection, written = attach(run)
        run.begin()
        first = written.getvalue()
        connection.dataReceived(first)
        connection.dataReceived(first)
        self.assertEqual(run.errors, Counter(duplicated=1))

    def test_reordered(self) -> None:
        """The second message echoed first is a reordered echo."""
        _reactor, run = startRun(pipeline=2)
        connection, written = attach(run)
        run.begin()
        sent = written.getvalue()
        connection.dataReceived(sent[8:] + sent[:8])
        self.assertEqual(run.errors, Counter(reordered=1))

    def test_excess(self) -> None:
        """Bytes beyond everything sent are excess; a repeated echo, duplicated."""
        self.assertEqual(self.corrupt(b"{sent}\x00").errors, Counter(excess=1))
        self.assertEqual(self.corrupt(b"{sent}" * 3).errors, Counter(duplicated=1))

    def test_excessInTheSameRead(self) -> None:
        """Extra bytes arriving with an echo are excess, not a corrupt next echo.

        They came before the next message was sent, so they cannot be its
        echo, in closed loop and open loop alike, pipelined or not.
        """
        for rate, pipeline in ((None, 1), (None, 3), (1000.0, 1)):
            reactor, run = startRun(rate=rate, pipeline=pipeline)
            connection, written = attach(run)
            run.begin()
            reactor.advance(0.002)
            sent = written.getvalue()
            self.assertTrue(sent)
            connection.dataReceived(sent + b"\x00\x01\x02")
            self.assertEqual(run.errors, Counter(excess=1), (rate, pipeline))
            self.assertTrue(connection.failed)

    def test_excessAfterPieces(self) -> None:
        """An echo completed by a read carrying extra bytes counts them as excess."""
        _reactor, run = startRun()
        connection, written = attach(run)
        run.begin()
        sent = written.getvalue()
        connection.dataReceived(sent[:3])
        connection.dataReceived(sent[3:] + b"\xff")
        self.assertEqual(run.errors, Counter(excess=1))

    def test_truncated(self) -> None:
        """The server closing mid-echo is a truncated echo; before any, closed."""
        _reactor, run = startRun()
        connection, written = attach(run)
        run.begin()
        connection.dataReceived(written.getvalue()[:4])
        assert connection.transport is not None
        connection.transport.loseConnection()
        other, _ = attach(run)
        assert other.transport is not None
        other.transport.loseConnection()
        self.assertEqual(run.errors, Counter(truncated=1, closed=1))

    def test_finishCountsStalled(self) -> None:
        """At the end, an echo outstanding too long is counted as stalled."""
        reactor, run = startRun()
        connection, _ = attach(run)
        run.begin()
        reactor.advance(1.5)
        run.finish()
        self.assertEqual(run.errors, Counter(stalled=1))
        self.assertTrue(connection.closed)


class OpenLoopTests(SynchronousTestCase):
    """The open loop sends on schedule and times echoes from the intended send."""

    def test_correctedLatency(self) -> None:
        """A send held back by a full pipeline is timed from when it was due."""
        reactor, run = startRun(rate=100, pipeline=1)
        run.measuring = True
        connection, written = attach(run)
        run.begin()
        self.assertEqual(len(written.getvalue()), 8)
        # The server sits on the first echo for 25 ms: sends 1 and 2 fall due.
        reactor.advance(0.025)
        self.assertEqual([due for due, _ in connection.backlog], [0.01, 0.02])
        connection.dataReceived(written.getvalue())
        # Send 1 leaves now (25 ms) though it was due at 10 ms.
        reactor.advance(0.001)
        connection.dataReceived(written.getvalue()[8:16])
        assert run.uncorrected is not None
        self.assertEqual(list(run.recorder.samples), [25000, 16000])
        self.assertEqual(list(run.uncorrected.samples), [25000, 1000])

    def test_droppedSlotIsUnsent(self) -> None:
        """A send due while its connection is being replaced is an error."""
        reactor, run = startRun(rate=100, connections=2)
        run.measuring = True
        attach(run, slot=0)
        run.begin()
        reactor.advance(0.01)
        self.assertEqual(run.errors, Counter(unsent=1))


class MeasureTests(SynchronousTestCase):
    """L{measure} discards the warm-up and reports each interval."""

    def test_intervals(self) -> None:
        """Warm-up samples are dropped; each interval's batch is observed."""
        clock = Clock()
        config = LoadConfig(host="h", port=7, duration=2.0, interval=1.0)
        run = LoadRun(clock, clock.seconds, config, "127.0.0.1")
        seen: list[tuple[int, float, float]] = []
        d = Deferred.fromCoroutine(
            measure(
                run,
                clock,
                lambda batch, _u, start, end, _r: seen.append(
                    (batch.get_total_count(), start, end)
                ),
                warmup=0.5,
            )
        )
        run.recorder.samples.extend([1, 2, 3])
        clock.advance(0.5)
        run.recorder.samples.extend([10, 20])
        clock.advance(1.0)
        run.recorder.samples.append(30)
        clock.advance(1.0)
        self.assertEqual(self.successResultOf(d), 2.0)
        self.assertEqual(seen, [(2, 0.0, 1.0), (1, 1.0, 2.0)])
        self.assertEqual(run.recorder.histogram.get_total_count(), 3)
        self.assertFalse(run.measuring)

    def test_openLoopDelays(self) -> None:
        """Open loop: the warm-up's send delays dropped, each kind reported."""
        clock = Clock()
        config = LoadConfig(host="h", port=7, duration=2.0, interval=1.0, rate=10.0)
        run = LoadRun(clock, clock.seconds, config, "127.0.0.1")
        delays = run.delays
        assert delays is not None
        d = Deferred.fromCoroutine(measure(run, clock, None, warmup=0.5))
        # The warm-up's sends, made and held, are dropped from all three.
        delays.record(0.0, None, 0.005)
        delays.record(0.1, 0.2, 0.3)
        clock.advance(0.5)
        # Made at once 61 us late; held: reached 122 us late, sent 488 us
        # late (times in powers of two, which floating point holds exactly).
        delays.record(1.0, None, 1.0 + 2**-14)
        delays.record(1.25, 1.25 + 2**-13, 1.25 + 2**-11)
        clock.advance(1.0)
        delays.record(2.0, 2.0 + 2**-12, 2.0 + 2**-10)
        clock.advance(1.0)
        self.successResultOf(d)
        results = resultsOf(run, 2.0)
        assert results.delays is not None
        assert results.scheduleDelays is not None
        self.assertEqual(
            [
                [h.get_value_at_percentile(p) for p in (1, 50, 100)]
                for h in (results.delays, results.scheduleDelays)
            ],
            [[61, 488, 976], [61, 122, 244]],
        )
        self.assertEqual((results.delays.get_total_count(), results.held), (3, 2))


def holdConfig(connections: int) -> LoadConfig:
    """A short hold run: 1 s held, echoes awaited 2 s (twice the timeout)."""
    return LoadConfig(
        host="127.0.0.1",
        port=7,
        mode="hold",
        connections=connections,
        size=8,
        duration=1.0,
        connectTimeout=1.0,
    )


class SetupErrorTests(SynchronousTestCase):
    """A run that cannot start names the server as C{HOST:PORT}."""

    def test_ipv6Bracketed(self) -> None:
        """An IPv6 server is named C{[HOST]:PORT} when connect or hold fails."""
        for run, words in ((runConnect, "cannot echo with"),
                           (runHold, "cannot hold connections to")):  # fmt: skip
            reactor = MemoryReactorClock()
            config = dataclasses.replace(holdConfig(1), host="::1")
            d = Deferred.fromCoroutine(run(reactor, reactor.seconds, config, "::1"))
            protocol = reactor.tcpClients[0][2].buildProtocol(None)
            assert isinstance(protocol, TransactionConnection)
            transport = StringTransportWithDisconnection()
            transport.protocol = protocol
            protocol.makeConnection(transport)
            transport.loseConnection()
            error = self.failureResultOf(d, SetupError).value
            self.assertEqual(str(error), f"{words} [::1]:7 (closed)")


class HoldTests(SynchronousTestCase):
    """Hold mode checks that every held connection still answers at the end."""

    def start(
        self, connections: int
    ) -> tuple[
        MemoryReactorClock, Deferred[Results], list[StringTransportWithDisconnection]
    ]:
        """Start a hold run; connect its clients and echo their first message."""
        reactor = MemoryReactorClock()
        config = holdConfig(connections)
        d = Deferred.fromCoroutine(
            runHold(reactor, reactor.seconds, config, "127.0.0.1")
        )
        transports: list[StringTransportWithDisconnection] = []
        # At most SETUP_CONCURRENCY connect at once: the next ones start as
        # earlier ones have echoed.
        while len(transports) < len(reactor.tcpClients):
            factory = reactor.tcpClients[len(transports)][2]
            protocol = factory.buildProtocol(None)
            assert isinstance(protocol, TransactionConnection)
            transport = StringTransportWithDisconnection()
            transport.protocol = protocol
            protocol.makeConnection(transport)
            transports.append(transport)
            self.echo(transport)
        self.assertEqual(len(transports), connections)
        return reactor, d, transports

    def echo(self, transport: StringTransportWithDisconnection) -> None:
        """Echo what the client has written since the last echo."""
        data = transport.value()
        transport.clear()
        transport.protocol.dataReceived(data)

    def endHold(self, reactor: MemoryReactorClock) -> None:
        """Let the hold run its duration; the final echoes are sent then."""
        reactor.advance(0)
        reactor.advance(1.0)

    def test_allAnswer(self) -> None:
        """Every held connection gets a second, different message; all answer."""
        reactor, d, transports = self.start(3)
        self.endHold(reactor)
        finals = [t.value() for t in transports]
        self.assertEqual([len(m) for m in finals], [8, 8, 8])
        self.assertEqual(len(set(finals)), 3)
        reactor.advance(0.25)
        for transport in transports:
            self.echo(transport)
        results = self.successResultOf(d)
        self.assertEqual(
            (results.echoes, results.answered, results.errors), (3, 3, Counter())
        )
        self.assertEqual((results.setupSeconds, results.finalSeconds), (0.0, 0.25))
        self.assertEqual(results.histogram.get_total_count(), 3)

    def test_silentAfterFirstEcho(self) -> None:
        """A connection that stops answering after its first echo is an error."""
        reactor, d, transports = self.start(2)
        self.endHold(reactor)
        self.echo(transports[0])
        self.assertNoResult(d)
        reactor.advance(2.0)
        results = self.successResultOf(d)
        self.assertEqual(
            (results.echoes, results.answered, results.errors),
            (2, 1, Counter(hold_final_timeout=1)),
        )

    def test_lostBeforeItsTurn(self) -> None:
        """A connection closed while others are checked is not waited for."""
        reactor, d, transports = self.start(201)
        self.endHold(reactor)
        waiting = [t for t in transports if not t.value()]
        self.assertEqual(len(waiting), 1)
        waiting[0].loseConnection()
        for transport in transports:
            if transport.value():
                self.echo(transport)
        results = self.successResultOf(d)
        self.assertEqual(
            (results.echoes, results.answered, results.errors),
            (201, 200, Counter(hold_closed=1)),
        )

    def test_wrongFinalEcho(self) -> None:
        """A final echo that comes back changed, or a close, is counted by kind."""
        reactor, d, transports = self.start(2)
        self.endHold(reactor)
        corrupt = transports[0].value()
        transports[0].clear()
        transports[0].protocol.dataReceived(bytes([corrupt[0] ^ 1]) + corrupt[1:])
        transports[1].loseConnection()
        results = self.successResultOf(d)
        self.assertEqual(
            (results.echoes, results.answered, results.errors),
            (2, 0, Counter(hold_final_corrupt=1, hold_final_closed=1)),
        )


class CommandLineTests(SynchronousTestCase):
    """The bench's option handling, without running anything."""

    def test_version(self) -> None:
        """C{--version} prints echotwist's version and exits 0."""
        output = OutputCapture(self)
        with self.assertRaises(SystemExit) as raised:
            buildParser().parse_args(["--version"])
        self.assertEqual(raised.exception.code, 0)
        self.assertEqual(output.out.getvalue(), versionText() + "\n")

    def test_bracketedHost(self) -> None:
        """An IPv6 address may be given in brackets; they are taken off."""
        for host in ("[::1]", "::1"):
            self.assertEqual(buildParser().parse_args([host]).host, "::1")
        output = OutputCapture(self)
        with self.assertRaises(SystemExit) as raised:
            buildParser().parse_args(["[::1"])
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(
            output.err.getvalue().splitlines()[-1],
            "python -m echotwist.bench: error: argument host[:port]: invalid host"
            " '[::1': brackets enclose an IPv6 address only",
        )

    def test_hostAndPort(self) -> None:
        """C{HOST:PORT} carries the port; a bare IPv6 address does not."""
        cases = (
            (["127.0.0.1:5000"], ("127.0.0.1", 5000)),
            (["[::1]:5000"], ("::1", 5000)),
            (["::1", "5000"], ("::1", 5000)),
            (["localhost"], ("localhost", 7)),
            (["h", "9"], ("h", 9)),
        )
        for argv, expected in cases:
            args = buildParser().parse_args(argv)
            self.assertEqual((args.host, args.port), expected, argv)

    def test_portTwice(self) -> None:
        """A port in C{HOST:PORT} and as an argument is a usage error."""
        output = OutputCapture(self)
        for argv in (["h:1", "2"], ["h:x"], ["[::1]:0"]):
            with self.assertRaises(SystemExit) as raised:
                buildParser().parse_args(argv)
            self.assertEqual(raised.exception.code, 2, argv)
        lines = output.err.getvalue().splitlines()
        self.assertEqual(
            [line for line in lines if "error" in line],
            [
                "python -m echotwist.bench: error: the port is given twice"
                " (HOST:PORT and PORT)",
                "python -m echotwist.bench: error: argument host[:port]:"
                " invalid port 'x': not a whole number",
                "python -m echotwist.bench: error: argument host[:port]:"
                " invalid port '0': must be 1 to 65535",
            ],
        )

    def test_durations(self) -> None:
        """Durations take wrk's units: us, ms, s, m, h, or plain seconds."""
        for text, seconds in (
            ("1.5", 1.5), ("500ms", 0.5), ("1s", 1.0), ("2m", 120.0),
            ("1h", 3600.0), ("250us", 0.00025), (" 3 s ", 3.0),
        ):  # fmt: skip
            self.assertAlmostEqual(parseDuration(text, "duration"), seconds)
        args = buildParser().parse_args(["-d", "1s", "-w", "500ms", "h"])
        self.assertEqual((args.duration, args.warmup), (1.0, 0.5))
        for text in ("1x", "ms", "", "1 2s", "-1s"):
            self.assertRaises(ValueError, parseDuration, text, "duration")
        self.assertRaises(ValueError, parseDuration, "0s", "duration", positive=True)

    def test_holdSources(self) -> None:
        """Load processes in hold mode bind to source addresses of their own."""
        self.assertEqual(
            holdSources([25000, 25000, 10], None), [(0, 2), (2, 2), (4, 1)]
        )
        self.assertEqual(holdSources([5, 5], 5), [(0, 3), (3, 2)])
        # Fewer sources than processes: the processes take turns.
        self.assertEqual(holdSources([5, 5, 5], 2), [(0, 1), (1, 1), (0, 1)])
        self.assertEqual(
            sourceAddresses("127.0.0.1", "hold", 10, 2, 3), ("127.0.0.4", "127.0.0.5")
        )
        self.assertRaises(UsageError, sourceAddresses, "127.0.0.1", "hold", 1, 2, 65535)

    def test_holdChildrenSources(self) -> None:
        """With --processes, each hold child is told its first source and count."""
        reactor = ProcessReactor()
        argv = ["--mode", "hold", "--processes", "3", "-c", "6", "--sources", "4",
                "127.0.0.1", "9"]  # fmt: skip
        runMain(self, argv, reactor)
        given = []
        for _, args, _ in reactor.processes:
            self.assertEqual(args.count("--sources"), 1)
            given.append(
                (
                    args[args.index("--first-source") + 1],
                    args[args.index("--sources") + 1],
                )
            )
        self.assertEqual(given, [("0", "2"), ("2", "1"), ("3", "1")])

    def test_fileLimitError(self) -> None:
        """Too many connections for the hard limit: one line naming the way out."""
        limit = FileLimit(1024, 20000)
        self.assertIsNone(fileLimitError(19936, 19936, limit.get))
        self.assertEqual(
            fileLimitError(20000, 20000, limit.get),
            "20000 connections need 20064 open files; the hard limit is 20000"
            " (use --processes 2 or more)",
        )
        self.assertEqual(
            fileLimitError(25000, 100000, limit.get),
            "25000 connections per process need 25064 open files; the hard"
            " limit is 20000 (use --processes 6 or more)",
        )

    def test_raiseFileLimit(self) -> None:
        """The soft file limit rises to what the connections need, never falls."""
        limit = FileLimit(1024, 20000)
        raiseFileLimit(5000, limit.get, limit.setLimit)
        self.assertEqual(limit.set, [(5064, 20000)])
        raiseFileLimit(10, limit.get, limit.setLimit)
        self.assertEqual(limit.set, [(5064, 20000)])

    def test_raiseFileLimitTooLow(self) -> None:
        """A hard limit too low for the connections: one line, exit 1, no change."""
        output = OutputCapture(self)
        limit = FileLimit(1024, 1000)
        with self.assertRaises(SystemExit) as raised:
            raiseFileLimit(2000, limit.get, limit.setLimit)
        self.assertEqual(raised.exception.code, 1)
        self.assertEqual(limit.set, [])
        self.assertEqual(
            output.err.getvalue(),
            "echotwist.bench: error: 2000 connections need 2064 open files; the"
            " hard limit is 1000 (use --processes 3 or more)\n",
        )

    def test_processesFileLimit(self) -> None:
        """--processes too few for the hard limit fails before any child starts."""
        output = OutputCapture(self)
        limit = FileLimit(1024, 1000)
        reactor = ProcessReactor()
        d = runMain(self, ["--mode", "hold", "--processes", "2", "-c", "4000",
                           "127.0.0.1", "9"], reactor, limit=limit)  # fmt: skip
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 1)
        self.assertEqual(reactor.processes, [])
        self.assertEqual(
            output.err.getvalue(),
            "echotwist.bench: error: 2000 connections per process need 2064 open"
            " files; the hard limit is 1000 (use --processes 5 or more)\n",
        )

    def test_sources(self) -> None:
        """Hold mode spreads over enough loopback sources; others need none."""
        self.assertEqual(sourceAddresses("127.0.0.1", "pingpong", 50, None), (None,))
        self.assertEqual(
            sourceAddresses("127.0.0.1", "hold", 37500, None),
            ("127.0.0.1", "127.0.0.2", "127.0.0.3"),
        )
        self.assertEqual(len(sourceAddresses("127.0.0.1", "connect", 1, None)), 8)
        self.assertEqual(sourceAddresses("::1", "hold", 60000, None), (None,))
        self.assertRaises(UsageError, sourceAddresses, "::1", "hold", 10, 2)

    def test_split(self) -> None:
        """Connections split over processes as evenly as whole numbers allow."""
        self.assertEqual(splitEvenly(10, 3), [4, 3, 3])
        self.assertEqual(sum(splitEvenly(50, 4)), 50)

    def test_childArguments(self) -> None:
        """A child gets the parent's options less those the parent handles."""
        self.assertEqual(
            childArguments(
                ["--processes", "2", "-c", "10", "--json", "--hlog=x",
                 "--plot", "p.png", "--rate", "5", "-d", "1", "h", "7"]
            ),
            ["-d", "1", "h", "7"],
        )  # fmt: skip

    def test_checkOptions(self) -> None:
        """--rate needs pingpong or connect mode; --plot needs a .png name."""
        parser = buildParser()
        for arguments in (
            ["--mode", "stream", "--rate", "10", "h"],
            ["--plot", "x.svg", "h"],
            ["--processes", "3", "-c", "2", "h"],
        ):
            self.assertRaises(UsageError, checkOptions, parser.parse_args(arguments))
        checkOptions(parser.parse_args(["--rate", "10", "--plot", "x.png", "h"]))


class OutputCapture:
    """Standard output and error of the code under test, as strings."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.out = io.StringIO()
        self.err = io.StringIO()
        case.patch(sys, "stdout", self.out)
        case.patch(sys, "stderr", self.err)


class FileLimit:
    """A stand-in for the process's C{RLIMIT_NOFILE}: read and set, no effect."""

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard
        self.set: list[tuple[int, int]] = []

    def get(self) -> tuple[int, int]:
        """The soft and hard limits."""
        return self.soft, self.hard

    def setLimit(self, soft: int, hard: int) -> None:
        """Record the new limits and keep them."""
        self.set.append((soft, hard))
        self.soft, self.hard = soft, hard


def runMain(
    case: SynchronousTestCase,
    argv: list[str],
    reactor: object = None,
    interrupt: Interrupt | None = None,
    *,
    now: Callable[[], float] | None = None,
    limit: FileLimit | None = None,
    runProcesses: RunProcesses | None = None,
    cpuTimes: Sequence[CpuTimes] = (),
) -> Deferred[None]:
    """Start L{main} on a memory reactor (or C{reactor}).

    No signal handlers are installed and the process's file limit is
    never read or changed: C{limit} (or a generous one) stands in for it.
    C{now} (the reactor's clock by default) times the run.  The machine's
    CPU times are the successive C{cpuTimes}, then unknown (None).
    """
    readings = list(cpuTimes)
    clock = cast(MemoryReactorClock, reactor or MemoryReactorClock())
    limit = limit or FileLimit(1024, 65536)
    system = System(
        now=now or clock.seconds,
        getFileLimit=limit.get,
        setFileLimit=limit.setLimit,
        makeWaker=CallLaterWaker,
        readCpuTimes=lambda: readings.pop(0) if readings else None,
    )
    if runProcesses is not None:
        system = dataclasses.replace(system, runProcesses=runProcesses)
    return Deferred.fromCoroutine(
        main(clock, argv, interrupt or Interrupt(clock), system)
    )


class CommandLineErrorTests(SynchronousTestCase):
    """Bad options and unwritable files fail early, with one line."""

    def exitCode(self, d: Deferred[None]) -> object:
        """The exit code C{d} failed with (it must fail with SystemExit)."""
        return self.failureResultOf(d, SystemExit).value.code

    def test_abbreviationsRejected(self) -> None:
        """Abbreviated options are usage errors, not passed on to children."""
        output = OutputCapture(self)
        for option, value in (("--proc", "2"), ("--hl", "x.log"), ("--pl", "x.png")):
            with self.assertRaises(SystemExit) as raised:
                buildParser().parse_args(["127.0.0.1", "7", option, value])
            self.assertEqual(raised.exception.code, 2)
            self.assertIn(f"unrecognized arguments: {option}", output.err.getvalue())
        with self.assertRaises(SystemExit):
            buildMergeParser().parse_args(["--pl", "x.png", "a.log"])
        d = runMain(self, ["--proc", "2", "127.0.0.1", "7"])
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 2)
        self.assertEqual(
            output.err.getvalue().splitlines()[-1],
            "python -m echotwist.bench: error: unrecognized option --proc",
        )
        self.assertIn("unrecognized arguments: --pl", output.err.getvalue())

    def test_numbersInTheProjectsWording(self) -> None:
        """Bad numbers are reported in L{echotwist.parsing}'s words, exit 2."""
        output = OutputCapture(self)
        cases = (
            (["-c", "0", "h"],
             "-c/--connections: invalid count '0': must be 1 or more"),
            (["-s", "x", "h"], "-s/--size: invalid size 'x': not a whole number"),
            (["-d", "0", "h"],
             "-d/--duration: invalid duration '0': must be more than 0"),
            (["-w", "-1", "h"], "-w/--warmup: invalid warmup '-1': must be 0 or more"),
            (["--rate", "0", "h"], "--rate: invalid rate '0': must be more than 0"),
            (["--timeout", "inf", "h"],
             "--timeout: invalid timeout 'inf': not a number of seconds or a"
             " duration such as 500ms, 10s, 2m"),
            (["h", "70000"], "port: invalid port '70000': must be 1 to 65535"),
            (["h", "0"], "port: invalid port '0': must be 1 to 65535"),
        )  # fmt: skip
        for arguments, message in cases:
            with self.assertRaises(SystemExit) as raised:
                buildParser().parse_args(arguments)
            self.assertEqual(raised.exception.code, 2)
            self.assertEqual(
                output.err.getvalue().splitlines()[-1],
                f"python -m echotwist.bench: error: argument {message}",
            )

    def test_plotDirectoryChecked(self) -> None:
        """A --plot or --hlog file in a missing directory is a usage error."""
        parser = buildParser()
        missing = os.path.join(self.mktemp(), "x")
        for arguments in (
            ["--plot", missing + ".png", "h"],
            ["--hlog", missing + ".log", "h"],
        ):
            self.assertRaises(UsageError, checkOptions, parser.parse_args(arguments))

    def test_mergePlotDirectoryChecked(self) -> None:
        """C{merge --plot} into a missing directory exits 2 before merging."""
        output = OutputCapture(self)
        plot = os.path.join(self.mktemp(), "x.png")
        d = runMain(self, ["merge", "--plot", plot, "no-such.log"])
        self.assertEqual(self.exitCode(d), 2)
        self.assertIn("--plot: no directory", output.err.getvalue())

    def test_reportSurvivesPlotError(self) -> None:
        """A plot that cannot be written still leaves the report; one line, exit 1."""
        output = OutputCapture(self)

        def unwritable(results: Results, path: str) -> None:
            raise FileNotFoundError(2, "No such file or directory", path)

        self.patch(plot, "plotLatency", unwritable)
        results = Results("pingpong", 1, 8, 1.0, 0, newHistogram())
        args = buildParser().parse_args(["--json", "--plot", "x.png", "h"])
        with self.assertRaises(SystemExit) as raised:
            emit(results, args)
        self.assertEqual(raised.exception.code, 1)
        self.assertEqual(json.loads(output.out.getvalue())["mode"], "pingpong")
        self.assertEqual(
            output.err.getvalue(),
            "echotwist.bench: error: cannot write x.png: No such file or directory\n",
        )

    def test_processesLogOpenedBeforeChildren(self) -> None:
        """With --processes, an --hlog that cannot be opened fails before any child."""
        output = OutputCapture(self)
        started: list[object] = []

        async def noChildren(*arguments: object, **keywords: object) -> Results:
            started.append(arguments)
            raise AssertionError("children started")

        directory = self.mktemp()
        os.mkdir(directory)
        d = runMain(
            self,
            ["--processes", "2", "-c", "2", "--hlog", directory, "127.0.0.1"],
            runProcesses=noChildren,
        )
        self.assertEqual(self.exitCode(d), 1)
        self.assertEqual(started, [])
        self.assertIn(f"cannot write {directory}", output.err.getvalue())


class FakeResolvingReactor(MemoryReactorClock):
    """A memory reactor whose C{resolve} records names and never answers."""

    def __init__(self) -> None:
        # Twisted leaves MemoryReactorClock.__init__ unannotated.
        super().__init__()  # type: ignore[no-untyped-call]
        self.lookups: list[tuple[str, Deferred[str]]] = []

    def resolve(
        self, name: str, timeout: Sequence[int] = (1, 3, 11, 45)
    ) -> Deferred[str]:
        """Record the lookup; the test decides when and how it ends."""
        d: Deferred[str] = Deferred()
        self.lookups.append((name, d))
        return d


class ResolveTests(SynchronousTestCase):
    """Host names that cannot be resolved end the run with one line, exit 1."""

    def test_badNamesNeverReachTheResolver(self) -> None:
        """Empty or over-long labels and undecodable bytes: one line, exit 1."""
        output = OutputCapture(self)
        reactor = FakeResolvingReactor()
        for host in ("foo..bar", "a" * 70 + ".example", "h\udcff.example"):
            d = Deferred.fromCoroutine(resolve(reactor, host, 5.0))
            self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 1)
        self.assertEqual(reactor.lookups, [])
        lines = output.err.getvalue().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0], "echotwist.bench: error: unknown host 'foo..bar'")

    def test_lookupTimesOut(self) -> None:
        """A lookup without an answer fails after --timeout seconds."""
        output = OutputCapture(self)
        reactor = FakeResolvingReactor()
        d = runMain(self, ["--timeout", "2", "-d", "1", "server.test"], reactor)
        self.assertEqual([name for name, _ in reactor.lookups], ["server.test"])
        reactor.advance(1.9)
        self.assertNoResult(d)
        reactor.advance(0.2)
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 1)
        self.assertEqual(
            output.err.getvalue(),
            "echotwist.bench: error: cannot resolve 'server.test': no answer in 2 s\n",
        )

    def test_lookupFails(self) -> None:
        """A failed lookup is one line naming the host, exit 1."""
        output = OutputCapture(self)
        reactor = FakeResolvingReactor()
        d = runMain(self, ["server.test"], reactor)
        reactor.lookups[0][1].errback(DNSLookupError("server.test"))
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 1)
        self.assertEqual(
            output.err.getvalue(),
            "echotwist.bench: error: unknown host 'server.test'\n",
        )


class FakeProcessTransport:
    """A child process transport that records the signals it is sent."""

    def __init__(self) -> None:
        self.signals: list[int | str] = []

    def signalProcess(self, number: int | str) -> None:
        """Record the signal."""
        self.signals.append(number)


class ProcessReactor(MemoryReactorClock):
    """A memory reactor that records child processes instead of starting them."""

    def __init__(self) -> None:
        # Twisted leaves MemoryReactorClock.__init__ unannotated.
        super().__init__()  # type: ignore[no-untyped-call]
        self.processes: list[tuple[ChildProcess, list[str], FakeProcessTransport]] = []
        self.fromThread: list[tuple[object, tuple[object, ...]]] = []

    def spawnProcess(
        self, protocol: ChildProcess, executable: str, args: list[str], **kw: object
    ) -> FakeProcessTransport:
        """Record the child; give its protocol a fake transport."""
        transport = FakeProcessTransport()
        protocol.makeConnection(cast(IProcessTransport, transport))
        self.processes.append((protocol, args, transport))
        return transport

    def callFromThread(self, f: object, *args: object) -> None:
        """Record the call, as a thread would queue it."""
        self.fromThread.append((f, args))


class InterruptTests(SynchronousTestCase):
    """SIGINT and SIGTERM end a run with a report (or one line) and 128 + N."""

    def startPingpong(
        self, reactor: MemoryReactorClock, cpuTimes: Sequence[CpuTimes] = ()
    ) -> tuple[Deferred[None], Interrupt]:
        """Start a pingpong run on C{reactor} whose clock also times it."""
        interrupt = Interrupt(reactor)
        argv = ["--json", "-c", "2", "-w", "0", "-d", "10", "127.0.0.1", "9"]
        d = runMain(
            self, argv, reactor, interrupt, now=reactor.seconds, cpuTimes=cpuTimes
        )
        return d, interrupt

    def test_hostSteal(self) -> None:
        """The report has the host's steal between the run's start and its
        report: here 50 of 1,000 ticks, 5 %.
        """
        output = OutputCapture(self)
        reactor = MemoryReactorClock()
        d, interrupt = self.startPingpong(
            reactor, [CpuTimes(10_000, 100), CpuTimes(11_000, 150)]
        )
        connectAll(reactor)
        reactor.advance(0)
        reactor.advance(1.0)
        interrupt.fire(signal.SIGTERM)
        self.failureResultOf(d, SystemExit)
        report = json.loads(output.out.getvalue())
        self.assertEqual(report["machine"]["steal_percent"], 5.0)

    def test_beforeMeasuring(self) -> None:
        """Interrupted while connecting: one line, exit 130, nothing on stdout."""
        output = OutputCapture(self)
        reactor = MemoryReactorClock()
        d, interrupt = self.startPingpong(reactor)
        self.assertEqual(len(reactor.tcpClients), 2)
        interrupt.fire(signal.SIGINT)
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 130)
        self.assertEqual(output.out.getvalue(), "")
        self.assertEqual(
            output.err.getvalue(),
            "echotwist.bench: error: interrupted by SIGINT before anything was"
            " measured\n",
        )

    def test_partialReport(self) -> None:
        """Interrupted after measuring: the report of what was measured, exit 143."""
        output = OutputCapture(self)
        reactor = MemoryReactorClock()
        d, interrupt = self.startPingpong(reactor)
        connectAll(reactor)
        reactor.advance(0)
        reactor.advance(1.0)
        reactor.advance(1.0)
        self.assertNoResult(d)
        interrupt.fire(signal.SIGTERM)
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 143)
        report = json.loads(output.out.getvalue())
        self.assertEqual((report["mode"], report["seconds"]), ("pingpong", 2.0))
        self.assertIn("interrupted by SIGTERM", output.err.getvalue())

    def test_childrenSignalled(self) -> None:
        """With --processes, the signal goes on to every child; their reports merge."""
        output = OutputCapture(self)
        reactor = ProcessReactor()
        interrupt = Interrupt(reactor)
        argv = ["--json", "--processes", "2", "-c", "2", "-d", "10", "127.0.0.1", "9"]
        d = runMain(self, argv, reactor, interrupt)
        self.assertEqual(len(reactor.processes), 2)
        interrupt.fire(signal.SIGINT)
        self.assertEqual(
            [transport.signals for _, _, transport in reactor.processes],
            [[signal.SIGINT], [signal.SIGINT]],
        )
        self.assertNoResult(d)
        for child, _, _ in reactor.processes:
            histogram = newHistogram()
            histogram.record_value(100)
            partial = Results("pingpong", 1, 512, 1.5, 1, histogram)
            report = partial.toJSON()
            report["histogram"] = encodeHistogram(partial.histogram)
            child.outReceived(json.dumps(report).encode("utf-8"))
            child.processEnded(Failure(ProcessTerminated(130)))
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 130)
        merged = json.loads(output.out.getvalue())
        self.assertEqual((merged["echoes"], merged["processes"]), (2, 2))
        self.assertIn("interrupted by SIGINT", output.err.getvalue())

    def test_silentChildren(self) -> None:
        """Children that do not report after a signal: one line, exit 143."""
        output = OutputCapture(self)
        reactor = ProcessReactor()
        interrupt = Interrupt(reactor)
        argv = ["--processes", "2", "-c", "2", "-d", "10", "127.0.0.1", "9"]
        d = runMain(self, argv, reactor, interrupt)
        interrupt.fire(signal.SIGTERM)
        reactor.advance(CHILD_GRACE)
        self.assertEqual(self.failureResultOf(d, SystemExit).value.code, 143)
        self.assertEqual(
            output.err.getvalue(),
            "echotwist.bench: error: interrupted by SIGTERM; the load processes"
            " did not report\n",
        )

    def test_endedChildNotSignalled(self) -> None:
        """A child that has already ended is not signalled."""
        child = ChildProcess()
        transport = FakeProcessTransport()
        child.makeConnection(cast(IProcessTransport, transport))
        child.processEnded(Failure(ProcessDone(0)))
        child.stop(signal.SIGTERM)
        self.assertEqual(transport.signals, [])

    def test_childEndsWithItsParent(self) -> None:
        """A child sees its standard input close and stops as if by SIGTERM."""
        reactor = ProcessReactor()
        interrupt = Interrupt(reactor)
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        watcher = watchParent(readEnd, interrupt)
        os.write(writeEnd, b"anything")
        os.close(writeEnd)
        watcher.join(10)
        self.assertFalse(watcher.is_alive())
        self.assertEqual(reactor.fromThread, [(interrupt.fire, (signal.SIGTERM,))])

    def test_signalHandedToReactorThread(self) -> None:
        """The signal handler only queues the signal for the reactor thread."""
        reactor = ProcessReactor()
        interrupt = Interrupt(reactor)
        interrupt.handle(signal.SIGINT, None)
        self.assertNoResult(interrupt.signalled)
        self.assertEqual(reactor.fromThread, [(interrupt.fire, (signal.SIGINT,))])


class HistogramTests(SynchronousTestCase):
    """The histogram keeps microsecond resolution where latencies live."""

    def test_resolution(self) -> None:
        """Values to a millisecond are exact; an hour fits."""
        histogram = newHistogram()
        for value in (1, 999, 1000, 3_600_000_000):
            self.assertTrue(histogram.record_value(value))
        self.assertEqual(histogram.get_value_at_percentile(25), 1)
        self.assertEqual(histogram.get_value_at_percentile(50), 999)
        self.assertEqual(json.loads(json.dumps(percentiles(histogram)))["p50_us"], 999)


class LateConnectionTests(SynchronousTestCase):
    """A connection made after the run ended is closed, not used."""

    def test_lateConnection(self) -> None:
        """It sends nothing, takes no slot and counts no error."""
        _reactor, run = startRun()
        run.finish()
        connection, written = attach(run)
        self.assertEqual(
            (written.getvalue(), run.slots, connection.closed, run.errors),
            (b"", [None], True, Counter()),
        )


class DirectWriteTests(SynchronousTestCase):
    """Messages go out through L{echotwist.internals.writepath.sendNow}."""

    def connect(self, room: int | None) -> tuple[LoadConnection, FakeSocket, Client]:
        """A connection on a real C{tcp.Client} over a fake socket."""
        _reactor, run = startRun()
        connection = LoadConnection(run, 0, run.newCid())
        socket = FakeSocket(room)
        transport = client(socket, connection)
        connection.makeConnection(transport)
        return connection, socket, transport

    def test_direct(self) -> None:
        """With nothing queued, the whole message is sent on the socket."""
        connection, socket, transport = self.connect(room=None)
        connection.write(b"hello")
        self.assertEqual((socket.sent, transport._tempDataLen), (b"hello", 0))

    def test_partial(self) -> None:
        """What the socket does not take is queued on the transport."""
        connection, socket, transport = self.connect(room=2)
        connection.write(b"hello")
        self.assertEqual((socket.sent, transport._tempDataLen), (b"he", 3))

    def test_queued(self) -> None:
        """With bytes queued in the transport, the transport keeps the order."""
        connection, socket, transport = self.connect(room=None)
        transport.write(b"abc")
        connection.write(b"hello")
        self.assertEqual((socket.sent, transport._tempDataLen), (b"", 8))
