"""Tests for L{echotwist.internals.speedups}: which echo path a process runs.

What the C code does is tested beside the Python code it copies, against
both (C{test_writepath}, C{test_fastepoll}).
"""

from __future__ import annotations

import importlib
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.internals.speedups import (
    PURE_PYTHON,
    builtSpeedups,
    describeEchoPath,
    loadSpeedups,
)


def speedupsBuildHere() -> bool:
    """Whether setup.py builds the C speedups here: on Linux (epoll), with
    the C compiler this Python builds extensions with installed.
    """
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return sys.platform.startswith("linux") and shutil.which(compiler) is not None


class LoadSpeedupsTests(SynchronousTestCase):
    """The extension is used when built, unless the environment says not to."""

    def test_turnedOff(self) -> None:
        """C{ECHOTWIST_PURE_PYTHON=1} keeps the Python path."""
        self.assertIsNone(loadSpeedups({PURE_PYTHON: "1"}))

    def test_emptyOrZeroIsNotOff(self) -> None:
        """An empty or C{0} value is the same as none."""
        unset = loadSpeedups({})
        self.assertIs(loadSpeedups({PURE_PYTHON: ""}), unset)
        self.assertIs(loadSpeedups({PURE_PYTHON: "0"}), unset)

    def test_compilesHere(self) -> None:
        """Where it can be built (Linux, a C compiler), the extension compiles:
        setup.py builds it as optional, so a broken build would otherwise
        pass unseen, as a Python path that runs instead.
        """
        if not speedupsBuildHere():
            raise SkipTest("not Linux, or no C compiler: the Python path runs")
        # setuptools is the build backend (and in the test extra); here the
        # extension is required, not optional, so a compile error raises.
        # Imported by name: whether mypy has its types depends on its version.
        setuptools = importlib.import_module("setuptools")
        directory = Path(self.mktemp())
        source = Path(__file__).resolve().parents[1] / "internals" / "_speedups.c"
        extension = setuptools.Extension("_speedups", [str(source)])
        distribution = setuptools.Distribution(
            {"name": "probe", "ext_modules": [extension]}
        )
        command = distribution.get_command_obj("build_ext")
        command.build_lib = str(directory / "lib")
        command.build_temp = str(directory / "temp")
        distribution.run_command("build_ext")
        self.assertEqual(len(list((directory / "lib").glob("_speedups*"))), 1)


class DescribeEchoPathTests(SynchronousTestCase):
    """The server's log says which echo path runs, and why."""

    def test_inC(self) -> None:
        """With the extension: in C."""
        fake = ModuleType("_speedups")
        self.assertEqual(
            describeEchoPath(fake, {}), "in C (echotwist.internals._speedups)"
        )

    def test_turnedOff(self) -> None:
        """Turned off by the environment: it says so."""
        self.assertEqual(
            describeEchoPath(None, {PURE_PYTHON: "1"}),
            "in Python (ECHOTWIST_PURE_PYTHON is set)",
        )

    def test_notBuilt(self) -> None:
        """Where the extension is missing (and not turned off): not built."""
        if loadSpeedups({}) is not None:
            raise SkipTest("the C speedups are built here")
        self.assertEqual(
            describeEchoPath(None, {}), "in Python (the C speedups are not built)"
        )

    def test_thisProcess(self) -> None:
        """The module's own choice is the one described by default."""
        self.assertEqual(describeEchoPath(), describeEchoPath(builtSpeedups))
