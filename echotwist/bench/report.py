"""What the bench writes: the report, error lines, interval logs, progress.

The report goes to standard output (text, JSON, or a C{--child}'s JSON
with histograms); every error is one line on standard error and an exit
status (L{fail}); C{--hlog} files are opened before the run, so that a
bad path does not cost it; on a terminal a live progress line shows each
interval.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import NoReturn, TextIO

from hdrh.histogram import HdrHistogram

from echotwist.bench.hlog import IntervalLogWriter
from echotwist.bench.load import LoadRun
from echotwist.bench.results import (
    Interval,
    Results,
    childReport,
    flatten,
    formatDistribution,
    formatReport,
)


def fail(message: str) -> NoReturn:
    """Print C{message} as one error line on standard error and exit 1."""
    fail_(message, 1)


def fail_(message: str, code: int) -> NoReturn:
    """Print C{message} as one error line on standard error and exit C{code}."""
    sys.stderr.write(f"echotwist.bench: error: {message}\n")
    raise SystemExit(code)


def emit(results: Results, args: argparse.Namespace) -> None:
    """Print the report (text or JSON), then plot it if asked; exit 1 on errors.

    The report comes first so that a plot that cannot be drawn or written
    does not lose the run.
    """
    writeReport(results, args)
    if args.plot is not None:
        # matplotlib is optional and slow to import: only when plotting.
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
    """Print the report: text, JSON, CSV, or a child's JSON with histograms.

    With C{--latency} the text report ends with the percentile spectrum.
    """
    if getattr(args, "child", False):
        sys.stdout.write(json.dumps(childReport(results)) + "\n")
    elif args.json:
        sys.stdout.write(json.dumps(results.toJSON(), sort_keys=False) + "\n")
    elif args.csv:
        row = {
            key: "" if value is None else value
            for key, value in flatten(results.toJSON()).items()
            if not isinstance(value, list)
        }
        writer = csv.DictWriter(sys.stdout, list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    else:
        lines = formatReport(results)
        if args.latency:
            lines += formatDistribution(results)
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def intervalOf(batch: HdrHistogram, start: float, end: float, run: LoadRun) -> Interval:
    """The interval's summary: the run's own, else worked out from C{batch}."""
    if run.interval is not None and run.interval.end == end:
        return run.interval
    return Interval.of(batch, start, end)


class IntervalLines:
    """One line per interval on standard output, kept in the scrollback.

    For output that is not a terminal (a pipe, a file, CI's log), where a
    live line that is redrawn and then erased would show nothing.
    """

    def update(
        self,
        batch: HdrHistogram,
        uncorrected: HdrHistogram | None,
        start: float,
        end: float,
        run: LoadRun,
    ) -> None:
        """Print the interval's rate and latencies and the errors so far."""
        line = intervalOf(batch, start, end, run).line(sum(run.errors.values()))
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def openLog(path: str) -> TextIO:
    """Open C{path} for an interval log, or fail with one line."""
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror}")


def writeMergedLog(logFile: TextIO, results: Results) -> None:
    """With C{--processes}, log the merged run as one interval; close C{logFile}."""
    try:
        with logFile:
            log = IntervalLogWriter(logFile, time.time() - results.seconds)
            log.interval(results.histogram, 0, results.seconds)
            log.finish(results)
    except OSError as e:
        fail(f"cannot write {logFile.name}: {e.strerror}")


class Progress:
    """A live one-line progress display (rich) for a terminal.

    @raise ModuleNotFoundError: rich is not installed.
    """

    def __init__(self) -> None:
        # rich is optional: imported only when a terminal shows progress.
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
        line = intervalOf(batch, start, end, run).line(sum(run.errors.values()))
        from rich.text import Text

        # Plain Text: rich's number highlighting would only add noise.
        self.live.update(Text(line), refresh=True)

    def stop(self) -> None:
        """Remove the line."""
        self.live.stop()
