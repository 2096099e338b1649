"""Tests for L{echotwist.plugincache}: when twistd will not rewrite a cache.

Directories are made in the test's temporary directory, with modification
times set explicitly.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from echotwist.plugincache import isFresh, report


class FreshnessTests(SynchronousTestCase):
    """L{isFresh} judges a cache as C{twisted.plugin.getCache} does."""

    def directory(self, plugins: dict[str, int], cache: int | None) -> FilePath[str]:
        """A directory of plugin modules and maybe a cache, with these mtimes."""
        root = Path(self.mktemp())
        root.mkdir()
        for name, mtime in plugins.items():
            (root / name).write_text("")
            os.utime(root / name, (mtime, mtime))
        if cache is not None:
            (root / "dropin.cache").write_bytes(b"")
            os.utime(root / "dropin.cache", (cache, cache))
        return FilePath(str(root))

    def test_fresh(self) -> None:
        """A cache newer than every module is used as it is."""
        self.assertTrue(isFresh(self.directory({"a.py": 100, "b.py": 200}, 300)))

    def test_stale(self) -> None:
        """A module as new as the cache, or newer, makes twistd rewrite it."""
        self.assertFalse(isFresh(self.directory({"a.py": 100, "b.py": 300}, 300)))
        self.assertFalse(isFresh(self.directory({"a.py": 400}, 300)))

    def test_missing(self) -> None:
        """No cache at all: twistd writes one."""
        self.assertFalse(isFresh(self.directory({"a.py": 100}, None)))

    def test_report(self) -> None:
        """One line per cache: fresh ones on out, stale ones as errors, exit 1."""
        fresh = self.directory({"a.py": 100}, 200)
        stale = self.directory({"a.py": 300}, 200)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(report([fresh, stale], out, err), 1)
        self.assertEqual(out.getvalue(), f"{fresh.path}/dropin.cache: up to date\n")
        self.assertEqual(
            err.getvalue(),
            f"echotwist.plugincache: error: cannot write {stale.path}/dropin.cache:"
            f" run this as the user who may write {stale.path} (who installed"
            " there)\n",
        )
        self.assertEqual(report([fresh], io.StringIO(), io.StringIO()), 0)
