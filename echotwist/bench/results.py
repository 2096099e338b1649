"""Latency histograms, the run's results and how they are reported.

Plain code, no I/O.  Latencies are whole microseconds.  On the hot path
a connection only appends a latency to an array; L{LatencyRecorder.flush}
moves the batch into an HDR histogram (C{hdrhistogram}, 3 significant
digits) off the hot path, counting equal values first so that the
pure-Python C{record_value} runs once per distinct value, not per echo.
"""

from __future__ import annotations

import base64
import datetime
import io
import math
import os
import platform
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from echotwist.bench.cpustat import STEAL_WARNING_PERCENT
from echotwist.endpoints import formatHostPort

# One hour in microseconds: no echo latency worth reporting is longer.
HIGHEST_US = 3_600_000_000
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
    ("p9999", 99.99),
)


# The histogram's sub-buckets: 3 significant digits need 2,048.
_SUB_BUCKET_BITS = 11


def quantize(value: int) -> int:
    """C{value} with the bits the histogram cannot tell apart cleared.

    With 3 significant digits the histogram holds values below 2,048
    exactly and larger ones in steps of 2, 4, 8...: every value of one
    step lands in the same bucket.  Counting quantized values first means
    one C{record_value} per bucket instead of one per distinct value
    (tens of thousands a second when latencies spread over milliseconds).
    """
    shift = value.bit_length() - _SUB_BUCKET_BITS
    return value if shift <= 0 else (value >> shift) << shift


def highest(value: int) -> int:
    """The largest value in the histogram bucket of C{value}, as it reports it."""
    shift = value.bit_length() - _SUB_BUCKET_BITS
    return value if shift <= 0 else quantize(value) + (1 << shift) - 1


def newHistogram() -> HdrHistogram:
    """An empty histogram for latencies of 1 us to an hour, 3 digits."""
    return HdrHistogram(1, HIGHEST_US, 3)


def newSamples() -> array[int]:
    """An empty array of latencies (signed 64-bit microseconds).

    An array, not a list: a list of a second's samples (50,000 and more)
    is an object the garbage collector walks item by item in each
    collection it is young for, which held the load generator up for 1 to
    1.6 ms once a second at 50,000 sends/s; an array's items are plain
    numbers, not references, which a collection does not walk (those
    pauses became 0.1 to 0.35 ms).
    """
    return array("q")


class LatencyRecorder:
    """Collect latencies cheaply now, into a histogram later."""

    def __init__(self) -> None:
        self.samples = newSamples()
        self.histogram = newHistogram()

    def take(self) -> array[int]:
        """The samples collected so far, handed over; collecting starts anew.

        The array itself is handed over (a copy of a second's samples at
        50,000/s held the load up for a few hundred microseconds), so
        samples are always added through C{self.samples}, never through an
        array or C{append} kept from before.
        """
        samples, self.samples = self.samples, newSamples()
        return samples

    def clear(self) -> None:
        """Drop the samples collected so far (the warm-up's)."""
        del self.samples[:]

    def flush(self) -> HdrHistogram:
        """Move the collected samples into the histogram; return them as one.

        The returned histogram holds just this batch (an interval of an
        interval log); the recorder's own histogram holds every batch.
        """
        batch = newHistogram()
        for value, count in Counter(self.samples).items():
            batch.record_value(min(max(value, 0), HIGHEST_US), count)
        self.clear()
        self.histogram.add(batch)
        return batch


class SendDelays:
    """Open loop: how late each send left, and how late the schedule reached it.

    A send falls due at its intended time; the schedule reaches it then,
    or later if the generator was busy, and makes it at once, unless its
    connection has C{pipeline} messages in flight already (connect mode:
    all C{connections} are in progress): then the send is held until
    there is room, a wait that is the server's latency rather than the
    schedule's.  The send delay (actual minus intended send) holds both
    waits; the schedule delay (reached minus intended) only the
    generator's own lateness.  Each send that left while measuring is
    recorded once, when it leaves: one made when reached in C{made} (its
    two delays are one), a held one in C{held} (when it left) and in
    C{reached} (when the schedule reached it), so that the two delays are
    of the same sends.
    """

    def __init__(self) -> None:
        self.made = LatencyRecorder()
        self.held = LatencyRecorder()
        self.reached = LatencyRecorder()

    def record(self, intended: float, reached: float | None, sent: float) -> None:
        """One send that left at C{sent}; C{reached}: it was held from then."""
        if reached is None:
            self.made.samples.append(int((sent - intended) * 1e6))
        else:
            self.held.samples.append(int((sent - intended) * 1e6))
            self.reached.samples.append(int((reached - intended) * 1e6))

    def recorders(self) -> tuple[LatencyRecorder, ...]:
        """The three recorders, to clear and to flush."""
        return (self.made, self.held, self.reached)

    def sendDelays(self) -> HdrHistogram:
        """Every send's delay, actual minus intended (flushed samples only)."""
        return combined(self.made.histogram, self.held.histogram)

    def scheduleDelays(self) -> HdrHistogram:
        """Every send's schedule delay, reached minus intended (flushed only)."""
        return combined(self.made.histogram, self.reached.histogram)

    def heldCount(self) -> int:
        """How many sends waited for room before they left (flushed only)."""
        return int(self.reached.histogram.get_total_count())


def combined(*histograms: HdrHistogram) -> HdrHistogram:
    """A new histogram holding the values of all of C{histograms}."""
    total = newHistogram()
    for histogram in histograms:
        total.add(histogram)
    return total


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


def machineContext(
    reactorName: str, stealPercent: float | None = None
) -> dict[str, Any]:
    """What the numbers were measured on: CPUs, kernel, Python, reactor, and
    the host's steal during the run where it was read
    (L{echotwist.bench.cpustat}).
    """
    context: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "reactor": reactorName,
    }
    if stealPercent is not None:
        context["steal_percent"] = round(stealPercent, 1)
    return context


def percentiles(histogram: HdrHistogram) -> dict[str, float]:
    """p50 to p99.99, max, mean and standard deviation of C{histogram} in us.

    Zeros when it is empty.  The percentiles and max are whole
    microseconds (the histogram's values); the mean and standard
    deviation are rounded to 0.1 us.
    """
    if histogram.get_total_count() == 0:
        empty: dict[str, float] = {f"{name}_us": 0 for name, _ in PERCENTILES}
        return empty | {"max_us": 0, "mean_us": 0.0, "stdev_us": 0.0}
    values: dict[str, float] = {
        f"{name}_us": histogram.get_value_at_percentile(p) for name, p in PERCENTILES
    }
    values["max_us"] = histogram.get_max_value()
    values["mean_us"] = round(histogram.get_mean_value(), 1)
    values["stdev_us"] = round(histogram.get_stddev(), 1)
    return values


def distribution(histogram: HdrHistogram) -> str:
    """wrk2's detailed percentile spectrum of C{histogram}, values in us.

    HdrHistogram's own C{output_percentile_distribution} (5 ticks per
    half distance), as wrk2 prints with C{--latency}; its standard
    deviation is unscaled, so the values are left in microseconds to keep
    every line in one unit.
    """
    out = io.BytesIO()
    histogram.output_percentile_distribution(out, 1.0)
    return out.getvalue().decode("ascii")


@dataclass(frozen=True)
class Interval:
    """One interval of a run: when (seconds from the start), how many, how fast."""

    start: float
    end: float
    count: int
    p50: int
    p99: int
    max: int

    @classmethod
    def of(cls, histogram: HdrHistogram, start: float, end: float) -> Interval:
        """The summary of C{histogram}, measured from C{start} to C{end}."""
        count = histogram.get_total_count()
        if not count:
            return cls(start, end, 0, 0, 0, 0)
        return cls(
            start,
            end,
            count,
            histogram.get_value_at_percentile(50),
            histogram.get_value_at_percentile(99),
            histogram.get_max_value(),
        )

    @classmethod
    def ofCounts(cls, counts: dict[int, int], start: float, end: float) -> Interval:
        """The summary of the values C{counts} holds (value -> how many).

        The same percentiles as L{of} gives for a histogram of the same
        (quantized) values, found by one walk over the sorted values
        instead of the histogram's pure-Python iteration over its buckets.
        """
        total = sum(counts.values())
        if not total:
            return cls(start, end, 0, 0, 0, 0)
        values = sorted(counts.items())
        found: list[int] = []
        wanted = [math.ceil(total * p / 100) for p in (50, 99)]
        seen = 0
        for value, count in values:
            seen += count
            while wanted and seen >= wanted[0]:
                found.append(value)
                wanted.pop(0)
            if not wanted:
                break
        return cls(
            start,
            end,
            total,
            highest(found[0]),
            highest(found[1]),
            highest(values[-1][0]),
        )

    def line(self, errors: int) -> str:
        """The interval as one line, as the progress display shows it."""
        length = self.end - self.start
        rate = self.count / length if length > 0 else 0.0
        return (
            f"{self.end:6.1f} s  {rate:,.0f} echoes/s  p50 {self.p50}"
            f"  p99 {self.p99}  max {self.max} us  errors {errors}"
        )


def isoTime(epoch: float) -> str:
    """C{epoch} (seconds) as an ISO 8601 UTC time to the millisecond."""
    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    # Open loop: how late each send left its schedule (actual minus
    # intended), how late the schedule reached it (see L{SendDelays}), and
    # how many sends waited for room in their connection's pipeline.
    delays: HdrHistogram | None = None
    scheduleDelays: HdrHistogram | None = None
    held: int | None = None
    # What was measured and how: the target (host, port, address), the
    # options, and when the run started (seconds since the epoch).
    target: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    startedAt: float | None = None
    # Each interval's summary, for the latency-over-time plot.
    timeline: list[Interval] = field(default_factory=list)
    # UDP: datagrams lost (no echo in time) and echoes that came after that.
    lost: int | None = None
    late: int | None = None

    @property
    def echoesPerSecond(self) -> float:
        """Verified echoes per second of the measured window."""
        return self.echoes / self.seconds if self.seconds > 0 else 0.0

    @property
    def lossPercent(self) -> float:
        """UDP: lost datagrams as a percentage of those echoed or lost."""
        lost = self.lost or 0
        total = self.echoes + lost
        return 100.0 * lost / total if total else 0.0

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
        if self.delays is not None and other.delays is not None:
            self.delays.add(other.delays)
        if self.scheduleDelays is not None and other.scheduleDelays is not None:
            self.scheduleDelays.add(other.scheduleDelays)
        if self.held is not None and other.held is not None:
            self.held += other.held
        if self.targetRate is not None and other.targetRate is not None:
            self.targetRate += other.targetRate
        self.seconds = max(self.seconds, other.seconds)
        self.runs += other.runs
        if self.answered is not None and other.answered is not None:
            self.answered += other.answered
        if self.lost is not None and other.lost is not None:
            self.lost += other.lost
        if self.late is not None and other.late is not None:
            self.late += other.late
        if self.setupSeconds is not None and other.setupSeconds is not None:
            # Concurrent runs: the set-up ends when the slowest one's does.
            self.setupSeconds = max(self.setupSeconds, other.setupSeconds)
        if self.finalSeconds is not None and other.finalSeconds is not None:
            self.finalSeconds = max(self.finalSeconds, other.finalSeconds)

    def toJSON(self) -> dict[str, Any]:
        """The results as one JSON-ready object."""
        report: dict[str, Any] = {}
        if self.startedAt is not None:
            report["started"] = isoTime(self.startedAt)
        if self.target is not None:
            report["target"] = self.target
        if self.parameters is not None:
            report["parameters"] = self.parameters
        report |= {
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
        if self.lost is not None:
            report["lost"] = self.lost
            report["loss_percent"] = round(self.lossPercent, 3)
            report["late"] = self.late or 0
        if self.setupSeconds is not None:
            report["setup_s"] = round(self.setupSeconds, 6)
        if self.finalSeconds is not None:
            report["final_s"] = round(self.finalSeconds, 6)
        if self.targetRate is not None:
            report["target_rate"] = self.targetRate
            report["achieved_rate"] = round(self.echoesPerSecond, 1)
        if self.uncorrected is not None:
            report["uncorrected"] = percentiles(self.uncorrected)
        if self.delays is not None:
            report["send_delay"] = percentiles(self.delays)
        if self.scheduleDelays is not None:
            report["schedule_delay"] = percentiles(self.scheduleDelays)
        if self.held is not None:
            report["held_sends"] = self.held
        report["machine"] = self.machine
        return report


def formatReport(results: Results) -> list[str]:
    """The readable summary, one string per line."""
    what = {
        "pingpong": "echoes",
        "connect": "connect/echo/close transactions",
        "hold": "connections held",
        "stream": "chunks echoed",
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
    lines += latencyLines(results)
    if results.lost is not None:
        lines.append(
            f"lost: {results.lost} of {results.echoes + results.lost} datagrams"
            f" ({results.lossPercent:.2f}%), {results.late or 0} echoes came late"
        )
    total = sum(results.errors.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(results.errors.items()))
    lines.append(f"errors: {total}" + (f" ({kinds})" if kinds else ""))
    if results.target is not None:
        lines.append(targetLine(results.target, results.startedAt))
    machine = results.machine
    if machine:
        steal = machine.get("steal_percent")
        if steal is None:
            stolen = ""
        elif steal < STEAL_WARNING_PERCENT:
            stolen = f", host steal {steal:.1f}%"
        else:
            # On the same line, so that the report's lines keep their places.
            stolen = (
                f", host steal {steal:.1f}%: the host took that share of the"
                " CPU time, and these figures measure it too"
            )
        lines.append(
            f"machine: {machine.get('cpus')} CPUs, {machine.get('kernel')},"
            f" {machine.get('python')}, {machine.get('reactor')}{stolen}"
        )
    return lines


def latencyLines(results: Results) -> list[str]:
    """The report's latency lines: one, or five in open loop."""
    if results.uncorrected is not None:
        label = "latency (from intended send)"
    elif results.mode == "hold":
        label = "set-up latency (connect to verified echo)"
    else:
        label = "latency"
    lines = [f"{label}: {formatPercentiles(percentiles(results.histogram))}"]
    if results.uncorrected is not None:
        lines.append(
            "latency (from actual send): "
            + formatPercentiles(percentiles(results.uncorrected))
        )
    if results.delays is not None:
        lines.append(
            "send delay (actual - intended send): "
            + formatPercentiles(percentiles(results.delays))
        )
    if results.scheduleDelays is not None:
        lines.append(
            "schedule delay (reached - intended send): "
            + formatPercentiles(percentiles(results.scheduleDelays))
        )
    if results.held is not None and results.delays is not None:
        sent = results.delays.get_total_count()
        share = 100.0 * results.held / sent if sent else 0.0
        what = (
            "held for a free slot (all connections busy):"
            if results.mode == "connect"
            else "held for room in the pipeline:"
        )
        lines.append(f"{what} {results.held} of {sent} sends ({share:.2f}%)")
    return lines


def targetLine(target: dict[str, Any], startedAt: float | None) -> str:
    """C{target: HOST:PORT (ADDRESS), started TIME}."""
    where = formatHostPort(target["host"], target["port"])
    if target.get("address") not in (None, target["host"]):
        where += f" ({target['address']})"
    started = f", started {isoTime(startedAt)}" if startedAt is not None else ""
    return f"target: {where}{started}"


def formatPercentiles(values: dict[str, float]) -> str:
    """C{p50 12  p90 ...  max 40 us (mean 13.1, stdev 2.0)} from L{percentiles}."""
    names = [
        ("p50", "p50"),
        ("p90", "p90"),
        ("p99", "p99"),
        ("p999", "p99.9"),
        ("p9999", "p99.99"),
    ]
    parts = [f"{label} {values[f'{name}_us']:.0f}" for name, label in names]
    parts.append(f"max {values['max_us']:.0f}")
    return (
        "  ".join(parts)
        + f" us (mean {values['mean_us']:.1f}, stdev {values['stdev_us']:.1f})"
    )


def formatDistribution(results: Results) -> list[str]:
    """C{--latency}: the percentile spectrum of each histogram, as wrk2 prints it."""
    shown = [("Latency distribution", results.histogram)]
    if results.uncorrected is not None:
        shown = [
            ("Latency distribution (from intended send)", results.histogram),
            ("Latency distribution (from actual send)", results.uncorrected),
        ]
    if results.delays is not None:
        shown.append(
            ("Send delay distribution (actual - intended send)", results.delays)
        )
    if results.scheduleDelays is not None:
        shown.append(
            (
                "Schedule delay distribution (reached - intended send)",
                results.scheduleDelays,
            )
        )
    lines: list[str] = []
    for title, histogram in shown:
        lines += ["", f"{title}, value in us:", *distribution(histogram).splitlines()]
    return lines


def flatten(report: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """C{report} with nested objects as C{outer.inner} keys (for CSV)."""
    flat: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def childReport(results: Results) -> dict[str, Any]:
    """A C{--child} load process's JSON report: L{Results.toJSON} and histograms.

    The parent adds the children's histograms up (L{resultsFromChild}),
    which percentiles alone would not allow.
    """
    report = results.toJSON()
    report["histogram"] = encodeHistogram(results.histogram)
    if results.uncorrected is not None:
        report["uncorrected_histogram"] = encodeHistogram(results.uncorrected)
    if results.delays is not None:
        report["delays_histogram"] = encodeHistogram(results.delays)
    if results.scheduleDelays is not None:
        report["schedule_delays_histogram"] = encodeHistogram(results.scheduleDelays)
    return report


def resultsFromChild(report: dict[str, Any]) -> Results:
    """Rebuild L{Results} from a C{--child} process's JSON report.

    @raise KeyError: a field is missing.
    @raise ValueError: a histogram is not encoded as L{childReport} does.
    """
    uncorrected = report.get("uncorrected_histogram")
    delays = report.get("delays_histogram")
    scheduleDelays = report.get("schedule_delays_histogram")
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
        lost=report.get("lost"),
        late=report.get("late"),
        delays=decodeHistogram(delays) if delays else None,
        scheduleDelays=decodeHistogram(scheduleDelays) if scheduleDelays else None,
        held=report.get("held_sends"),
    )
