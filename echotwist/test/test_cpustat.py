"""Tests for L{echotwist.bench.cpustat}: the host's steal from /proc/stat."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from echotwist.bench.cpustat import (
    CpuTimes,
    parseCpuTimes,
    readCpuTimes,
    stealPercent,
)

# The head of a /proc/stat: the cpu line (user nice system idle iowait irq
# softirq steal guest guest_nice), then one line per CPU.
STAT = """cpu  100 5 40 800 10 1 4 40 30 0
cpu0 50 2 20 400 5 0 2 20 15 0
intr 12345 0 0
"""


class ParseTests(SynchronousTestCase):
    """The cpu line's figures: all of them, and the steal."""

    def test_cpuLine(self) -> None:
        """The total is user to steal (guest time is inside user); steal is
        the eighth figure.
        """
        self.assertEqual(parseCpuTimes(STAT), CpuTimes(1000, 40))

    def test_olderKernel(self) -> None:
        """Fewer figures (no steal yet): the missing ones count as 0."""
        self.assertEqual(parseCpuTimes("cpu 1 2 3 4\n"), CpuTimes(10, 0))

    def test_noCpuLine(self) -> None:
        """Text without a cpu line is refused."""
        self.assertRaises(ValueError, parseCpuTimes, "cpu0 1 2 3\n")


class StealPercentTests(SynchronousTestCase):
    """The share stolen between two readings."""

    def test_share(self) -> None:
        """50 of 1,000 ticks stolen: 5 %."""
        self.assertEqual(stealPercent(CpuTimes(9000, 10), CpuTimes(10000, 60)), 5.0)

    def test_readingMissing(self) -> None:
        """Either reading missing (not Linux): unknown."""
        self.assertIsNone(stealPercent(None, CpuTimes(5, 1)))
        self.assertIsNone(stealPercent(CpuTimes(5, 1), None))

    def test_noTimePassed(self) -> None:
        """No ticks between the readings: unknown."""
        self.assertIsNone(stealPercent(CpuTimes(5, 1), CpuTimes(5, 1)))


class ReadTests(SynchronousTestCase):
    """Reading the file: its figures, or None where it cannot be read."""

    def test_reads(self) -> None:
        """A readable file gives its cpu line."""
        path = Path(self.mktemp())
        path.write_text(STAT, encoding="ascii")
        self.assertEqual(readCpuTimes(path), CpuTimes(1000, 40))

    def test_missing(self) -> None:
        """A missing file (not Linux): None."""
        self.assertIsNone(readCpuTimes(Path(self.mktemp())))

    def test_garbled(self) -> None:
        """A file without a cpu line: None."""
        path = Path(self.mktemp())
        path.write_text("nothing here\n", encoding="ascii")
        self.assertIsNone(readCpuTimes(path))
