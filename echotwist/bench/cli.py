"""The command line: C{python -m echotwist.bench [options] host[:port] [port]}.

Also C{python -m echotwist.bench merge [--json] [--plot FILE] LOG...},
which merges interval logs written with C{--hlog}, and C{python -m
echotwist.bench compare A.json B.json}, which sets two JSON reports side
by side.  Usage errors print
argparse's usage and one error line and exit 2; a run that cannot start
prints one line to standard error and exits 1; a run that counted errors
prints its report and then one line to standard error, and exits 1; a
run ended by SIGINT or SIGTERM reports what it measured and exits 128 +
the signal number.

This module runs the pieces in order (L{main}); the options are
L{echotwist.bench.arguments}', the load processes and signals
L{echotwist.bench.processes}', the output L{echotwist.bench.report}'s.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, cast

from hdrh.histogram import HdrHistogram
from twisted.internet import task
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.python.failure import Failure

from echotwist.bench.arguments import (
    UsageError,
    buildCompareParser,
    buildMergeParser,
    buildParser,
    checkOptions,
    checkPlot,
    parametersOf,
    rejectUnknownOptions,
    sourceAddresses,
)
from echotwist.bench.compare import BadReport, checkReport, compareRows, formatRows
from echotwist.bench.cpustat import CpuTimes, readCpuTimes, stealPercent
from echotwist.bench.datagram import runDatagram
from echotwist.bench.hlog import BadLog, IntervalLogWriter, mergeLogs
from echotwist.bench.load import (
    IntervalObserver,
    LoadConfig,
    LoadRun,
    SetupError,
    resultsOf,
    runConnect,
    runHold,
    runPingpong,
)
from echotwist.bench.processes import (
    CHILD_GRACE,
    ChildProcess,
    GetFileLimit,
    Interrupt,
    RunProcesses,
    SetFileLimit,
    getFileLimit,
    raiseFileLimit,
    runProcesses,
    setFileLimit,
    watchParent,
)
from echotwist.bench.report import (
    IntervalLines,
    Progress,
    emit,
    fail,
    fail_,
    intervalOf,
    openLog,
    writeMergedLog,
    writeReport,
)
from echotwist.bench.results import Interval, Results, machineContext
from echotwist.bench.timer import Waker, makeWaker


@dataclass(frozen=True)
class System:
    """What a run takes from this process and machine besides the reactor.

    Tests give a run stand-ins (the reactor's clock, a file limit, load
    processes that never start) instead of patching the modules that use
    them.
    """

    # The clock latencies and windows are measured with.
    now: Callable[[], float] = time.perf_counter
    # The wall clock, for the run's start time in its report.
    wallClock: Callable[[], float] = time.time
    getFileLimit: GetFileLimit = getFileLimit
    setFileLimit: SetFileLimit = setFileLimit
    runProcesses: RunProcesses = runProcesses
    # The open loop's timer: a timerfd where the reactor can watch one.
    makeWaker: Callable[[IReactorTime, Callable[[], object]], Waker] = makeWaker
    # The CPU times of the machine (/proc/stat), for the host's steal.
    readCpuTimes: Callable[[], CpuTimes | None] = readCpuTimes


class Measured:
    """What the run has measured so far, for a report after an interrupt."""

    def __init__(self) -> None:
        self.run: LoadRun | None = None
        self.seconds = 0.0
        self.children: list[ChildProcess] = []
        self.startedAt: float | None = None
        # The machine's CPU times when the run started, for its steal.
        self.cpuTimes: CpuTimes | None = None

    def machine(self, reactor: object, system: System) -> dict[str, object]:
        """The run's machine context, with the host's steal since it started."""
        steal = stealPercent(self.cpuTimes, system.readCpuTimes())
        return machineContext(type(reactor).__name__, steal)

    def observe(
        self,
        batch: HdrHistogram,
        uncorrected: HdrHistogram | None,
        start: float,
        end: float,
        run: LoadRun,
    ) -> None:
        """An interval observer: remember the run and its measured time."""
        self.run, self.seconds = run, end

    def partial(self) -> Results | None:
        """The results of the intervals completed, if any."""
        if self.run is None or self.seconds <= 0:
            return None
        return resultsOf(self.run, self.seconds)


async def resolve(reactor: IReactorTime, host: str, timeout: float) -> str:
    """The address of C{host}: an IP literal as is, a name via the reactor.

    A name IDNA cannot encode (an empty or over-long label, bytes that are
    not text) never reaches the resolver, which would fail outside the
    returned Deferred and leave it waiting forever; a lookup gets
    C{timeout} seconds.  Every failure is one line and exit 1.
    """
    if isIPAddress(host) or isIPv6Address(host):
        return host
    try:
        host.encode("idna")
    except UnicodeError:
        fail(f"unknown host {host!r}")
    try:
        lookup = cast(IReactorCore, reactor).resolve(host)
    except Exception:
        fail(f"unknown host {host!r}")
    lookup.addTimeout(timeout, reactor)
    try:
        return await lookup
    except TimeoutError:
        fail(f"cannot resolve {host!r}: no answer in {timeout:g} s")
    except Exception:
        fail(f"unknown host {host!r}")


def freezeHeap() -> None:
    """Leave what exists now (Twisted, the modules, the reactor) out of collections.

    Python's full collections scan every tracked object; frozen, the ones
    made before the load starts are never scanned again, so that a
    collection during the run costs in proportion to what the run makes,
    not to the whole heap, and holds no send up for long.
    """
    gc.collect()
    gc.freeze()


def display(
    args: argparse.Namespace, observers: list[IntervalObserver]
) -> Progress | None:
    """Show each interval as the run goes, unless the output is JSON or CSV.

    A line per interval that stays (output that is not a terminal), or a
    live line on a terminal, returned so that it can be taken down.
    """
    if args.json or args.csv or args.child:
        return None
    if not sys.stdout.isatty():
        observers.append(IntervalLines().update)
        return None
    try:
        progress = Progress()
    except ModuleNotFoundError:
        # rich is missing: the progress line is a nicety, the run is not.
        return None
    observers.append(progress.update)
    return progress


async def runOnce(
    reactor: IReactorTime,
    args: argparse.Namespace,
    address: str,
    measured: Measured | None = None,
    system: System | None = None,
) -> Results:
    """One load process: run the mode, with log and progress as asked.

    C{system} gives the clock latencies and the measured window are read
    from, and the open loop's timer.
    """
    system = system or System()
    now = system.now
    config = LoadConfig(
        host=args.host,
        port=args.port,
        mode=args.mode,
        connections=args.connections,
        size=args.size,
        duration=args.duration,
        warmup=args.warmup,
        pipeline=args.pipeline,
        rate=args.rate,
        sources=sourceAddresses(
            address, args.mode, args.connections, args.sources, args.first_source
        ),
        connectTimeout=args.timeout,
        interval=args.interval,
        tls=args.tls,
        insecure=args.insecure,
        udp=args.udp,
        spin=args.spin,
    )
    observers: list[IntervalObserver] = []
    if measured is not None:
        observers.append(measured.observe)
    logFile = None
    if args.hlog is not None:
        logFile = openLog(args.hlog)
        log = IntervalLogWriter(logFile, time.time())
        observers.append(
            lambda batch, _u, start, end, _r: log.interval(batch, start, end)
        )
    timeline: list[Interval] = []
    observers.append(
        lambda batch, _u, start, end, run: timeline.append(
            intervalOf(batch, start, end, run)
        )
    )
    progress = display(args, observers)

    def observe(
        batch: HdrHistogram,
        uncorrected: HdrHistogram | None,
        start: float,
        end: float,
        run: LoadRun,
    ) -> None:
        for observer in observers:
            observer(batch, uncorrected, start, end, run)

    freezeHeap()
    try:
        if args.mode == "hold":
            results = await runHold(reactor, now, config, address, observe)
        else:
            runner = (
                runDatagram
                if args.udp
                else runConnect
                if args.mode == "connect"
                else runPingpong
            )
            results = await runner(
                reactor, now, config, address, observe, makeWaker=system.makeWaker
            )
    except SetupError as e:
        fail(str(e))
    finally:
        if progress is not None:
            progress.stop()
    if logFile is not None:
        log.finish(results)
        logFile.close()
    results.timeline = timeline
    return results


# The bench's steps, in the order they run; split, the order would hide.
async def main(  # noqa: PLR0915
    reactor: IReactorTime,
    argv: Sequence[str],
    interrupt: Interrupt | None = None,
    system: System | None = None,
) -> None:
    """Run the bench (or C{merge}) with C{argv} (without the program name).

    C{interrupt} defaults to one that takes over SIGINT and SIGTERM once
    the reactor runs; tests pass their own and fire it.  C{system}
    defaults to this process's clock, file limit and load processes.
    """
    if argv and argv[0] == "compare":
        compare(argv[1:])
        return
    if argv and argv[0] == "merge":
        mergeParser = buildMergeParser()
        mergeArgs = mergeParser.parse_args(list(argv[1:]))
        try:
            checkPlot(mergeArgs.plot)
        except UsageError as e:
            mergeParser.error(str(e))
        try:
            merged = mergeLogs(mergeArgs.logs)
        except BadLog as e:
            fail(str(e))
        # No machine context: the logs may come from other machines.
        emit(merged, mergeArgs)
        return
    parser = buildParser()
    rejectUnknownOptions(parser, argv)
    args = parser.parse_args(list(argv))
    if interrupt is None:
        interrupt = Interrupt(reactor)
        cast(IReactorCore, reactor).callWhenRunning(interrupt.install)
        if args.child:
            watchParent(sys.stdin.fileno(), interrupt)
    measured = Measured()
    system = system or System()
    work = Deferred.fromCoroutine(
        bench(reactor, parser, args, argv, measured, system=system)
    )
    # Whichever comes first: the run's end (or failure) or a signal.
    first: Deferred[int | None] = Deferred()
    done: Deferred[None] = Deferred()
    outcome: list[object] = []

    def settle(number: int | None) -> None:
        if not first.called:
            first.callback(number)

    def finished(result: object) -> None:
        outcome.append(result)
        settle(None)
        done.callback(None)

    work.addBoth(finished)
    interrupt.signalled.addCallback(settle)
    number = await first
    if number is None:
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return
    name = signal.Signals(number).name
    if measured.children:
        await reportChildren(reactor, measured, number, done, outcome)
        fail_(f"interrupted by {name}: the load processes' report", 128 + number)
    # The run is left as it is, not cancelled: cancelling would make it
    # report a failed setup; its connections close as the reactor stops.
    results = measured.partial()
    if measured.run is not None:
        measured.run.finish()
    if results is None:
        fail_(f"interrupted by {name} before anything was measured", 128 + number)
    results.machine = measured.machine(reactor, system)
    describeRun(results, args, address=None, startedAt=measured.startedAt)
    writeReport(results, args)
    fail_(f"interrupted by {name}: report of {results.seconds:.1f} s", 128 + number)


async def reportChildren(
    reactor: IReactorTime,
    measured: Measured,
    number: int,
    done: Deferred[None],
    outcome: list[object],
) -> None:
    """Pass signal C{number} on to the children and let the run report.

    Each child prints what it measured and exits; the parent's run then
    merges and reports as usual.  A run that ends in an error or does not
    end within L{CHILD_GRACE} seconds ends with one more line saying so.
    """
    for child in measured.children:
        child.stop(number)
    done.addTimeout(CHILD_GRACE, reactor)
    name = signal.Signals(number).name
    try:
        await done
    except TimeoutError:
        fail_(f"interrupted by {name}; the load processes did not report", 128 + number)
    if isinstance(outcome[0], Failure):
        # A child killed before it could report (the signal came while it
        # was starting up) fails the run with its last line, printed above.
        fail_(f"interrupted by {name}; a load process did not report", 128 + number)


async def bench(
    reactor: IReactorTime,
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str],
    measured: Measured,
    *,
    system: System,
) -> None:
    """Check, resolve, run and report: the bench proper."""
    measured.startedAt = system.wallClock()
    measured.cpuTimes = system.readCpuTimes()
    try:
        checkOptions(args)
        address = await resolve(reactor, args.host, args.timeout)
        sourceAddresses(
            address, args.mode, args.connections, args.sources, args.first_source
        )
    except UsageError as e:
        parser.error(str(e))
    if args.processes > 1:
        # Opened before the children start: a bad path must not cost the run.
        logFile = openLog(args.hlog) if args.hlog is not None else None
        results = await system.runProcesses(
            reactor,
            args,
            argv,
            measured.children,
            address=address,
            getLimit=system.getFileLimit,
        )
        if logFile is not None:
            writeMergedLog(logFile, results)
    else:
        raiseFileLimit(args.connections, system.getFileLimit, system.setFileLimit)
        results = await runOnce(reactor, args, address, measured, system)
    results.machine = measured.machine(reactor, system)
    describeRun(results, args, address=address, startedAt=measured.startedAt)
    emit(results, args)


def describeRun(
    results: Results,
    args: argparse.Namespace,
    *,
    address: str | None,
    startedAt: float | None,
) -> None:
    """Add what was measured, how, and when to C{results}, for its report."""
    results.target = {"host": args.host, "port": args.port}
    if address is not None:
        results.target["address"] = address
    results.parameters = parametersOf(args)
    results.startedAt = startedAt


def compare(argv: Sequence[str]) -> None:
    """C{compare A.json B.json}: the two reports side by side, or one error line."""
    args = buildCompareParser().parse_args(list(argv))
    reports = []
    for path in (args.before, args.after):
        try:
            with open(path, encoding="utf-8") as f:
                reports.append(checkReport(path, json.load(f)))
        except OSError as e:
            fail(f"cannot read {path}: {e.strerror}")
        except (ValueError, BadReport) as e:
            fail(str(e) if isinstance(e, BadReport) else f"{path} is not JSON")
    rows = compareRows(reports[0], reports[1])
    if args.json:
        sys.stdout.write(
            json.dumps(
                {
                    "a": args.before,
                    "b": args.after,
                    "figures": [
                        {"figure": label, "a": a, "b": b, "change_percent": percent}
                        for label, a, b, percent in rows
                    ],
                }
            )
            + "\n"
        )
    else:
        lines = formatRows(rows, (args.before, args.after))
        sys.stdout.write("\n".join(lines) + "\n")


def installFastReactor() -> None:
    """On Linux, run on echotwist's fast epoll reactor (as C{twistd echo} does).

    The epoll reactor builds a logging context for every read and write
    event, about a third of the Python time per echo; the load generator
    cannot spare it, nor the scheduling delay it adds to every send due
    while an echo is being read.  Elsewhere, or with a reactor already
    installed, Twisted's default stays.
    """
    if not sys.platform.startswith("linux"):
        return
    from twisted.internet.error import ReactorAlreadyInstalledError

    from echotwist.internals.fastepoll import install

    with contextlib.suppress(ReactorAlreadyInstalledError):
        install()


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: start the reactor with L{task.react}."""
    arguments = sys.argv[1:] if argv is None else argv
    installFastReactor()
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
    raise SystemExit(0)  # task.react always exits; this satisfies NoReturn.
