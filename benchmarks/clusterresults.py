"""The pure parts of C{benchmarks/cluster.py}: HAProxy's session log, when
errors happened, whether the merge was exact, and the table.

No I/O: lines, numbers and dictionaries in, verdicts and lines out.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# HAProxy's "option tcplog" line (its format "%ci:%cp [%t] %ft %b/%s
# %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq"), as the shipped
# configuration logs it with "format raw".
_TCPLOG = re.compile(
    r"^(?P<client>\S+) \[(?P<accepted>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\]"
    r" (?P<frontend>\S+) (?P<backend>[^/\s]+)/(?P<server>\S+)"
    r" -?\d+/-?\d+/\+?(?P<total>-?\d+) \+?\d+ (?P<state>\S\S) "
)
# The first character of a termination state that is the client's own
# doing (C: it closed or reset, c: its timeout) or none at all (-).
_CLIENT_OR_NONE = frozenset("-Cc")
# HAProxy's own log times are milliseconds, cut short.
LOG_RESOLUTION = 0.002


@dataclass(frozen=True)
class Session:
    """One client connection through HAProxy, from its log line."""

    client: str
    server: str
    started: float
    ended: float
    state: str

    @property
    def failed(self) -> bool:
        """Whether HAProxy ended it for a reason not the client's own.

        The server closed or refused it (C{S}, C{s}), HAProxy cut it
        (C{P}, C{R}, C{I}, C{L}, C{K}), or the server was marked down (C{D})
        or up (C{U}): the client saw its connection end under it.
        """
        return self.state[0] not in _CLIENT_OR_NONE


def parseSession(line: str) -> Session | None:
    """The session a HAProxy tcplog line describes; C{None} for other lines.

    Times are seconds since the epoch, HAProxy's clock read as UTC (run
    it with C{TZ=UTC}): the end is the accept time plus the total time.
    """
    match = _TCPLOG.search(line)
    if match is None:
        return None
    accepted = datetime.datetime.strptime(
        match["accepted"], "%d/%b/%Y:%H:%M:%S.%f"
    ).replace(tzinfo=datetime.UTC)
    started = accepted.timestamp()
    total = max(int(match["total"]), 0) / 1000
    return Session(
        client=match["client"],
        server=match["server"],
        started=started,
        ended=started + total,
        state=match["state"],
    )


@dataclass(frozen=True)
class Phases:
    """Failed sessions counted by when they ended: before the kill, from
    the kill to the ejection, after the ejection.
    """

    beforeKill: int
    untilEjection: int
    afterEjection: int
    lastAfterKill: float | None

    @property
    def total(self) -> int:
        """All failed sessions."""
        return self.beforeKill + self.untilEjection + self.afterEjection


def phases(sessions: Iterable[Session], killed: float, ejected: float) -> Phases:
    """Count the failed C{sessions} by when each ended.

    A session ending within L{LOG_RESOLUTION} before C{killed} is counted
    with the kill (the log's milliseconds are cut short); one ending
    after C{ejected} (when the script saw HAProxy say so) counts after
    the ejection.  C{lastAfterKill}: how long after the kill the last
    failed session ended, if any did.
    """
    before = until = after = 0
    last: float | None = None
    for session in sessions:
        if not session.failed:
            continue
        if session.ended < killed - LOG_RESOLUTION:
            before += 1
            continue
        last = max(last or 0.0, session.ended - killed)
        if session.ended <= ejected:
            until += 1
        else:
            after += 1
    return Phases(before, until, after, last)


def mergeProblems(
    runs: Sequence[Mapping[str, Any]],
    logCounts: Sequence[int],
    merged: Mapping[str, Any],
    summed: Mapping[str, int],
) -> list[str]:
    """What is not exact in a merge of C{runs}; empty when it all is.

    C{runs} are the load hosts' own C{--json} reports, C{logCounts} how
    many latencies each one's interval log holds, C{merged} the report
    of C{bench merge}, C{summed} the percentiles (C{p50_us} ... C{max_us})
    of the logs' histograms added up independently of the merge.
    """
    problems = []
    for index, (run, count) in enumerate(zip(runs, logCounts, strict=True), 1):
        if count != run["echoes"]:
            problems.append(
                f"log {index} holds {count} latencies, its run {run['echoes']} echoes"
            )
    for field in ("echoes", "errors"):
        total = sum(int(run[field]) for run in runs)
        if merged[field] != total:
            problems.append(f"merged {field} {merged[field]} != {total}")
    kinds: dict[str, int] = {}
    for run in runs:
        for kind, count in run["error_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + int(count)
    if dict(merged["error_kinds"]) != kinds:
        problems.append(f"merged error kinds {merged['error_kinds']} != {kinds}")
    for name, value in summed.items():
        if merged[name] != value:
            problems.append(f"merged {name} {merged[name]} != {value}")
    largest = max(int(run["max_us"]) for run in runs)
    if merged["max_us"] != largest:
        problems.append(f"merged max_us {merged['max_us']} != {largest}")
    return problems


@dataclass(frozen=True)
class Row:
    """One line of the table: a load and what it measured."""

    label: str
    report: Mapping[str, Any]


def formatTable(rows: Sequence[Row]) -> list[str]:
    """A markdown pipe table: echoes/s, percentiles in us, errors by kind."""
    lines = [
        "| load | echoes/s | p50 us | p90 us | p99 us | p99.9 us | max us | errors |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        report = row.report
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(report["error_kinds"].items()))
        errors = f"{report['errors']}" + (f" ({kinds})" if kinds else "")
        lines.append(
            f"| {row.label} | {report['echoes_per_s']:,.0f} | {report['p50_us']}"
            f" | {report['p90_us']} | {report['p99_us']} | {report['p999_us']}"
            f" | {report['max_us']} | {errors} |"
        )
    return lines


def finalLine(
    *,
    servers: int,
    loadHosts: int,
    rate: float,
    after: int,
    ejectedAfter: float,
    exact: bool,
) -> str:
    """The last line C{make cluster} prints."""
    return (
        f"cluster: {servers} servers, {loadHosts} load hosts,"
        f" {rate:,.0f} echoes/s through haproxy, errors after ejection {after},"
        f" ejected after {ejectedAfter:.2f} s, merge {'exact' if exact else 'INEXACT'}"
    )
