"""The latency charts of C{--plot FILE.png} (matplotlib, optional).

Two views, one above the other:
  - the percentile distribution: the x axis is the percentile on the
    usual HDR scale (each step a tenfold rarer event: 90%, 99%, 99.9%...),
    the y axis the latency in microseconds on a log scale, so that p50 to
    p99 are not squashed under the tail.  Each percentile is a point (the
    histogram says nothing between them, so they are not joined), and the
    maximum is drawn as its own point where the last sample sits.  An
    open-loop run draws the latencies from the actual send too;
  - latency over time, from the run's intervals (the ones an interval log
    holds): p50, p99 and max of each interval against the seconds since
    the start.  A run with C{--processes} has no intervals to draw.

L{curve} and L{maximum} decide where the points go (no matplotlib);
L{plotLatency} draws them.
"""

from __future__ import annotations

import math

from hdrh.histogram import HdrHistogram

from echotwist.bench.results import Results

# Percentiles drawn: a dense ladder up to 99.999.
_PERCENTILES = [
    p
    for decade in range(6)
    for p in (
        100 - 100 / 10**decade,
        100 - 50 / 10**decade,
        100 - 25 / 10**decade,
    )
    if p < 99.9999
]


class PlotUnavailable(Exception):
    """matplotlib is not installed; the message says how to get it."""


def curve(histogram: HdrHistogram) -> tuple[list[float], list[int]]:
    """X positions (-log10 of the tail fraction) and latencies for the plot.

    Only percentiles the histogram's samples can tell apart are drawn:
    with N samples, nothing finer than one sample in N.
    """
    xs: list[float] = []
    ys: list[int] = []
    count = histogram.get_total_count()
    if count == 0:
        return xs, ys
    for p in sorted(set(_PERCENTILES)):
        x = -math.log10(1 - p / 100)
        if 10**x > count:
            break
        xs.append(x)
        ys.append(histogram.get_value_at_percentile(p))
    return xs, ys


def maximum(histogram: HdrHistogram) -> tuple[float, int] | None:
    """Where the maximum goes: at the tail fraction of one sample in N."""
    count = histogram.get_total_count()
    if count == 0:
        return None
    return math.log10(count), histogram.get_max_value()


def title(results: Results) -> str:
    """What the run was: mode (open loop and its target), load, rate."""
    if results.targetRate is not None:
        what = f"open loop at {results.targetRate:,.0f}/s target"
    else:
        what = results.mode
    return (
        f"{what}: {results.connections} connections, {results.size} B,"
        f" {results.echoesPerSecond:,.0f} echoes/s"
    )


def plotLatency(results: Results, path: str) -> None:
    """Draw C{results}' latency charts into the PNG file C{path}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'echotwist[plot]'"
        ) from None
    figure, (spectrum, overTime) = pyplot.subplots(2, 1, figsize=(8, 9))
    shown = [("latency", results.histogram, "o")]
    if results.uncorrected is not None:
        shown = [
            ("from intended send", results.histogram, "o"),
            ("from actual send", results.uncorrected, "s"),
        ]
    for label, histogram, marker in shown:
        xs, ys = curve(histogram)
        spectrum.plot(xs, ys, marker=marker, linestyle="none", label=label)
        top = maximum(histogram)
        if top is not None:
            spectrum.plot(
                [top[0]], [top[1]], marker="v", linestyle="none", label=f"max ({label})"
            )
    ticks = [0, 1, 2, 3, 4, 5, 6]
    spectrum.set_xticks(
        ticks, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
    )
    spectrum.set_xlabel("percentile")
    spectrum.set_ylabel("latency (us)")
    spectrum.set_yscale("log")
    spectrum.set_title(title(results))
    spectrum.grid(True, which="both", alpha=0.3)
    spectrum.legend(loc="upper left")
    timeline = results.timeline
    if timeline:
        ends = [interval.end for interval in timeline]
        for name, values in (
            ("p50", [interval.p50 for interval in timeline]),
            ("p99", [interval.p99 for interval in timeline]),
            ("max", [interval.max for interval in timeline]),
        ):
            overTime.plot(ends, values, marker="o", linestyle="none", label=name)
        overTime.set_yscale("log")
        overTime.legend()
    else:
        overTime.text(0.5, 0.5, "no intervals (--processes)", ha="center", va="center")
    overTime.set_xlabel("seconds since the start (end of each interval)")
    overTime.set_ylabel("latency (us)")
    overTime.set_title("latency over time, per interval")
    overTime.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    try:
        figure.savefig(path, format="png", dpi=100)
    finally:
        pyplot.close(figure)
