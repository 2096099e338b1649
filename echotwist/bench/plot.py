"""The latency percentile plot of C{--plot FILE.png} (matplotlib, optional).

The x axis is the percentile on the usual HDR scale (each step a tenfold
rarer event: 90%, 99%, 99.9%...), the y axis the latency in
microseconds; an open-loop run draws the uncorrected latencies too.
"""

from __future__ import annotations

import math

from hdrh.histogram import HdrHistogram

from echotwist.bench.results import Results

# Percentiles drawn: a dense ladder up to 99.999, then the maximum.
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
    """X positions (-log10 of the tail fraction) and latencies for the plot."""
    xs: list[float] = []
    ys: list[int] = []
    if histogram.get_total_count() == 0:
        return xs, ys
    for p in sorted(set(_PERCENTILES)):
        xs.append(-math.log10(1 - p / 100))
        ys.append(histogram.get_value_at_percentile(p))
    return xs, ys


def plotLatency(results: Results, path: str) -> None:
    """Draw C{results}' latency distribution into the PNG file C{path}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'echotwist[plot]'"
        ) from None
    figure, axes = pyplot.subplots(figsize=(8, 5))
    label = "from intended send" if results.uncorrected is not None else "latency"
    xs, ys = curve(results.histogram)
    axes.plot(xs, ys, label=label)
    if results.uncorrected is not None:
        ux, uy = curve(results.uncorrected)
        axes.plot(ux, uy, label="from actual send", linestyle="--")
    ticks = [0, 1, 2, 3, 4, 5]
    axes.set_xticks(ticks, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (us)")
    axes.set_title(
        f"{results.mode}: {results.connections} connections, {results.size} B,"
        f" {results.echoesPerSecond:,.0f} echoes/s"
    )
    axes.grid(True, alpha=0.3)
    axes.legend()
    try:
        figure.savefig(path, format="png", dpi=100)
    finally:
        pyplot.close(figure)
