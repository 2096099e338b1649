"""Tests for the pure parts of C{benchmarks/instructions.py}.

Nothing here runs valgrind: the profile parsing and the command line are
plain code.  The module comes from the source tree (as in
L{echotwist.test.test_benchmark_run}); an installed C{echotwist.test}
skips these tests.
"""

from __future__ import annotations

import contextlib
import io

from twisted.trial.unittest import SynchronousTestCase

try:
    from benchmarks import instructions
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"


class TotalInstructionsTests(SynchronousTestCase):
    """The total is read from a callgrind profile's summary or totals line."""

    def test_summary(self) -> None:
        """A dump's C{summary:} line gives the total."""
        profile = "version: 1\ncmd: twistd\nevents: Ir\nsummary: 123456789\n"
        self.assertEqual(instructions.totalInstructions(profile), 123456789)

    def test_totals(self) -> None:
        """Without a summary, the C{totals:} line gives it."""
        profile = "events: Ir\nfn=(1) main\n5 10\ntotals: 42\n"
        self.assertEqual(instructions.totalInstructions(profile), 42)

    def test_missing(self) -> None:
        """A profile with no total is an error, not zero."""
        with self.assertRaises(ValueError):
            instructions.totalInstructions("events: Ir\n")


class ArgumentTests(SynchronousTestCase):
    """The command line picks servers and the workload."""

    def test_defaults(self) -> None:
        """One connection of 64 bytes, uvloop first as the yardstick."""
        arguments = instructions.parseArguments(["--loadgen", "lg"])
        self.assertEqual((arguments.conns, arguments.size), (1, 64))
        self.assertEqual(arguments.servers.split(",")[0], "uvloop")

    def test_unknownServer(self) -> None:
        """An unknown server name is refused with one line and status 2."""
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            status = instructions.main(["--loadgen", "lg", "--servers", "nginx"])
        self.assertEqual(status, 2)
        self.assertEqual(stderr.getvalue(), "instructions.py: unknown servers: nginx\n")
