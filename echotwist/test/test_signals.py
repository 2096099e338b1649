"""Tests for L{echotwist.internals.signals}: taking stop signals over from the reactor.

The Twisted internal it relies on (a running reactor installs its
C{sigTerm} and C{sigInt} attributes as the SIGTERM and SIGINT handlers)
is pinned end to end by
C{echotwist.test.e2e.test_hardening.test_reactorStopSignals}.
"""

from __future__ import annotations

import signal
from types import FrameType

from twisted.internet.base import ReactorBase
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.signals import Handler, takeOverStopSignals


def ours(number: int, frame: FrameType | None) -> None:
    """A signal handler that does nothing."""


class TakeOverStopSignalsTests(SynchronousTestCase):
    """L{takeOverStopSignals} installs the handler now and for when the reactor runs."""

    def test_installsNowAndLater(self) -> None:
        """The handler is installed at once and becomes the reactor's
        C{sigTerm} and C{sigInt}.
        """
        installed: list[tuple[int, Handler]] = []
        reactor = MemoryReactorClock()
        takeOverStopSignals(
            reactor, ours, lambda number, handler: installed.append((number, handler))
        )
        self.assertEqual(
            sorted(installed), sorted([(signal.SIGTERM, ours), (signal.SIGINT, ours)])
        )
        self.assertIs(reactor.sigTerm, ours)  # type: ignore[attr-defined]
        self.assertIs(reactor.sigInt, ours)  # type: ignore[attr-defined]

    def test_reactorHasSignalMethods(self) -> None:
        """Twisted's reactors still have the methods being replaced."""
        self.assertTrue(callable(ReactorBase.sigTerm))
        self.assertTrue(callable(ReactorBase.sigInt))
