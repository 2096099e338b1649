"""Tests for the pure parts of the cross-check, C{benchmarks/crosscheck.py}.

Nothing here starts sockperf, a server or a compiler: reading each tool's
output, the medians, the differences and the table are plain code.  The
module comes from the source tree; an installed C{echotwist.test} skips
these tests.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

try:
    from benchmarks.crosscheck import (
        Figures,
        difference,
        medianFigures,
        parseBench,
        parseSockperf,
        stealLines,
        tableLines,
    )
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"

# The end of a real `sockperf ping-pong --full-rtt` run (3.7) through the shim.
SOCKPERF = """\
sockperf: [Total Run] RunTime=3.000 sec; Warm up time=400 msec; SentMessages=93690; ReceivedMessages=93689
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=2.550 sec; SentMessages=73415; ReceivedMessages=73415
sockperf: \x1b[2;35m====> avg-rtt=34.634 (std-dev=55.732)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Round trip is 34.634 usec
sockperf: \x1b[2;35mTotal 73415 observations\x1b[0m; each percentile contains 734.15 observations
sockperf: ---> <MAX> observation = 5523.932
sockperf: ---> percentile 99.999 = 5399.723
sockperf: ---> percentile 99.990 = 2845.563
sockperf: ---> percentile 99.900 =  279.590
sockperf: ---> percentile 99.000 =  132.239
sockperf: ---> percentile 90.000 =   80.118
sockperf: ---> percentile 75.000 =   26.799
sockperf: ---> percentile 50.000 =   24.049
sockperf: ---> percentile 25.000 =   22.219
sockperf: ---> <MIN> observation =   13.938
"""  # noqa: E501


class CrosscheckTests(SynchronousTestCase):
    """Both tools' figures are read, summarised and compared."""

    def test_sockperf(self) -> None:
        """The percentiles, mean and count are read from sockperf's output."""
        self.assertEqual(
            parseSockperf(SOCKPERF), Figures(24.049, 80.118, 132.239, 34.634, 73415)
        )

    def test_sockperfReceivedNothing(self) -> None:
        """Without statistics, the error quotes sockperf's last line."""
        error = self.assertRaises(
            ValueError,
            parseSockperf,
            "sockperf: No messages were received from the server."
            " Is the server down?\n",
        )
        self.assertEqual(
            str(error),
            "sockperf gave no statistics: sockperf: No messages were received"
            " from the server. Is the server down?",
        )

    def test_bench(self) -> None:
        """The bench's JSON gives the same four figures and its echo count."""
        report = {"p50_us": 30, "p90_us": 40, "p99_us": 90, "mean_us": 33.5}
        self.assertEqual(
            parseBench(json.dumps(report | {"echoes": 1000})),
            Figures(30.0, 40.0, 90.0, 33.5, 1000),
        )

    def test_medianAndDifference(self) -> None:
        """Medians figure by figure; the difference is the bench's, in percent."""
        runs = [
            Figures(10, 20, 30, 12, 5),
            Figures(14, 26, 90, 15, 5),
            Figures(12, 22, 40, 13, 5),
        ]
        self.assertEqual(medianFigures(runs), Figures(12, 22, 40, 13, 15))
        self.assertEqual(difference(110.0, 100.0), 10.0)
        self.assertEqual(difference(95.0, 100.0), -5.0)

    def test_table(self) -> None:
        """One line per scenario and figure, the differences signed."""
        lines = tableLines(
            {
                "idle": {
                    "sockperf": Figures(20, 30, 40, 25, 1),
                    "sockperf-epoll": Figures(25, 30, 50, 25, 1),
                    "bench": Figures(22, 30, 38, 25, 1),
                }
            }
        )
        self.assertEqual(len(lines), 5)
        self.assertRegex(
            lines[1], r"^idle +p50 +20\.0 +25\.0 +22\.0 +\+10\.0% +-12\.0%$"
        )
        self.assertRegex(lines[3], r"^idle +p99 +40\.0 +50\.0 +38\.0 +-5\.0% +-24\.0%$")


class StealLinesTests(SynchronousTestCase):
    """The host's steal during each tool's runs, per scenario."""

    def test_lines(self) -> None:
        """Median and most per tool; a scenario without readings says nothing."""
        steal: dict[str, dict[str, list[float]]] = {
            "idle": {"sockperf": [0.0, 2.0, 1.0], "bench": [4.0]},
            "busy": {"sockperf": [], "bench": []},
        }
        self.assertEqual(
            stealLines(steal),
            [
                "host steal, idle: sockperf 1.0 % (at most 2.0 %),"
                " bench 4.0 % (at most 4.0 %)"
            ],
        )
