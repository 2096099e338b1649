"""Tests for L{echotwist.server.pidfile} and its use by C{twistd echo}'s options.

The file system is a table of paths and what may be done to them.
"""

from __future__ import annotations

import io
import os

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echotwist.server.pidfile import pidFileProblem
from echotwist.tap import Options


class FakeFiles:
    """Directories and files, each writable or not."""

    def __init__(self, directories: dict[str, bool], files: dict[str, bool]) -> None:
        self.directories = directories
        self.files = files

    def problem(self, path: str) -> str | None:
        """L{pidFileProblem} for C{path} over these paths."""
        return pidFileProblem(
            path,
            isDirectory=lambda p: p in self.directories,
            exists=lambda p: p in self.files or p in self.directories,
            access=lambda p, mode: {**self.directories, **self.files}[p],
        )


HINT = (
    " (start it in a directory you can write, or give twistd --pidfile=PATH"
    " before echo, or --pidfile= for none)"
)


class PidFileTests(SynchronousTestCase):
    """L{pidFileProblem}: can twistd write (and later remove) its pid file?"""

    def test_none(self) -> None:
        """C{--pidfile=}: no pid file, no problem."""
        self.assertIsNone(FakeFiles({}, {}).problem(""))

    def test_writable(self) -> None:
        """A writable directory, new file or writable old one: fine."""
        files = FakeFiles({"/run/echo": True}, {"/run/echo/old.pid": True})
        self.assertIsNone(files.problem("/run/echo/twistd.pid"))
        self.assertIsNone(files.problem("/run/echo/old.pid"))

    def test_unwritableDirectory(self) -> None:
        """A directory the user cannot write (or on a read-only file system)."""
        self.assertEqual(
            FakeFiles({"/": False}, {}).problem("/twistd.pid"),
            "cannot write twistd's pid file /twistd.pid: / is not writable" + HINT,
        )

    def test_unwritableFile(self) -> None:
        """An existing pid file the user cannot write."""
        files = FakeFiles({"/srv": True}, {"/srv/twistd.pid": False})
        self.assertEqual(
            files.problem("/srv/twistd.pid"),
            "cannot write twistd's pid file /srv/twistd.pid: /srv/twistd.pid is"
            " not writable" + HINT,
        )

    def test_noDirectory(self) -> None:
        """A pid file in a directory that is not there."""
        self.assertEqual(
            FakeFiles({}, {}).problem("/nowhere/twistd.pid"),
            "cannot write twistd's pid file /nowhere/twistd.pid: there is no"
            " directory /nowhere" + HINT,
        )

    def test_relative(self) -> None:
        """A relative path is taken from the current directory, as twistd does."""
        cwd = os.getcwd()
        problem = FakeFiles({cwd: False}, {}).problem("twistd.pid")
        self.assertEqual(
            problem,
            f"cannot write twistd's pid file {os.path.join(cwd, 'twistd.pid')}:"
            f" {cwd} is not writable" + HINT,
        )


class TwistdOptions(usage.Options):
    """Stands for twistd's own options: C{--pidfile}, and C{echo} after them."""

    optParameters = [["pidfile", None, "twistd.pid", ""]]

    def __init__(self, errors: io.StringIO) -> None:
        usage.Options.__init__(self)
        self.subCommands = [
            [
                "echo",
                None,
                lambda: Options(reactor=MemoryReactorClock(), errorStream=errors),
                "",
            ]
        ]


class OptionsPidFileTests(SynchronousTestCase):
    """C{twistd --pidfile=... echo}: an unwritable pid file ends in one line."""

    def parse(self, *argv: str) -> tuple[int | str | None, str]:
        """Parse C{argv} as twistd does; return the exit status and stderr."""
        errors = io.StringIO()
        try:
            TwistdOptions(errors).parseOptions(list(argv))
        except SystemExit as e:
            return e.code, errors.getvalue()
        return None, errors.getvalue()

    def test_unwritable(self) -> None:
        """A pid file in a missing directory: one line and exit status 1."""
        path = os.path.join(self.mktemp(), "twistd.pid")
        status, errors = self.parse(f"--pidfile={path}", "echo", "--port", "0")
        self.assertEqual(status, 1)
        self.assertEqual(
            errors,
            f"twistd echo: cannot write twistd's pid file {os.path.abspath(path)}:"
            f" there is no directory {os.path.abspath(os.path.dirname(path))}"
            + HINT
            + "\n",
        )

    def test_noPidFile(self) -> None:
        """C{--pidfile=} (none): the options parse."""
        self.assertEqual(self.parse("--pidfile=", "echo", "--port", "0"), (None, ""))
