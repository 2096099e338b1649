"""Tests for L{echotwist.server.defaultreactor}: the reactor chosen without C{-r}.

The end-to-end check (the real C{twistd -n echo} without C{-r} runs on the
fast epoll reactor, and C{-r epoll} on Twisted's) is
L{echotwist.test.e2e.test_server.DefaultReactorTests}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.server.defaultreactor import defaultReactorName, installDefaultReactor


class DefaultReactorTests(SynchronousTestCase):
    """Without a reactor installed, the fastest one is."""

    def test_linux(self) -> None:
        """On Linux, the fast epoll reactor."""
        self.assertEqual(defaultReactorName("linux"), "fastepoll")

    def test_elsewhere(self) -> None:
        """Elsewhere, Twisted's default."""
        self.assertIsNone(defaultReactorName("darwin"))
        self.assertIsNone(defaultReactorName("win32"))

    def test_installsWhenNone(self) -> None:
        """No reactor installed: the fastest is installed."""
        installed: list[str] = []
        name = installDefaultReactor(set(), "linux", installed.append)
        self.assertEqual((name, installed), ("fastepoll", ["fastepoll"]))

    def test_keepsInstalled(self) -> None:
        """A reactor already installed (twistd -r, a test's) is kept."""
        installed: list[str] = []
        name = installDefaultReactor(
            {"twisted.internet.reactor"}, "linux", installed.append
        )
        self.assertEqual((name, installed), (None, []))

    def test_nothingElsewhere(self) -> None:
        """Where Twisted's default is the fastest, nothing is installed."""
        installed: list[str] = []
        self.assertIsNone(installDefaultReactor(set(), "darwin", installed.append))
        self.assertEqual(installed, [])
