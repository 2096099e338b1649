"""Tests for the arithmetic of C{benchmarks/experiments/clockgaps.py}.

The clock loop itself is not run here (it reads real time); what a run's
gaps come to is plain code.  The module comes from the source tree; an
installed C{echotwist.test} skips these tests.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.commandline import usageError

try:
    from benchmarks.experiments import clockgaps
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"


class SummarizeTests(SynchronousTestCase):
    """Gaps become a rate, a longest, a share of time and late send slots."""

    def test_lateSlots(self) -> None:
        """A 250 us gap makes 10 of the 20 us slots late by more than 50 us."""
        summary = clockgaps.summarize(
            [250e-6, 30e-6], seconds=1.0, slot=20e-6, late=50e-6
        )
        self.assertEqual(summary.perSecond, 1.0)
        self.assertAlmostEqual(summary.longest, 250e-6)
        self.assertAlmostEqual(summary.timeShare, 250e-6)
        # 10 slots of the 50,000 in a second.
        self.assertAlmostEqual(summary.lateSlots, 10 / 50_000)

    def test_noGaps(self) -> None:
        """No gap at all: nothing late, nothing longest."""
        summary = clockgaps.summarize([], seconds=2.0, slot=20e-6, late=50e-6)
        self.assertEqual(
            (summary.perSecond, summary.longest, summary.lateSlots), (0.0, 0.0, 0.0)
        )

    def test_badArguments(self) -> None:
        """A run of no time, or a slot of none, is refused in one line."""
        for argv in (["--seconds", "0"], ["--slot-us", "-1"]):
            with self.subTest(argv=argv):
                code, stderr = usageError(self, clockgaps.main, argv)
                self.assertEqual(code, 2)
                self.assertIn("must be more than 0", stderr)
