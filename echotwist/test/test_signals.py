"""Tests for L{echotwist.internals.signals}: taking SIGTERM over from the reactor.

The Twisted internal it relies on (a running reactor installs its
C{sigTerm} attribute as the SIGTERM handler) is pinned end to end by
C{echotwist.test.e2e.test_hardening.test_reactorSigTerm}.
"""

from __future__ import annotations

import signal
from types import FrameType

from twisted.internet.base import ReactorBase
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.signals import Handler, takeOverSigTerm


def ours(number: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that does nothing."""


class TakeOverSigTermTests(SynchronousTestCase):
    """L{takeOverSigTerm} installs the handler now and for when the reactor runs."""

    def test_installsNowAndLater(self) -> None:
        """The handler is installed at once and becomes the reactor's C{sigTerm}."""
        installed: list[tuple[int, Handler]] = []
        reactor = MemoryReactorClock()
        takeOverSigTerm(
            reactor, ours, lambda number, handler: installed.append((number, handler))
        )
        self.assertEqual(installed, [(signal.SIGTERM, ours)])
        self.assertIs(reactor.sigTerm, ours)  # type: ignore[attr-defined]

    def test_reactorHasSigTerm(self) -> None:
        """Twisted's reactors still have the C{sigTerm} method being replaced."""
        self.assertTrue(callable(ReactorBase.sigTerm))
