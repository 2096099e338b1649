"""Tests for L{echotwist.internals.uvloopreactor}: child processes under uvloop.

Unit tests only, with fakes for the reactor and the signal functions; the
end-to-end tests of C{--workers} under C{twistd -r uvloop}
(L{echotwist.test.test_e2e_workers_native}) show a real supervisor
hearing its workers exit.
"""

from __future__ import annotations

import io
import signal
from collections.abc import Callable
from types import FrameType, ModuleType

from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist.internals.uvloopreactor import (
    MISSING_UVLOOP,
    ReapOnSIGCHLD,
    importUvloop,
    takeSIGCHLD,
)


@implementer(IReactorFromThreads)
class FakeReactor:
    """Records what is asked to run from the reactor's thread."""

    def __init__(self) -> None:
        self.calls: list[Callable[..., object]] = []

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None:
        """Record C{callable}; it runs only if the test runs it."""
        self.calls.append(callable)


def twistedHandler(number: int, frame: FrameType | None) -> None:
    """Stands for the SIGCHLD handler Twisted installs (it does nothing)."""


class FakeSignals:
    """The signal functions L{takeSIGCHLD} uses, over a table of handlers."""

    def __init__(self, handler: object) -> None:
        self.handlers: dict[int, object] = {signal.SIGCHLD: handler}
        self.restarting: list[tuple[int, bool]] = []

    def getHandler(self, number: int) -> object:
        """The handler of signal C{number}."""
        return self.handlers[number]

    def setHandler(
        self, number: int, handler: Callable[[int, FrameType | None], None]
    ) -> None:
        """Install C{handler} for signal C{number}."""
        self.handlers[number] = handler

    def restart(self, number: int, interrupt: bool) -> None:
        """Record C{siginterrupt}."""
        self.restarting.append((number, interrupt))


class ReapTests(SynchronousTestCase):
    """SIGCHLD reaches Twisted's reaping under uvloop."""

    def test_reapsFromLoop(self) -> None:
        """The handler defers the reaping to the reactor's loop."""
        reaped: list[bool] = []
        reactor = FakeReactor()
        handler = ReapOnSIGCHLD(reactor, lambda: reaped.append(True))
        handler(signal.SIGCHLD, None)
        self.assertEqual(reaped, [])
        [call] = reactor.calls
        call()
        self.assertEqual(reaped, [True])

    def test_replacesTwistedHandler(self) -> None:
        """Twisted's SIGCHLD handler is replaced; system calls still restart."""
        signals = FakeSignals(twistedHandler)
        handler = ReapOnSIGCHLD(FakeReactor(), lambda: None)
        self.assertTrue(
            takeSIGCHLD(
                handler, signals.getHandler, signals.setHandler, signals.restart
            )
        )
        self.assertIs(signals.handlers[signal.SIGCHLD], handler)
        self.assertEqual(signals.restarting, [(signal.SIGCHLD, False)])

    def test_leavesDefault(self) -> None:
        """Without Twisted's handler (no signal handling) nothing changes."""
        for default in (signal.SIG_DFL, signal.SIG_IGN, None):
            signals = FakeSignals(default)
            handler = ReapOnSIGCHLD(FakeReactor(), lambda: None)
            self.assertFalse(
                takeSIGCHLD(
                    handler, signals.getHandler, signals.setHandler, signals.restart
                )
            )
            self.assertIs(signals.handlers[signal.SIGCHLD], default)
            self.assertEqual(signals.restarting, [])


class MissingUvloopTests(SynchronousTestCase):
    """C{twistd -r uvloop} without uvloop: one line and exit status 2."""

    def test_missing(self) -> None:
        """A failed import is one line naming the extra, then SystemExit(2)."""

        def importModule(name: str) -> ModuleType:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        errors = io.StringIO()
        with self.assertRaises(SystemExit) as caught:
            importUvloop(importModule, errors)
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(errors.getvalue(), MISSING_UVLOOP + "\n")
        self.assertIn("pip install 'echotwist[uvloop]'", MISSING_UVLOOP)

    def test_present(self) -> None:
        """With uvloop importable, its module is returned and nothing printed."""
        module = ModuleType("uvloop")
        errors = io.StringIO()
        self.assertIs(importUvloop(lambda name: module, errors), module)
        self.assertEqual(errors.getvalue(), "")
