"""Tests for the pure parts of the open-loop comparison, C{benchmarks/openloop.py}.

Nothing here starts a server, a generator or a compiler: reading each
generator's output and the table are plain code.  The module comes from
the source tree; an installed C{echotwist.test} skips these tests.
"""

from __future__ import annotations

import json
from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

try:
    from benchmarks.openloop import Run, parseBench, parseLoadgen, tableLines
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"

# The last lines of a real `build/loadgen -m openloop -r 50000 -c 50 -s 512` run.
LOADGEN = """\
measuring
done
{"mode":"openloop","conns":50,"size":512,"seconds":5.000,"rate":50000.0,"sends":250000,"sends_per_s":50000.0,"held":1100,"echoes":249999,"schedule_delay":{"p50_us":0.2,"p90_us":0.9,"p99_us":24.1,"p999_us":68.8,"max_us":638.3},"send_delay":{"p50_us":0.2,"p99_us":34.3},"latency":{"p50_us":27.3,"p99_us":194.9},"errors":0}
"""


class OpenLoopTests(SynchronousTestCase):
    """Both generators' schedule delays are read and tabled."""

    def test_loadgen(self) -> None:
        """The schedule delay, rate and held sends per echo come from the JSON line."""
        run = parseLoadgen(LOADGEN)
        self.assertEqual(
            replace(run, heldPercent=round(run.heldPercent, 4)),
            Run(0.2, 0.9, 24.1, 68.8, 50000.0, 0.44, None),
        )

    def test_bench(self) -> None:
        """The bench's JSON gives the same figures."""
        report = {
            "echoes": 4000,
            "echoes_per_s": 49990.5,
            "held_sends": 1000,
            "schedule_delay": {"p50_us": 5, "p90_us": 24, "p99_us": 89, "p999_us": 819},
        }
        self.assertEqual(
            parseBench(json.dumps(report)),
            Run(5.0, 24.0, 89.0, 819.0, 49990.5, 25.0, None),
        )

    def test_table(self) -> None:
        """Medians over the rounds per generator, then each round's p99 and steal."""
        bench = [
            Run(5, 20, 80, 800, 50000, 10.0, 0.2),
            Run(7, 30, 120, 900, 49000, 30.0, None),
            Run(6, 25, 90, 850, 50000, 20.0, 1.5),
        ]
        loadgen = [Run(0.2, 1, 20, 60, 50000, 0.5, 0.1)]
        self.assertEqual(
            tableLines({"bench": bench, "loadgen": loadgen}),
            [
                "generator     p50 us    p90 us    p99 us   p999 us   sends/s   held",
                "bench            6.0      25.0      90.0     850.0     50000  20.0%",
                "loadgen          0.2       1.0      20.0      60.0     50000   0.5%",
                "each round's p99 (host steal):",
                "  bench    80 us (0.2 %), 120 us (steal ?), 90 us (1.5 %)",
                "  loadgen  20 us (0.1 %)",
            ],
        )
