"""The fault script's decisions and its table: plain code, no I/O.

What counts as a failure in each scenario, the memory slope of the soak,
how long held connections took to come back after a blackout, and the
table (a markdown pipe table, so that it can be pasted into
C{docs/faults.md} as printed) with the notes under it.

The bench (C{python -m echotwist.bench}) counts its errors by kind; they
fall into these groups here:

  - content: C{corrupt}, C{duplicated}, C{reordered}, C{excess}: an echo
    that was not the bytes sent, once and in order.  Never allowed.
  - dropped: C{closed}, C{truncated}: the server's side of a connection
    went away (with part of an echo, for C{truncated}).  Allowed only for
    connections a killed worker held, and after a blackout longer than
    the server's C{--idle-timeout}.
  - C{connect}: the bench could not connect (refused, or timed out).
  - C{stalled}: an echo still due a second after it was sent when the run
    ended: a connection that hung, or, under packet loss, one in TCP's
    retransmission back-off at that moment (allowed there only; the held
    prober connections show whether any connection hung).
  - C{unsent}: open-loop sends that fell due while their connection was
    being replaced; a consequence of a drop, counted with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CONTENT_KINDS = ("corrupt", "duplicated", "reordered", "excess")
DROP_KINDS = ("closed", "truncated")

COLUMNS = (
    "scenario",
    "echoes/s",
    "errors",
    "dropped",
    "refused",
    "corrupt",
    "dup/reord/excess",
    "p50 ms",
    "p99 ms",
    "recovery",
    "verdict",
)


@dataclass
class Row:
    """One scenario's line in the table, its notes, and details for the JSON."""

    scenario: str
    echoesPerSecond: float | None = None
    errorKinds: dict[str, int] = field(default_factory=dict)
    # Connections a killed worker held: drops allowed (kill scenarios).
    allowed: int | None = None
    refused: int | None = None
    p50ms: float | None = None
    p99ms: float | None = None
    recovery: str = "-"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Every error the bench counted."""
        return sum(self.errorKinds.values())

    @property
    def dropped(self) -> int:
        """Connections the server's side dropped (closed or truncated)."""
        return sum(self.errorKinds.get(kind, 0) for kind in DROP_KINDS)

    @property
    def verdict(self) -> str:
        """C{PASS}, or C{FAIL} and what failed."""
        return "PASS" if not self.problems else "FAIL: " + "; ".join(self.problems)

    def cells(self) -> list[str]:
        """The row's table cells, in L{COLUMNS} order."""
        measured = self.echoesPerSecond is not None
        dropped = str(self.dropped) if measured else "-"
        if measured and self.allowed is not None:
            dropped += f" (<= {self.allowed})"
        kinds = self.errorKinds
        return [
            self.scenario,
            _number(self.echoesPerSecond, "{:,.0f}"),
            str(self.errors) if measured else "-",
            dropped,
            _number(self.refused, "{}"),
            str(kinds.get("corrupt", 0)) if measured else "-",
            str(sum(kinds.get(k, 0) for k in CONTENT_KINDS[1:])) if measured else "-",
            _number(self.p50ms, "{:.2f}"),
            _number(self.p99ms, "{:.2f}"),
            self.recovery,
            self.verdict,
        ]

    def toJSON(self) -> dict[str, Any]:
        """The row, its notes and details as one JSON-ready object."""
        return {
            "scenario": self.scenario,
            "echoes_per_s": self.echoesPerSecond,
            "errors": self.errors,
            "error_kinds": dict(sorted(self.errorKinds.items())),
            "dropped": self.dropped,
            "allowed_drops": self.allowed,
            "refused": self.refused,
            "p50_ms": self.p50ms,
            "p99_ms": self.p99ms,
            "recovery": self.recovery,
            "verdict": self.verdict,
            "notes": self.notes,
            "details": self.details,
        }


def _number(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def contentErrors(kinds: Mapping[str, int]) -> int:
    """Echoes that were not the bytes sent: corrupt, duplicated, reordered, excess."""
    return sum(kinds.get(kind, 0) for kind in CONTENT_KINDS)


def commonProblems(
    kinds: Mapping[str, int], refused: int | None, stallsAllowed: bool = False
) -> list[str]:
    """What fails every scenario: refusals, wrong echoes, failed connects, hangs.

    With C{stallsAllowed}, C{stalled} echoes are not failures (packet loss).
    """
    problems = []
    if refused is None:
        problems.append("no prober report")
    elif refused:
        problems.append(f"{refused} refused")
    for kind in CONTENT_KINDS:
        if kinds.get(kind):
            problems.append(f"{kinds[kind]} {kind}")
    if kinds.get("connect"):
        problems.append(f"{kinds['connect']} bench connects failed")
    if kinds.get("stalled") and not stallsAllowed:
        problems.append(f"{kinds['stalled']} stalled")
    return problems


def unexpectedKinds(kinds: Mapping[str, int], allowed: Sequence[str]) -> list[str]:
    """Errors of kinds neither common (L{commonProblems}) nor in C{allowed}."""
    known = {*CONTENT_KINDS, "connect", "stalled", *allowed}
    return [
        f"{n} {kind}" for kind, n in sorted(kinds.items()) if n and kind not in known
    ]


def killProblems(
    kinds: Mapping[str, int],
    refused: int | None,
    allowed: int,
    kills: int,
    replaced: int,
) -> list[str]:
    """Kill -9 under load: drops only up to what the killed workers held.

    Every kill must be followed by a replacement worker that listens;
    sends that fell due during a drop's reconnection (C{unsent}) go with it.
    """
    problems = commonProblems(kinds, refused)
    dropped = sum(kinds.get(kind, 0) for kind in DROP_KINDS)
    if dropped > allowed:
        problems.append(f"{dropped} dropped > {allowed} held by killed workers")
    problems += unexpectedKinds(kinds, (*DROP_KINDS, "unsent"))
    if replaced < kills:
        problems.append(f"{kills - replaced} of {kills} kills not replaced")
    return problems


def reloadProblems(
    kinds: Mapping[str, int], refused: int | None, reloads: int, reloaded: int
) -> list[str]:
    """SIGHUP under load: nothing refused, no wrong echo, every reload done.

    Connections the old workers close after draining count as dropped
    (shown, not failed): an echo server cannot hand a connection over.
    A C{truncated} echo (cut mid-way) is a failure.
    """
    problems = commonProblems(kinds, refused)
    if kinds.get("truncated"):
        problems.append(f"{kinds['truncated']} truncated")
    problems += unexpectedKinds(kinds, ("closed", "truncated", "unsent"))
    if reloaded < reloads:
        problems.append(f"{reloads - reloaded} of {reloads} reloads not seen")
    return problems


def soakProblems(
    kinds: Mapping[str, int],
    refused: int | None,
    slope: float | None,
    maxSlope: float,
) -> list[str]:
    """The soak: no error of any kind, and RSS growing no faster than C{maxSlope}."""
    problems = commonProblems(kinds, refused)
    problems += unexpectedKinds(kinds, ())
    if slope is None:
        problems.append("too few RSS samples after warm-up")
    elif slope > maxSlope:
        problems.append(f"RSS grows {slope:.1f} KiB/min > {maxSlope:g}")
    return problems


def networkProblems(
    kinds: Mapping[str, int],
    refused: int | None,
    *,
    dropsAllowed: bool = False,
    stallsAllowed: bool = False,
    recovered: int | None = None,
    held: int = 0,
) -> list[str]:
    """A network fault: no error of any kind but those allowed.

    C{dropsAllowed}: closed connections (and their unsent sends), after a
    blackout longer than the idle timeout.  C{stallsAllowed}: echoes in a
    retransmission back-off when the run ended, under packet loss.  With
    C{recovered}, every one of the C{held} prober connections must have
    echoed again after the fault was removed.
    """
    problems = commonProblems(kinds, refused, stallsAllowed)
    allowed: tuple[str, ...] = (*DROP_KINDS, "unsent") if dropsAllowed else ()
    problems += unexpectedKinds(kinds, allowed)
    if recovered is not None and recovered < held:
        problems.append(f"{held - recovered} of {held} held connections hung")
    return problems


def leastSquaresSlope(points: Sequence[tuple[float, float]]) -> float:
    """The slope of the least-squares line through C{points} (x, y).

    @raise ValueError: fewer than two points, or all at one x.
    """
    if len(points) < 2:
        raise ValueError("need two points for a slope")
    n = len(points)
    meanX = sum(x for x, _ in points) / n
    meanY = sum(y for _, y in points) / n
    spread = sum((x - meanX) ** 2 for x, _ in points)
    if spread == 0:
        raise ValueError("all points at one x")
    return sum((x - meanX) * (y - meanY) for x, y in points) / spread


def soakSlope(
    samples: Sequence[tuple[float, float]], warmup: float, least: int = 3
) -> float | None:
    """RSS growth in KiB per minute after C{warmup} seconds.

    C{samples} are (seconds since the soak started, KiB); the line is
    fitted through the samples taken at or after C{warmup}, and needs at
    least C{least} of them (else None).
    """
    kept = [(t / 60.0, kib) for t, kib in samples if t >= warmup]
    if len(kept) < least:
        return None
    return leastSquaresSlope(kept)


def recoveryAfter(
    gaps: Sequence[tuple[float, float]], lastEcho: float | None, faultEnd: float
) -> float | None:
    """How long after C{faultEnd} a held connection echoed again.

    C{gaps} are the (last echo, next echo) pairs the prober recorded for
    the connection.  The gap spanning C{faultEnd} ends at the first echo
    after it; a connection with no such gap that echoed after C{faultEnd}
    was never held up (0).  None: it never echoed after C{faultEnd}.
    """
    for start, end in gaps:
        if start <= faultEnd < end:
            return end - faultEnd
    if lastEcho is not None and lastEcho > faultEnd:
        return 0.0
    return None


def formatTable(rows: Sequence[Row]) -> list[str]:
    """The rows as a markdown pipe table with aligned columns."""
    grid = [list(COLUMNS)] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(grid[0]), rule, *(line(cells) for cells in grid[1:])]


def formatNotes(rows: Sequence[Row]) -> list[str]:
    """One bullet per note, each under its scenario's name."""
    lines = []
    for row in rows:
        for note in row.notes:
            lines.append(f"- {row.scenario}: {note}")
    return lines


def formatErrorKinds(kinds: Mapping[str, int]) -> str:
    """C{closed 3, unsent 5} (kinds in order; C{none} when there are none)."""
    parts = [f"{kind} {n}" for kind, n in sorted(kinds.items()) if n]
    return ", ".join(parts) or "none"
