"""Latency histograms, the run's results and how they are reported.

Plain code, no I/O.  Latencies are whole microseconds.  On the hot path
a connection only appends a latency to a list; L{LatencyRecorder.flush}
moves the batch into an HDR histogram (C{hdrhistogram}, 3 significant
digits) off the hot path, counting equal values first so that the
pure-Python C{record_value} runs once per distinct value, not per echo.
"""

from __future__ import annotations

import base64
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# One hour in microseconds: no echo latency worth reporting is longer.
HIGHEST_US = 3_600_000_000
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


def newHistogram() -> HdrHistogram:
    """An empty histogram for latencies of 1 us to an hour, 3 digits."""
    return HdrHistogram(1, HIGHEST_US, 3)


class LatencyRecorder:
    """Collect latencies cheaply now, into a histogram later."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.histogram = newHistogram()

    def flush(self) -> HdrHistogram:
        """Move the collected samples into the histogram; return them as one.

        The returned histogram holds just this batch (an interval of an
        interval log); the recorder's own histogram holds every batch.
        """
        batch = newHistogram()
        for value, count in Counter(self.samples).items():
            batch.record_value(min(max(value, 0), HIGHEST_US), count)
        # Cleared in place: connections hold the list's bound append method.
        self.samples.clear()
        self.histogram.add(batch)
        return batch


def encodeHistogram(histogram: HdrHistogram) -> str:
    """A histogram as text (HdrHistogram's compressed, base64 form)."""
    encoded = histogram.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def decodeHistogram(text: str) -> HdrHistogram:
    """The inverse of L{encodeHistogram}.

    @raise ValueError: C{text} is not base64 (HdrHistogram's own decoder
        would fail less plainly).
    """
    base64.b64decode(text, validate=True)
    return HdrHistogram.decode(text)


def machineContext(reactorName: str) -> dict[str, Any]:
    """What the numbers were measured on: CPUs, kernel, Python, reactor."""
    return {
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "reactor": reactorName,
    }


def percentiles(histogram: HdrHistogram) -> dict[str, int]:
    """p50, p90, p99, p99.9 and max of C{histogram} in us (zeros when empty)."""
    if histogram.get_total_count() == 0:
        return {f"{name}_us": 0 for name, _ in PERCENTILES} | {"max_us": 0}
    values = {
        f"{name}_us": histogram.get_value_at_percentile(p) for name, p in PERCENTILES
    }
    values["max_us"] = histogram.get_max_value()
    return values


@dataclass
class Results:
    """What one run (or several merged) measured."""

    mode: str
    connections: int
    size: int
    seconds: float
    echoes: int
    histogram: HdrHistogram
    errors: Counter[str] = field(default_factory=Counter)
    pipeline: int = 1
    uncorrected: HdrHistogram | None = None
    targetRate: float | None = None
    # Load processes of one run (--processes), and runs merged (merge).
    processes: int = 1
    runs: int = 1
    machine: dict[str, Any] = field(default_factory=dict)
    # Hold mode: connections that answered the final echo after the hold,
    # the seconds it took to set them all up, and to check them all.
    answered: int | None = None
    setupSeconds: float | None = None
    finalSeconds: float | None = None

    @property
    def echoesPerSecond(self) -> float:
        """Verified echoes per second of the measured window."""
        return self.echoes / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytesPerSecond(self) -> float:
        """Payload echoed per second, one way, in MB (10^6 bytes)."""
        return self.echoesPerSecond * self.size / 1e6

    def add(self, other: Results) -> None:
        """Add a concurrent run's results: counts add, histograms merge.

        The window is the longer of the two, so rates add up too.
        """
        self.echoes += other.echoes
        self.connections += other.connections
        self.errors.update(other.errors)
        self.histogram.add(other.histogram)
        if self.uncorrected is not None and other.uncorrected is not None:
            self.uncorrected.add(other.uncorrected)
        if self.targetRate is not None and other.targetRate is not None:
            self.targetRate += other.targetRate
        self.seconds = max(self.seconds, other.seconds)
        self.runs += other.runs
        if self.answered is not None and other.answered is not None:
            self.answered += other.answered
        if self.setupSeconds is not None and other.setupSeconds is not None:
            # Concurrent runs: the set-up ends when the slowest one's does.
            self.setupSeconds = max(self.setupSeconds, other.setupSeconds)
        if self.finalSeconds is not None and other.finalSeconds is not None:
            self.finalSeconds = max(self.finalSeconds, other.finalSeconds)

    def toJSON(self) -> dict[str, Any]:
        """The results as one JSON-ready object."""
        report: dict[str, Any] = {
            "mode": self.mode,
            "connections": self.connections,
            "size": self.size,
            "pipeline": self.pipeline,
            "processes": self.processes,
            **({"runs": self.runs} if self.runs > 1 else {}),
            "seconds": round(self.seconds, 6),
            "echoes": self.echoes,
            "echoes_per_s": round(self.echoesPerSecond, 1),
            "MB_per_s": round(self.megabytesPerSecond, 3),
            **percentiles(self.histogram),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(sorted(self.errors.items())),
        }
        if self.answered is not None:
            report["answered"] = self.answered
        if self.setupSeconds is not None:
            report["setup_s"] = round(self.setupSeconds, 6)
        if self.finalSeconds is not None:
            report["final_s"] = round(self.finalSeconds, 6)
        if self.targetRate is not None:
            report["target_rate"] = self.targetRate
            report["achieved_rate"] = round(self.echoesPerSecond, 1)
        if self.uncorrected is not None:
            report["uncorrected"] = percentiles(self.uncorrected)
        report["machine"] = self.machine
        return report


def formatReport(results: Results) -> list[str]:
    """The readable summary, one string per line."""
    what = {
        "pingpong": "echoes",
        "connect": "connect/echo/close transactions",
        "hold": "connections held",
    }.get(results.mode, "echoes")
    lines = [
        f"{results.mode}: {results.connections} connections,"
        f" {results.size} bytes, pipeline {results.pipeline},"
        f" {results.seconds:.2f} s measured"
        + (f", {results.processes} processes" if results.processes > 1 else "")
        + (f", merged from {results.runs} runs" if results.runs > 1 else ""),
    ]
    if results.mode == "hold":
        # Rates mean nothing for connections that are only held.
        held = f"{results.echoes} {what} for {results.seconds:.2f} s"
        if results.setupSeconds is not None:
            held += f" (set up in {results.setupSeconds:.2f} s)"
        lines.append(held)
        if results.answered is not None:
            took = (
                f" (checked in {results.finalSeconds:.2f} s)"
                if results.finalSeconds is not None
                else ""
            )
            lines.append(
                f"{results.answered} answered a final echo after the hold,"
                f" {results.echoes - results.answered} did not{took}"
            )
    else:
        lines.append(
            f"{results.echoes} {what}: {results.echoesPerSecond:,.0f}/s,"
            f" {results.megabytesPerSecond:.2f} MB/s"
        )
    if results.targetRate is not None:
        lines.append(
            f"rate: {results.echoesPerSecond:,.0f}/s achieved"
            f" of {results.targetRate:,.0f}/s target"
        )
    if results.uncorrected is not None:
        label = "latency (from intended send)"
    elif results.mode == "hold":
        label = "set-up latency (connect to verified echo)"
    else:
        label = "latency"
    lines.append(f"{label}: {formatPercentiles(percentiles(results.histogram))}")
    if results.uncorrected is not None:
        lines.append(
            "latency (from actual send): "
            + formatPercentiles(percentiles(results.uncorrected))
        )
    total = sum(results.errors.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(results.errors.items()))
    lines.append(f"errors: {total}" + (f" ({kinds})" if kinds else ""))
    machine = results.machine
    if machine:
        lines.append(
            f"machine: {machine.get('cpus')} CPUs, {machine.get('kernel')},"
            f" {machine.get('python')}, {machine.get('reactor')}"
        )
    return lines


def formatPercentiles(values: dict[str, int]) -> str:
    """C{p50 12 us  p90 ...} from L{percentiles}' dictionary."""
    names = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9")]
    parts = [f"{label} {values[f'{name}_us']}" for name, label in names]
    parts.append(f"max {values['max_us']}")
    return "  ".join(parts) + " us"


def childReport(results: Results) -> dict[str, Any]:
    """A C{--child} load process's JSON report: L{Results.toJSON} and histograms.

    The parent adds the children's histograms up (L{resultsFromChild}),
    which percentiles alone would not allow.
    """
    report = results.toJSON()
    report["histogram"] = encodeHistogram(results.histogram)
    if results.uncorrected is not None:
        report["uncorrected_histogram"] = encodeHistogram(results.uncorrected)
    return report


def resultsFromChild(report: dict[str, Any]) -> Results:
    """Rebuild L{Results} from a C{--child} process's JSON report.

    @raise KeyError: a field is missing.
    @raise ValueError: a histogram is not encoded as L{childReport} does.
    """
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
