"""The command line: C{python -m echotwist.bench [options] host [port]}.

Also C{python -m echotwist.bench merge [--json] [--plot FILE] LOG...},
which merges interval logs written with C{--hlog}.  Usage errors print
argparse's usage and one error line and exit 2; a run that cannot start
prints one line to standard error and exits 1; a run that counted errors
prints its report and then one line to standard error, and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn, TextIO, cast

from hdrh.histogram import HdrHistogram
from twisted.internet import task
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorProcess,
    IReactorThreads,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

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
from echotwist.bench.results import Results, formatReport, machineContext
from echotwist.server.limits import FILE_HEADROOM, fileLimitTarget, filesNeeded

ECHO_PORT = 7
MODES = ("pingpong", "connect", "hold")
# Each source address gets at most this many held connections.  Linux
# gives one address ~28,000 ephemeral ports (32768-60999), but bind() to
# port 0, which a bound connect does, looks first among the ports of one
# parity, half of them; once those are taken every further bind scans all
# of them before trying the rest, and set-up slows to a crawl (measured:
# about 90 connections/s at 16,000 per address).  So stay well within half.
PER_SOURCE = 12500
# Connect mode rotates over this many source addresses so that the
# TIME_WAIT sockets its closes leave behind do not use up one address.
CONNECT_SOURCES = 8
MAX_SIZE = 1 << 20
# Seconds interrupted load processes get to print what they measured.
CHILD_GRACE = 10.0


class UsageError(Exception):
    """Options that parse but do not fit together."""


def _number(
    kind: type[int] | type[float], name: str, minimum: float, strict: bool = False
) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value <= minimum):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(
                f"invalid {name} {text!r}: must be {bound}"
            )
        return value

    return parse


def parsePort(text: str) -> int:
    """Parse a server port: a number from 1 to 65535."""
    value = _number(int, "port", 1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: must be 1 to 65535")
    return int(value)


def buildParser() -> argparse.ArgumentParser:
    """The command line of C{python -m echotwist.bench}."""
    parser = argparse.ArgumentParser(
        prog="python -m echotwist.bench",
        # Abbreviations would slip past the parent's filtering of the
        # options it handles itself (--proc, --hl) into every child.
        allow_abbrev=False,
        description=(
            "Load an RFC 862 echo server and report verified echoes/s and"
            " latency percentiles.  'python -m echotwist.bench merge --help'"
            " for merging interval logs."
        ),
    )
    parser.add_argument("host", help="server name or address")
    parser.add_argument(
        "port", nargs="?", type=parsePort, default=ECHO_PORT, help="default 7"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="pingpong",
        help="pingpong (default): echo on open connections; connect:"
        " connect/echo/close per transaction; hold: open and hold connections",
    )
    parser.add_argument(
        "-c", "--connections", type=_number(int, "count", 1), default=50,
        help="connections (slots in connect mode; default 50)",
    )  # fmt: skip
    parser.add_argument(
        "-s", "--size", type=_number(int, "size", 1), default=512,
        help="bytes per message (default 512)",
    )  # fmt: skip
    parser.add_argument(
        "-d", "--duration", type=_number(float, "duration", 0, strict=True),
        default=5.0, help="seconds measured (hold: seconds held; default 5)",
    )  # fmt: skip
    parser.add_argument(
        "-w", "--warmup", type=_number(float, "warmup", 0), default=1.0,
        help="seconds of load before measuring (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "-P", "--pipeline", type=_number(int, "pipeline", 1), default=1,
        help="messages in flight per connection (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=_number(float, "rate", 0, strict=True), default=None,
        help="open loop: echoes/s in all, sent on schedule; latency is"
        " measured from when each message was due",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=_number(int, "count", 1), default=1,
        help="run K load processes and merge their histograms",
    )  # fmt: skip
    parser.add_argument(
        "--sources", type=_number(int, "count", 1), default=None,
        help="source addresses to spread over (127.0.0.1 up; loopback"
        " targets only; default: enough for the mode)",
    )  # fmt: skip
    # Internal: a --processes child in hold mode starts at this source
    # address (127.0.0.1 + N), so that the children's sources differ.
    parser.add_argument(
        "--first-source", type=_number(int, "count", 0), default=0,
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=_number(float, "timeout", 0, strict=True), default=5.0,
        help="connect timeout in seconds (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--interval", type=_number(float, "interval", 0, strict=True), default=1.0,
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--hlog", metavar="FILE", help="write an HDR interval log")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw the latency distribution"
    )
    # Internal: a --processes child prints JSON with its histograms.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def buildMergeParser() -> argparse.ArgumentParser:
    """The command line of C{python -m echotwist.bench merge}."""
    parser = argparse.ArgumentParser(
        prog="python -m echotwist.bench merge",
        allow_abbrev=False,
        description="Merge HDR interval logs of runs made at the same time.",
    )
    parser.add_argument("logs", nargs="+", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw the latency distribution"
    )
    return parser


def sourceAddresses(
    address: str, mode: str, connections: int, requested: int | None, first: int = 0
) -> tuple[str | None, ...]:
    """The local addresses to spread connections over.

    Only for IPv4 loopback targets, where every 127.0.0.0/8 address is
    local: hold mode needs one per L{PER_SOURCE} connections, connect
    mode spreads over L{CONNECT_SOURCES}, pingpong needs no binding.
    The addresses start at 127.0.0.1 + C{first}.  C{None} means "let the
    kernel choose".
    """
    try:
        loopback = ipaddress.IPv4Address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        if requested is not None:
            raise UsageError("--sources needs an IPv4 loopback target (127.x.x.x)")
        return (None,)
    if requested is None:
        if mode == "hold":
            requested = math.ceil(connections / PER_SOURCE)
        elif mode == "connect":
            requested = CONNECT_SOURCES
        else:
            return (None,)
    if first + requested > 1 << 16:
        raise UsageError("--sources: at most 65536")
    start = ipaddress.IPv4Address("127.0.0.1") + first
    return tuple(str(start + i) for i in range(requested))


def holdSources(shares: Sequence[int], requested: int | None) -> list[tuple[int, int]]:
    """Hold mode with C{--processes}: each child's first source and count.

    Ephemeral ports are allotted per source address, so children that
    shared one would together run out of its ~28,000 ports: each child
    gets sources of its own (one per L{PER_SOURCE} of its share, or its
    part of C{--sources}).  Only when C{--sources} names fewer addresses
    than there are children do children share them, one each in turn.
    """
    if requested is not None and requested < len(shares):
        return [(i % requested, 1) for i in range(len(shares))]
    if requested is None:
        counts = [math.ceil(share / PER_SOURCE) for share in shares]
    else:
        counts = splitEvenly(requested, len(shares))
    firsts = [sum(counts[:i]) for i in range(len(counts))]
    return list(zip(firsts, counts, strict=True))


def rejectUnknownOptions(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Name an unknown long option (C{--proc}) as the usage error.

    Without this, argparse takes the unknown option's value for the host
    and reports a confusing error about the port instead.
    """
    # argparse has no public list of its option strings.
    known = {name for action in parser._actions for name in action.option_strings}
    for argument in argv:
        if argument == "--":
            return
        name = argument.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            parser.error(f"unrecognized option {name}")


def checkOptions(args: argparse.Namespace) -> None:
    """Reject option combinations that make no sense."""
    if args.rate is not None and args.mode != "pingpong":
        raise UsageError("--rate applies to --mode pingpong only")
    if args.size > MAX_SIZE:
        raise UsageError(f"--size: at most {MAX_SIZE}")
    if args.processes > args.connections:
        raise UsageError("--processes: at most one process per connection")
    checkPlot(args.plot)
    if args.hlog is not None:
        checkDirectory(args.hlog, "--hlog")


def checkPlot(path: str | None) -> None:
    """Reject a C{--plot} file that is not a .png or cannot be written."""
    if path is None:
        return
    if not path.lower().endswith(".png"):
        raise UsageError("--plot: the file name must end in .png")
    checkDirectory(path, "--plot")


def checkDirectory(path: str, option: str) -> None:
    """Reject C{path} before the run if its directory cannot take a new file.

    A run can last long; finding out only when it is written would lose it.
    """
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise UsageError(f"{option}: no directory {directory!r}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: cannot write in {directory!r}")


def fileLimitError(connections: int, total: int) -> str | None:
    """Why the hard C{RLIMIT_NOFILE} is too low for C{connections} in one
    load process (of a run of C{total}), or C{None} if it is not.
    """
    needed = filesNeeded(connections)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or needed <= hard:
        return None
    fewest = math.ceil(total / max(1, hard - FILE_HEADROOM))
    each = "" if connections == total else " per process"
    return (
        f"{connections} connections{each} need {needed} open files; the hard"
        f" limit is {hard} (use --processes {fewest} or more)"
    )


def raiseFileLimit(connections: int) -> None:
    """Raise the soft open-file limit to what C{connections} need (up to the
    hard limit), or fail with one line when the hard limit is too low.
    """
    error = fileLimitError(connections, connections)
    if error is not None:
        fail(error)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The server's rule (echotwist.server.limits): up to what the connections
    # need, never above the hard limit, never lower (an unlimited soft
    # limit stays).
    target = fileLimitTarget(connections, soft, hard)
    if target is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def splitEvenly(total: int, parts: int) -> list[int]:
    """C{total} split into C{parts} whole shares differing by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def encodeHistogram(histogram: HdrHistogram) -> str:
    """A histogram as text (HdrHistogram's compressed, base64 form)."""
    encoded = histogram.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def decodeHistogram(text: str) -> HdrHistogram:
    """The inverse of L{encodeHistogram}."""
    base64.b64decode(text, validate=True)
    return HdrHistogram.decode(text)


def resultsFromChild(report: dict[str, Any]) -> Results:
    """Rebuild L{Results} from a C{--child} process's JSON report."""
    uncorrected = report.get("uncorrected_histogram")
    return Results(
        mode=report["mode"],
        connections=report["connections"],
        size=report["size"],
        seconds=report["seconds"],
        echoes=report["echoes"],
        histogram=decodeHistogram(report["histogram"]),
        errors=Counter(report["error_kinds"]),
        pipeline=report["pipeline"],
        uncorrected=decodeHistogram(uncorrected) if uncorrected else None,
        targetRate=report.get("target_rate"),
        answered=report.get("answered"),
        setupSeconds=report.get("setup_s"),
        finalSeconds=report.get("final_s"),
    )


class Progress:
    """A live one-line progress display (rich) for a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.live = Live("", console=Console(), auto_refresh=False, transient=True)
        self.live.start()

    def update(
        self,
        batch: HdrHistogram,
        uncorrected: HdrHistogram | None,
        start: float,
        end: float,
        run: LoadRun,
    ) -> None:
        """Show the last interval's rate and median, and the errors so far."""
        count = batch.get_total_count()
        rate = count / (end - start) if end > start else 0.0
        p50 = batch.get_value_at_percentile(50) if count else 0
        errors = sum(run.errors.values())
        from rich.text import Text

        # Plain Text: rich's number highlighting would only add noise.
        self.live.update(
            Text(f"{end:6.1f} s  {rate:,.0f} echoes/s  p50 {p50} us  errors {errors}"),
            refresh=True,
        )

    def stop(self) -> None:
        """Remove the line."""
        self.live.stop()


class Interrupt:
    """SIGINT and SIGTERM as a Deferred, instead of a silent reactor stop.

    Twisted's own handlers stop the reactor, and L{task.react} then exits 0
    with nothing printed.  These replace them once the reactor runs (it
    installs its own during startup), so the run can report what it
    measured, stop its children, and exit 128 + the signal number.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self.signalled: Deferred[int] = Deferred()

    def install(self) -> None:
        """Take over SIGINT and SIGTERM."""
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self.handle)

    def handle(self, number: int, frame: FrameType | None) -> None:
        """A signal handler: hand the signal to the reactor thread."""
        cast(IReactorThreads, self.reactor).callFromThread(self.fire, number)

    def fire(self, number: int) -> None:
        """Signal C{number} arrived (the first one counts)."""
        if not self.signalled.called:
            self.signalled.callback(number)


def watchParent(descriptor: int, interrupt: Interrupt) -> threading.Thread:
    """In a C{--child}: end as if by SIGTERM once the parent's pipe closes.

    The parent keeps the child's standard input open; it closes when the
    parent exits, however it exits (even by SIGKILL), so a child never
    outlives it.  A blocking read in a daemon thread is the plain way to
    see that end without taking standard output away from C{print}; it
    reads the descriptor itself, because a daemon thread blocked inside
    C{sys.stdin}'s buffer lock aborts the interpreter at exit.
    """
    reactor = cast(IReactorThreads, interrupt.reactor)

    def read() -> None:
        try:
            while os.read(descriptor, 4096):
                pass
        except OSError:
            pass
        reactor.callFromThread(interrupt.fire, signal.SIGTERM)

    watcher = threading.Thread(target=read, name="watch-parent", daemon=True)
    watcher.start()
    return watcher


class Measured:
    """What the run has measured so far, for a report after an interrupt."""

    def __init__(self) -> None:
        self.run: LoadRun | None = None
        self.seconds = 0.0
        self.children: list[ChildProcess] = []

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


class ChildProcess(ProcessProtocol):
    """A C{--child} load process: its output, and a way to stop it."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[tuple[bytes, bytes]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Collect the child's JSON report."""
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        """Collect the child's error lines."""
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        """The child is gone: hand over what it wrote."""
        self.ended.callback((b"".join(self.out), b"".join(self.err)))

    def stop(self, number: int) -> None:
        """Pass signal C{number} on to the child, if it still runs."""
        if self.transport is not None and not self.ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess(number)


def fail(message: str) -> NoReturn:
    """Print C{message} as one error line on standard error and exit 1."""
    fail_(message, 1)


def fail_(message: str, code: int) -> NoReturn:
    """Print C{message} as one error line on standard error and exit C{code}."""
    sys.stderr.write(f"echotwist.bench: error: {message}\n")
    raise SystemExit(code)


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


async def runOnce(
    reactor: IReactorTime,
    args: argparse.Namespace,
    address: str,
    measured: Measured | None = None,
) -> Results:
    """One load process: run the mode, with log and progress as asked."""
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
    )
    observers: list[IntervalObserver] = []
    if measured is not None:
        observers.append(measured.observe)
    logFile = None
    if args.hlog is not None:
        try:
            logFile = open(args.hlog, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            fail(f"cannot write {args.hlog}: {e.strerror}")
        log = IntervalLogWriter(logFile, time.time())
        observers.append(
            lambda batch, _u, start, end, _r: log.interval(batch, start, end)
        )
    progress = None
    if not args.json and not args.child and sys.stdout.isatty():
        try:
            progress = Progress()
        except ModuleNotFoundError:
            # rich is missing: the progress line is a nicety, the run is not.
            progress = None
        else:
            observers.append(progress.update)

    def observe(
        batch: HdrHistogram,
        uncorrected: HdrHistogram | None,
        start: float,
        end: float,
        run: LoadRun,
    ) -> None:
        for observer in observers:
            observer(batch, uncorrected, start, end, run)

    runner = {"pingpong": runPingpong, "connect": runConnect, "hold": runHold}[
        args.mode
    ]
    try:
        results = await runner(reactor, time.perf_counter, config, address, observe)
    except SetupError as e:
        fail(str(e))
    finally:
        if progress is not None:
            progress.stop()
    if logFile is not None:
        log.finish(results)
        logFile.close()
    return results


async def runProcesses(
    reactor: IReactorTime,
    args: argparse.Namespace,
    argv: Sequence[str],
    measured: Measured | None = None,
    address: str | None = None,
) -> Results:
    """Run C{--processes} children, each with its share, and merge them.

    In hold mode against a loopback C{address}, each child binds to
    source addresses of its own (L{holdSources}).
    """
    shares = splitEvenly(args.connections, args.processes)
    error = fileLimitError(max(shares), args.connections)
    if error is not None:
        fail(error)
    spread = (
        args.mode == "hold"
        and address is not None
        and sourceAddresses(address, "hold", 1, None) != (None,)
    )
    base = _childArguments(argv, ("--sources",) if spread else ())
    sources = holdSources(shares, args.sources)
    children = measured.children if measured is not None else []
    for share, (first, count) in zip(shares, sources, strict=True):
        childArgv = [*base, "--child", "--connections", str(share)]
        if spread:
            childArgv += ["--first-source", str(first), "--sources", str(count)]
        if args.rate is not None:
            childArgv += ["--rate", repr(args.rate * share / args.connections)]
        child = ChildProcess()
        # Standard input stays an open pipe: the child ends when it closes.
        cast(IReactorProcess, reactor).spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-m", "echotwist.bench", *childArgv],
            env=dict(os.environ),
        )
        children.append(child)
    merged: Results | None = None
    for child in children:
        out, err = await child.ended
        try:
            report = json.loads(out.decode("utf-8"))
            results = resultsFromChild(report)
        except (ValueError, KeyError):
            lines = err.decode("utf-8", "replace").strip().splitlines()
            fail(lines[-1] if lines else "a load process failed")
        if merged is None:
            merged = results
        else:
            merged.add(results)
    assert merged is not None
    merged.processes, merged.runs = len(shares), 1
    return merged


def _childArguments(argv: Sequence[str], drop: Sequence[str] = ()) -> list[str]:
    """C{argv} without the options the parent handles itself (and C{drop})."""
    dropValue = {"--processes", "--connections", "-c", "--rate", "--hlog", "--plot"}
    dropValue.update(drop)
    dropFlag = {"--json"}
    result: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in dropValue:
            skip = "=" not in argument
            continue
        if name in dropFlag:
            continue
        result.append(argument)
    return result


def emit(results: Results, args: argparse.Namespace) -> None:
    """Print the report (text or JSON), then plot it if asked; exit 1 on errors.

    The report comes first so that a plot that cannot be drawn or written
    does not lose the run.
    """
    writeReport(results, args)
    if args.plot is not None:
        from echotwist.bench.plot import PlotUnavailable, plotLatency

        try:
            plotLatency(results, args.plot)
        except PlotUnavailable as e:
            fail(str(e))
        except OSError as e:
            fail(f"cannot write {args.plot}: {e.strerror or e}")
    errors = sum(results.errors.values())
    if errors and not getattr(args, "child", False):
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(results.errors.items()))
        fail(f"{errors} errors ({kinds})")


def writeReport(results: Results, args: argparse.Namespace) -> None:
    """Print the report: text, JSON, or a child's JSON with histograms."""
    if getattr(args, "child", False):
        report = results.toJSON()
        report["histogram"] = encodeHistogram(results.histogram)
        if results.uncorrected is not None:
            report["uncorrected_histogram"] = encodeHistogram(results.uncorrected)
        sys.stdout.write(json.dumps(report) + "\n")
    elif args.json:
        sys.stdout.write(json.dumps(results.toJSON(), sort_keys=False) + "\n")
    else:
        sys.stdout.write("\n".join(formatReport(results)) + "\n")
    sys.stdout.flush()


async def main(
    reactor: IReactorTime, argv: Sequence[str], interrupt: Interrupt | None = None
) -> None:
    """Run the bench (or C{merge}) with C{argv} (without the program name).

    C{interrupt} defaults to one that takes over SIGINT and SIGTERM once
    the reactor runs; tests pass their own and fire it.
    """
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
    work = Deferred.fromCoroutine(bench(reactor, parser, args, argv, measured))
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
    results.machine = machineContext(type(reactor).__name__)
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
) -> None:
    """Check, resolve, run and report: the bench proper."""
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
        logFile = _openLog(args.hlog) if args.hlog is not None else None
        results = await runProcesses(reactor, args, argv, measured, address)
        if logFile is not None:
            _writeMergedLog(logFile, results)
    else:
        raiseFileLimit(args.connections)
        results = await runOnce(reactor, args, address, measured)
    results.machine = machineContext(type(reactor).__name__)
    emit(results, args)


def _openLog(path: str) -> TextIO:
    """Open C{path} for an interval log, or fail with one line."""
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror}")


def _writeMergedLog(logFile: TextIO, results: Results) -> None:
    """With --processes, log the merged run as one interval."""
    try:
        with logFile:
            log = IntervalLogWriter(logFile, time.time() - results.seconds)
            log.interval(results.histogram, 0, results.seconds)
            log.finish(results)
    except OSError as e:
        fail(f"cannot write {logFile.name}: {e.strerror}")


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: start the reactor with L{task.react}."""
    arguments = sys.argv[1:] if argv is None else argv
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
    raise SystemExit(0)  # task.react always exits; this satisfies NoReturn.
