"""Tests for the pure parts of the open-loop comparison, C{benchmarks/openloop.py}.

Nothing here starts a server, a generator or a compiler: reading each
generator's output and the table are plain code.  The module comes from
the source tree; an installed C{echotwist.test} skips these tests.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

try:
    from benchmarks.openloop import Run, parseBench, parseLoadgen, tableLines
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"

# The output of a real `build/loadgen -m openloop -r 2000 -c 5 -s 64 -d 0.5 -w 0.2` run.
LOADGEN = """\
measuring
done
{"mode":"openloop","conns":5,"size":64,"seconds":0.500,"rate":2000.0,"sent":1000,"held":4,"overflow":0,"echoes":1000,"echoes_per_s":2000.0,"schedule_delay":{"p50_us":0.2,"p90_us":0.5,"p99_us":14.8,"p999_us":112.1,"max_us":131.6},"send_delay":{"p50_us":0.2,"p99_us":34.1},"latency":{"p50_us":23.2,"p99_us":120.9},"errors":0}
"""

# The output of a real `python -m echotwist.bench --json --rate 2000 -c 5 -s 64
# -d 0.5 -w 0.2 127.0.0.1:PORT` run.
BENCH = """\
{"started": "2026-12-03T20:27:00.666Z", "target": {"host": "127.0.0.1", "port": 43855, "address": "127.0.0.1"}, "parameters": {"mode": "pingpong", "connections": 5, "size": 64, "duration_s": 0.5, "warmup_s": 0.2, "pipeline": 1, "rate": 2000.0, "processes": 1, "sources": null, "timeout_s": 5.0, "spin_s": 0.0003, "tls": false, "udp": false}, "mode": "pingpong", "connections": 5, "size": 64, "pipeline": 1, "processes": 1, "seconds": 0.500088, "echoes": 1000, "echoes_per_s": 1999.6, "MB_per_s": 0.128, "p50_us": 133, "p90_us": 284, "p99_us": 565, "p999_us": 2617, "p9999_us": 3003, "max_us": 3003, "mean_us": 170.3, "stdev_us": 168.5, "errors": 0, "error_kinds": {}, "target_rate": 2000.0, "achieved_rate": 1999.6, "uncorrected": {"p50_us": 124, "p90_us": 273, "p99_us": 526, "p999_us": 2607, "p9999_us": 2995, "max_us": 2995, "mean_us": 158.9, "stdev_us": 167.4}, "send_delay": {"p50_us": 9, "p90_us": 12, "p99_us": 33, "p999_us": 363, "p9999_us": 515, "max_us": 515, "mean_us": 10.9, "stdev_us": 20.8}, "schedule_delay": {"p50_us": 9, "p90_us": 12, "p99_us": 30, "p999_us": 115, "p9999_us": 363, "max_us": 363, "mean_us": 10.3, "stdev_us": 13.1}, "held_sends": 2, "machine": {"cpus": 2, "kernel": "Linux 6.18.44-fc-v1147", "python": "CPython 3.11.7", "reactor": "FastEPollReactor", "steal_percent": 0.6}}
"""  # noqa: E501


class OpenLoopTests(SynchronousTestCase):
    """Both generators' schedule delays are read and tabled."""

    def test_loadgen(self) -> None:
        """The schedule delay, echo rate, held sends per echo and errors."""
        self.assertEqual(
            parseLoadgen(LOADGEN), Run(0.2, 0.5, 14.8, 112.1, 2000.0, 0.4, 0)
        )

    def test_bench(self) -> None:
        """The bench's JSON gives the same figures: its schedule delay, not
        its latency or send delay.
        """
        self.assertEqual(parseBench(BENCH), Run(9, 12, 30, 115, 1999.6, 0.2, 0))

    def test_noResult(self) -> None:
        """Output without a report is an error the caller can name."""
        self.assertRaises(ValueError, parseLoadgen, "loadgen: connect: refused\n")
        self.assertRaises(ValueError, parseBench, "")

    def test_table(self) -> None:
        """Medians over the rounds per generator, then each round's p99 and steal."""
        bench = [
            Run(5, 20, 80, 800, 50000, 10.0, 0, 0.2),
            Run(7, 30, 120, 900, 49000, 30.0, 2, None),
            Run(6, 25, 90, 850, 50000, 20.0, 0, 1.5),
        ]
        loadgen = [Run(0.2, 1, 20, 60, 50000, 0.5, 0, 0.1)]
        self.assertEqual(
            tableLines({"bench": bench, "loadgen": loadgen, "other": []}),
            [
                "generator     p50 us    p90 us    p99 us   p999 us  echoes/s   held",
                "bench            6.0      25.0      90.0     850.0     50000  20.0%",
                "loadgen          0.2       1.0      20.0      60.0     50000   0.5%",
                "other      no round gave a result",
                "each round's p99 (host steal):",
                "  bench    80 us (0.2 %), 120 us (steal ?), 90 us (1.5 %)",
                "  loadgen  20 us (0.1 %)",
                "  other    ",
            ],
        )
