"""End-to-end: what an install gives, and what it ships.

The sdist and the wheel are built from a copy of this tree (without build
isolation: the C{test} extra brings C{build} and setuptools); the console
scripts are those of this environment's install; the plugin cache is
checked in a C{twisted/plugins} directory of the test's own.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from echotwist import __version__, versionText
from echotwist.test.e2e.harness import (
    PROJECT_ROOT,
    childEnvironment,
    runCommand,
    startServer,
    twistdCommand,
)

# Long enough for two builds on a slow machine.
BUILD_WAIT = 300.0

# What the copy of the tree leaves out: environments, caches, results.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "_trial_temp*",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "dropin.cache",
)


class PackagingTests(SynchronousTestCase):
    """The sdist and the wheel carry the licence, the docs and the scripts."""

    def test_sdistAndWheel(self) -> None:
        """LICENSE in both; docs/ and contrib/ in the sdist; console scripts and
        the plugin in the wheel, built from the sdist.
        """
        work = Path(self.mktemp()).resolve()
        source = work / "source"
        shutil.copytree(PROJECT_ROOT, source, ignore=NOT_SOURCE)
        result = runCommand(
            [
                sys.executable,
                "-m",
                "build",
                "--no-isolation",
                "--outdir",
                str(work / "dist"),
                str(source),
            ],
            timeout=BUILD_WAIT,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        [sdist] = (work / "dist").glob("*.tar.gz")
        [wheel] = (work / "dist").glob("*.whl")
        self.assertEqual(sdist.name, f"echotwist-{__version__}.tar.gz")
        with tarfile.open(sdist) as archive:
            inSdist = {
                name.split("/", 1)[1] for name in archive.getnames() if "/" in name
            }
        for name in (
            "LICENSE",
            "README.md",
            "docs/hardening.md",
            "docs/architecture.md",
            "contrib/systemd/echotwist.service",
            "twisted/plugins/echotwist_plugin.py",
        ):
            self.assertIn(name, inSdist)
        self.assertFalse([name for name in inSdist if name.endswith("dropin.cache")])
        with zipfile.ZipFile(wheel) as archive:
            inWheel = set(archive.namelist())
            info = f"echotwist-{__version__}.dist-info"
            entryPoints = archive.read(f"{info}/entry_points.txt").decode()
            metadata = archive.read(f"{info}/METADATA").decode()
        self.assertTrue(
            [name for name in inWheel if name.startswith(info) and "LICENSE" in name]
        )
        self.assertIn("twisted/plugins/echotwist_plugin.py", inWheel)
        self.assertNotIn("twisted/plugins/__init__.py", inWheel)
        self.assertIn("echotwist-client = echotwist.client.cli:run", entryPoints)
        self.assertIn("echotwist-bench = echotwist.bench.__main__:main", entryPoints)
        self.assertIn(f"Version: {__version__}\n", metadata)
        self.assertIn("Provides-Extra: plot", metadata)


def script(name: str) -> str:
    """The console script C{name} installed beside this interpreter."""
    return str(Path(sys.executable).parent / name)


class InstalledTests(SynchronousTestCase):
    """The install the tests run in: its version and console scripts."""

    def test_version(self) -> None:
        """C{twistd echo --version} prints echotwist's version, the installed one."""
        self.assertEqual(version("echotwist"), __version__)
        result = runCommand(twistdCommand("echo", "--version"))
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, versionText() + "\n", ""),
        )

    def test_clientScript(self) -> None:
        """C{echotwist-client} is C{python -m echotwist.client}."""
        server = startServer(self)
        result = runCommand(
            [script("echotwist-client"), "127.0.0.1", "hi", str(server.port)]
        )
        self.assertEqual((result.returncode, result.stdout), (0, "Received: hi\n"))

    def test_benchScript(self) -> None:
        """C{echotwist-bench} is C{python -m echotwist.bench}."""
        result = runCommand([script("echotwist-bench"), "--help"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--connections", result.stdout)


# A plugin of the test's own, so that its directory is scanned (a module
# name twistd has seen elsewhere would be skipped).
PROBE_PLUGIN = (
    "from twisted.application.reactors import Reactor\n"
    "probe = Reactor('echotwist-probe', 'echotwist.nonexistent', 'a probe')\n"
)


class PluginCacheTests(SynchronousTestCase):
    """C{python -m echotwist.plugincache}: twistd then never rewrites the cache.

    When twistd would rewrite it (stale or missing) and cannot (a read-only
    environment), it logs C{Unable to write to plugin cache} at every start.
    """

    def pluginDirectory(self) -> tuple[dict[str, str], Path]:
        """An environment whose path has a plugin directory of the test's own."""
        root = Path(self.mktemp()).resolve()
        plugins = root / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        (plugins / "echotwist_probe_plugin.py").write_text(PROBE_PLUGIN)
        env = childEnvironment()
        env["PYTHONPATH"] = os.pathsep.join([str(root), env["PYTHONPATH"]])
        return env, plugins / "dropin.cache"

    def test_twistdWritesStaleCache(self) -> None:
        """Without it, the first twistd writes the cache (or tries to)."""
        env, cache = self.pluginDirectory()
        result = runCommand(twistdCommand("echo", "--version"), env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(cache.is_file())

    def test_noRewriteAfter(self) -> None:
        """After it, twistd starts without writing any cache."""
        env, cache = self.pluginDirectory()
        written = runCommand([sys.executable, "-m", "echotwist.plugincache"], env=env)
        self.assertEqual((written.returncode, written.stderr), (0, ""))
        self.assertIn(f"{cache}: up to date\n", written.stdout)
        before = cache.stat()
        result = runCommand(twistdCommand("echo", "--version"), env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        after = cache.stat()
        self.assertEqual(
            (after.st_ino, after.st_mtime_ns), (before.st_ino, before.st_mtime_ns)
        )

    def test_cannotWrite(self) -> None:
        """A cache that cannot be written: one line and exit status 1."""
        env, cache = self.pluginDirectory()
        # A directory in the way fails the write even for root, as a
        # read-only file system would.
        (cache / "in-the-way").mkdir(parents=True)
        result = runCommand([sys.executable, "-m", "echotwist.plugincache"], env=env)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr,
            f"echotwist.plugincache: error: cannot write {cache}: run this as the"
            f" user who may write {cache.parent} (who installed there)\n",
        )
