"""C{python -m echotwist.bench compare A.json B.json}: two results side by side.

Plain code, no I/O: the caller reads the two JSON reports (written with
C{--json}, or by C{merge --json}) and gets back rows of the figures both
hold, with B's change from A in percent.
"""

from __future__ import annotations

from typing import Any

from echotwist.bench.results import flatten

# The figures compared, in this order, with how each is shown.  A key
# missing from either report (open loop only, say) is left out.
FIGURES: tuple[tuple[str, str], ...] = (
    ("echoes_per_s", "echoes/s"),
    ("MB_per_s", "MB/s"),
    ("achieved_rate", "achieved rate /s"),
    ("p50_us", "p50 us"),
    ("p90_us", "p90 us"),
    ("p99_us", "p99 us"),
    ("p999_us", "p99.9 us"),
    ("p9999_us", "p99.99 us"),
    ("max_us", "max us"),
    ("mean_us", "mean us"),
    ("stdev_us", "stdev us"),
    ("uncorrected.p50_us", "actual-send p50 us"),
    ("uncorrected.p99_us", "actual-send p99 us"),
    ("send_delay.p50_us", "send delay p50 us"),
    ("send_delay.p99_us", "send delay p99 us"),
    ("schedule_delay.p99_us", "schedule delay p99 us"),
    ("held_sends", "held sends"),
    ("lost", "lost"),
    ("errors", "errors"),
)


class BadReport(Exception):
    """A file is not a bench JSON report; the message says which and why."""


def checkReport(name: str, report: object) -> dict[str, Any]:
    """C{report} if it looks like a bench report, else L{BadReport}."""
    if not isinstance(report, dict) or "echoes" not in report:
        raise BadReport(f"{name} is not a result written with --json")
    return report


def change(before: float, after: float) -> float | None:
    """B's change from A in percent (C{None} from 0 to anything else)."""
    if before == 0:
        return 0.0 if after == 0 else None
    return 100.0 * (after - before) / before


def compareRows(
    before: dict[str, Any], after: dict[str, Any]
) -> list[tuple[str, float, float, float | None]]:
    """C{(label, A, B, change %)} for each figure both reports hold."""
    a, b = flatten(before), flatten(after)
    rows = []
    for key, label in FIGURES:
        if isinstance(a.get(key), int | float) and isinstance(b.get(key), int | float):
            rows.append((label, float(a[key]), float(b[key]), change(a[key], b[key])))
    return rows


def formatRows(
    rows: list[tuple[str, float, float, float | None]], names: tuple[str, str]
) -> list[str]:
    """The rows as an aligned table, A and B named by C{names}."""
    width = max([len(label) for label, *_ in rows] + [6])
    lines = [f"{'':{width}}  {'A':>14}  {'B':>14}  {'change':>8}"]
    for label, before, after, percent in rows:
        shown = "n/a" if percent is None else f"{percent:+.1f}%"
        lines.append(
            f"{label:{width}}  {_number(before):>14}  {_number(after):>14}  {shown:>8}"
        )
    lines += [f"A: {names[0]}", f"B: {names[1]}"]
    return lines


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.2f}"
