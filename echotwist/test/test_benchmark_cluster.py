"""Tests for the pure parts of C{make cluster} (C{benchmarks/cluster.py}).

Nothing here makes a namespace or starts a process: HAProxy's session
log, when errors happened, the merge check, the table, the hosts' names
and the script's refusals are plain code.  The modules come from the
source tree; an installed C{echotwist.test} skips these tests.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.commandline import usageError

try:
    from benchmarks import cluster
    from benchmarks.clusternet import SUBNET, plan
    from benchmarks.clusterresults import (
        LOG_RESOLUTION,
        Row,
        Session,
        finalLine,
        formatTable,
        mergeProblems,
        parseSession,
        phases,
    )
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"

# Lines as HAProxy 2.6 logs them with the shipped configuration.
NORMAL = (
    "10.204.0.21:43790 [03/Dec/2026:13:55:44.603] echo echotwist/echo1"
    " 1/0/5005 524288 -- 51/51/50/17/0 0/0"
)
CUT = (
    "10.204.0.22:43800 [03/Dec/2026:13:55:40.100] echo echotwist/echo3"
    " 1/0/4250 1024 SD 51/51/50/17/0 0/0"
)
CHECK_DOWN = (
    "Server echotwist/echo3 is DOWN, reason: Layer4 connection problem,"
    ' info: "Connection refused", check duration: 0ms.'
)


def epoch(text: str) -> float:
    """Seconds since the epoch of a UTC time C{2026-12-03 13:55:44.603}."""
    when = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)
    return when.timestamp()


def session(ended: float, state: str = "SD") -> Session:
    """A session that ended at C{ended} in C{state}."""
    return Session("10.204.0.21:1", "echo3", ended - 1.0, ended, state)


class SessionLogTests(SynchronousTestCase):
    """HAProxy's tcplog lines become sessions with start, end and state."""

    def test_parse(self) -> None:
        """The accept time (UTC) plus the total time is the end."""
        parsed = parseSession(NORMAL)
        assert parsed is not None
        self.assertEqual(parsed.client, "10.204.0.21:43790")
        self.assertEqual(parsed.server, "echo1")
        self.assertAlmostEqual(parsed.started, epoch("2026-12-03 13:55:44.603"))
        self.assertAlmostEqual(parsed.ended, epoch("2026-12-03 13:55:49.608"))
        self.assertFalse(parsed.failed)

    def test_failed(self) -> None:
        """Server-side and HAProxy-side ends failed; the client's own did not."""
        parsed = parseSession(CUT)
        assert parsed is not None
        self.assertTrue(parsed.failed)
        for state, failed in (("--", False), ("CD", False), ("cD", False)):
            self.assertEqual(session(0.0, state).failed, failed, state)
        for state in ("SC", "sD", "DD", "PC", "RC", "KD"):
            self.assertTrue(session(0.0, state).failed, state)

    def test_otherLines(self) -> None:
        """Server state lines and anything else are no sessions."""
        for line in (CHECK_DOWN, "", "[WARNING]  (1) : " + CHECK_DOWN):
            self.assertIsNone(parseSession(line))


class PhaseTests(SynchronousTestCase):
    """Failed sessions are counted by when they ended."""

    def test_phases(self) -> None:
        """Before the kill, until the ejection, after it; ok ones not at all."""
        found = phases(
            [
                session(99.0),
                session(100.001),
                session(100.5),
                session(101.0),
                session(101.2),
                session(101.3, "--"),
                session(99.0, "CD"),
            ],
            killed=100.0,
            ejected=101.0,
        )
        self.assertEqual(
            (found.beforeKill, found.untilEjection, found.afterEjection), (1, 3, 1)
        )
        self.assertEqual(found.total, 5)
        assert found.lastAfterKill is not None
        self.assertAlmostEqual(found.lastAfterKill, 1.2)

    def test_logResolution(self) -> None:
        """An end logged just before the kill (milliseconds cut) counts with it."""
        found = phases(
            [session(100.0 - LOG_RESOLUTION / 2), session(100.0 - 2 * LOG_RESOLUTION)],
            killed=100.0,
            ejected=101.0,
        )
        self.assertEqual((found.beforeKill, found.untilEjection), (1, 1))

    def test_none(self) -> None:
        """No failed session: nothing after the kill."""
        found = phases([session(100.5, "--")], killed=100.0, ejected=101.0)
        self.assertEqual((found.total, found.lastAfterKill), (0, None))


def report(echoes: int, errors: dict[str, int], **values: int) -> dict[str, Any]:
    """A bench --json report with C{echoes}, C{errors} and percentiles."""
    base = {"p50_us": 100, "p90_us": 200, "p99_us": 300, "p999_us": 400, "max_us": 500}
    return {
        "echoes": echoes,
        "echoes_per_s": echoes / 10,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        **base,
        **values,
    }


class MergeCheckTests(SynchronousTestCase):
    """The merge is exact when counts add and percentiles match the sum."""

    def setUp(self) -> None:
        """Two runs and their exact merge."""
        self.runs = [
            report(1000, {"closed": 3}),
            report(500, {"closed": 1, "truncated": 2}, max_us=900),
        ]
        self.summed = {
            "p50_us": 110,
            "p90_us": 210,
            "p99_us": 310,
            "p999_us": 410,
            "max_us": 900,
        }
        self.merged = report(1500, {"closed": 4, "truncated": 2}, **self.summed)

    def test_exact(self) -> None:
        """Sums, kinds and percentiles all agree: no problem."""
        self.assertEqual(
            mergeProblems(self.runs, [1000, 500], self.merged, self.summed), []
        )

    def test_inexact(self) -> None:
        """Each kind of disagreement is named."""
        cases: list[tuple[dict[str, Any], list[int], str]] = [
            ({"echoes": 1499}, [1000, 500], "merged echoes 1499 != 1500"),
            ({"errors": 5}, [1000, 500], "merged errors 5 != 6"),
            ({"error_kinds": {"closed": 6}}, [1000, 500], "merged error kinds"),
            ({"p99_us": 311}, [1000, 500], "merged p99_us 311 != 310"),
            ({}, [999, 500], "log 1 holds 999 latencies, its run 1000 echoes"),
        ]
        for change, counts, problem in cases:
            merged = {**self.merged, **change}
            found = mergeProblems(self.runs, counts, merged, self.summed)
            self.assertTrue(any(problem in p for p in found), (problem, found))

    def test_maxOfRuns(self) -> None:
        """The merged max must be the larger run's, even if the sum agrees."""
        merged = {**self.merged, "max_us": 800}
        found = mergeProblems(
            self.runs, [1000, 500], merged, {**self.summed, "max_us": 800}
        )
        self.assertEqual(found, ["merged max_us 800 != 900"])


class OutputTests(SynchronousTestCase):
    """The table and the final line."""

    def test_table(self) -> None:
        """One row per load, rates with separators, errors by kind."""
        lines = formatTable(
            [
                Row("direct", report(123456, {})),
                Row("merged", report(20000, {"closed": 2, "truncated": 1})),
            ]
        )
        self.assertEqual(lines[0].count("|"), 9)
        self.assertEqual(
            lines[2], "| direct | 12,346 | 100 | 200 | 300 | 400 | 500 | 0 |"
        )
        self.assertTrue(lines[3].endswith("| 3 (closed 2, truncated 1) |"))

    def test_finalLine(self) -> None:
        """The line the issue asks for."""
        self.assertEqual(
            finalLine(
                servers=3,
                loadHosts=2,
                rate=13567.6,
                after=0,
                ejectedAfter=0.784,
                exact=True,
            ),
            "cluster: 3 servers, 2 load hosts, 13,568 echoes/s through haproxy,"
            " errors after ejection 0, ejected after 0.78 s, merge exact",
        )


class ScriptTests(SynchronousTestCase):
    """The hosts' names and addresses, refusals and options."""

    def test_plan(self) -> None:
        """Six hosts, named after the tag, with distinct addresses in the subnet."""
        hosts = plan(4711)
        self.assertEqual([h.name for h in hosts], ["s1", "s2", "s3", "lb", "c1", "c2"])
        self.assertTrue(all(h.namespace.startswith("etc4711-") for h in hosts))
        addresses = [ipaddress.ip_address(h.address) for h in hosts]
        self.assertEqual(len(set(addresses)), 6)
        network = ipaddress.ip_network(SUBNET)
        self.assertTrue(all(a in network for a in addresses))
        self.assertEqual(
            hosts[0].command(["twistd"]),
            ["ip", "netns", "exec", "etc4711-s1", "twistd"],
        )

    def test_refusal(self) -> None:
        """Not Linux, or not root: one reason; else none."""
        self.assertIn("needs Linux", cluster.refusal("darwin", 0) or "")
        self.assertIn("needs root", cluster.refusal("linux", 1000) or "")
        self.assertIsNone(cluster.refusal("linux", 0))

    def test_badOptions(self) -> None:
        """A kill too late in the run is a usage error (exit 2, one line)."""
        for argv in (
            ["--duration", "6", "--kill-after", "4"],
            ["--kill-after", "0.5"],
            ["--connections", "0"],
        ):
            code, stderr = usageError(self, cluster.parseArguments, argv)
            self.assertEqual(code, 2)
            self.assertIn("error:", stderr.splitlines()[-1])

    def test_defaults(self) -> None:
        """The defaults leave room after the kill for the ejection and more."""
        args = cluster.parseArguments([])
        self.assertGreaterEqual(
            args.duration - args.kill_after, cluster.EJECTION_LIMIT + 2.0
        )
