"""HDR interval logs: writing them during a run, merging them afterwards.

The log is HdrHistogram's interval log format (version 1.2), which
HdrHistogram's own tools (HistogramLogProcessor, HdrHistogramVisualizer)
read: one compressed histogram of latencies in microseconds per interval,
timestamps in seconds from the run's start.  echotwist adds one comment
line at the end, C{#[echotwist {...}]}, with what a histogram cannot hold
(errors by kind, the measured window, size, mode), so that
L{mergeLogs} can add runs up exactly.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader, HistogramLogWriter

from echotwist.bench.results import Interval, Results, newHistogram

_PREFIX = "#[echotwist "


class BadLog(Exception):
    """A file is not an interval log echotwist can merge; says which and why."""


class IntervalLogWriter:
    """Write a run's intervals to C{output} as they are measured."""

    def __init__(self, output: TextIO, startedAt: float) -> None:
        self.output = output
        self.writer = HistogramLogWriter(output)
        self.writer.output_log_format_version()
        when = datetime.datetime.fromtimestamp(startedAt, datetime.UTC)
        # HistogramLogWriter.output_start_time formats its date with a
        # method datetime does not have, so the line is written here.
        output.write(
            f"#[StartTime: {startedAt:.3f} (seconds since epoch),"
            f" {when.isoformat(' ')}]\n"
        )
        self.writer.output_legend()

    def interval(self, histogram: HdrHistogram, start: float, end: float) -> None:
        """Log one interval, C{start} to C{end} seconds from the run's start.

        The line is flushed at once, so the log can be followed during the
        run (and a run that is killed keeps the intervals it measured).
        """
        # The writer treats a start of 0 as "unset"; a microsecond past
        # zero keeps the first interval's stamp explicit.
        self.writer.output_interval_histogram(
            histogram, max(start, 1e-6), max(end, 2e-6), max_value_unit_ratio=1000.0
        )
        self.output.flush()

    def finish(self, results: Results) -> None:
        """Write the totals line echotwist's merge reads, and flush."""
        summary = {
            "mode": results.mode,
            "size": results.size,
            "connections": results.connections,
            "seconds": results.seconds,
            "echoes": results.echoes,
            "errors": dict(results.errors),
        }
        self.output.write(_PREFIX + json.dumps(summary, sort_keys=True) + "]\n")
        self.output.flush()


def _intervals(path: str) -> Iterator[tuple[float, float, HdrHistogram]]:
    """Each interval histogram of the log at C{path}, with its start and end.

    Times are seconds from the first interval's start.

    @raise BadLog: the file cannot be read or is no interval log.
    """
    try:
        reader = HistogramLogReader(path, newHistogram())
    except OSError as e:
        raise BadLog(f"cannot read {path}: {e.strerror}") from None
    first: float | None = None
    try:
        while True:
            try:
                histogram = reader.get_next_interval_histogram()
            except Exception as e:
                raise BadLog(f"{path} is not a readable interval log ({e})") from None
            if histogram is None:
                return
            start = histogram.get_start_time_stamp() / 1000
            end = histogram.get_end_time_stamp() / 1000
            if first is None:
                first = start
            yield start - first, end - first, histogram
    finally:
        reader.close()


def readLog(path: str) -> Results:
    """Read one interval log into L{Results}: all intervals added up."""
    return mergeLogs([path])


def _resultsOf(path: str, total: HdrHistogram, intervals: int) -> Results:
    """The totals of the log at C{path}, from its echotwist line if it has one."""
    summary = _summary(path)
    if summary is None and intervals == 0:
        raise BadLog(f"{path} holds no interval histograms")
    summary = summary or {}
    echoes = int(summary.get("echoes", total.get_total_count()))
    return Results(
        mode=str(summary.get("mode", "pingpong")),
        connections=int(summary.get("connections", 0)),
        size=int(summary.get("size", 0)),
        seconds=float(summary.get("seconds", 0.0)),
        echoes=echoes,
        histogram=total,
        errors=Counter({k: int(v) for k, v in summary.get("errors", {}).items()}),
    )


def _summary(path: str) -> dict[str, Any] | None:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(_PREFIX):
                try:
                    value = json.loads(line[len(_PREFIX) :].rstrip().rstrip("]"))
                except ValueError:
                    raise BadLog(f"{path}: unreadable echotwist line") from None
                if isinstance(value, dict):
                    return value
    return None


def mergeLogs(paths: Iterable[str]) -> Results:
    """Merge the logs of runs made at the same time (several machines).

    Echoes and errors add exactly, histograms merge (percentiles come from
    the merged histogram); the window is the longest, so rates add.  The
    logs are read side by side, interval by interval, so that the merged
    run's timeline (for the latency-over-time plot) holds each interval's
    percentiles over all the logs, and at most one interval histogram per
    log is held at a time.
    """
    paths = list(paths)
    if not paths:
        raise BadLog("no logs to merge")
    readers = [_intervals(path) for path in paths]
    totals = [newHistogram() for _ in paths]
    counts = [0] * len(paths)
    timeline: list[Interval] = []
    for step in itertools.zip_longest(*readers):
        merged = newHistogram()
        start, end = math.inf, 0.0
        for i, interval in enumerate(step):
            if interval is None:
                continue
            first, last, histogram = interval
            totals[i].add(histogram)
            counts[i] += 1
            merged.add(histogram)
            start, end = min(start, first), max(end, last)
        timeline.append(Interval.of(merged, start, end))
    results = _resultsOf(paths[0], totals[0], counts[0])
    for path, total, count in zip(paths[1:], totals[1:], counts[1:], strict=True):
        results.add(_resultsOf(path, total, count))
    results.timeline = timeline
    return results
