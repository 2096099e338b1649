"""End-to-end tests of the errors the README promises as one line.

Each runs the real command: the error is one line on standard error that
says what to do, the exit status is the documented one, and no traceback
or usage text comes before it.  A missing extra is simulated with
L{withoutModules} (its import fails as if it were not installed).
"""

from __future__ import annotations

import subprocess

from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.uvloopreactor import MISSING_UVLOOP
from echotwist.test.e2e.harness import TWISTD, runCommand, withoutModules


def assertOneLine(
    test: SynchronousTestCase,
    result: subprocess.CompletedProcess[str],
    status: int,
    line: str,
    stdout: str = "",
) -> None:
    """C{result} exited with C{status}, printing exactly C{line} on stderr."""
    test.assertEqual(
        (result.returncode, result.stderr, result.stdout),
        (status, line + "\n", stdout),
    )


class MissingReactorTests(SynchronousTestCase):
    """C{twistd -r uvloop} without uvloop installed."""

    def test_uvloop(self) -> None:
        """One line naming the extra and exit status 2, not twistd's usage text."""
        result = runCommand(
            withoutModules(
                ["uvloop"],
                TWISTD,
                "-n",
                "--pidfile=",
                "-r",
                "uvloop",
                "echo",
                "--port",
                "tcp:0:interface=127.0.0.1",
            )
        )
        assertOneLine(self, result, 2, MISSING_UVLOOP)
