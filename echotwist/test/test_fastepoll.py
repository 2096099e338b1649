"""Tests for L{echotwist.internals.fastepoll}, and the epoll internals it relies on."""

from __future__ import annotations

import os

from twisted.application.reactors import IReactorInstaller
from twisted.plugin import getPlugins
from twisted.python import context
from twisted.python.failure import Failure
from twisted.python.log import ILogContext
from twisted.trial.unittest import SynchronousTestCase

try:
    from twisted.internet.epollreactor import EPollReactor

    from echotwist.internals.fastepoll import FastEPollReactor
except ImportError:
    # Not Linux: there is no epoll, and no -r fastepoll either.
    EPOLL_MISSING: str | None = "epoll is Linux only"
else:
    EPOLL_MISSING = None


class PipeReader:
    """A read descriptor on a pipe: records what it reads and the context."""

    def __init__(self, failing: BaseException | None = None) -> None:
        self.readEnd, self.writeEnd = os.pipe()
        self.failing = failing
        self.read = b""
        self.systems: list[object] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        """The pipe's reading end."""
        return self.readEnd

    def logPrefix(self) -> str:
        """What the epoll reactor puts in the logging context."""
        return "pipe-reader"

    def doRead(self) -> None:
        """Read what is there, noting the logging context of the call."""
        self.systems.append(context.get(ILogContext, {}).get("system"))
        if self.failing is not None:
            raise self.failing
        self.read += os.read(self.readEnd, 100)

    def connectionLost(self, reason: Failure) -> None:
        """Record the disconnection."""
        self.lost.append(reason)

    def close(self) -> None:
        """Close both ends."""
        os.close(self.readEnd)
        os.close(self.writeEnd)


def pollOnce(
    test: SynchronousTestCase, reactor: EPollReactor, reader: PipeReader
) -> None:
    """Make C{reader} readable and let C{reactor} dispatch once."""
    test.addCleanup(reader.close)
    reactor.addReader(reader)
    # Cleanups run last first: unregistered before its pipe closes.
    test.addCleanup(reactor.removeReader, reader)
    os.write(reader.writeEnd, b"x")
    reactor.doPoll(0)


def newReactor(test: SynchronousTestCase, kind: type[EPollReactor]) -> EPollReactor:
    """A reactor of C{kind} (not installed), closed at cleanup."""
    reactor = kind()

    def close() -> None:
        reactor.removeAll()
        reactor._poller.close()

    test.addCleanup(close)
    return reactor


class FastEPollReactorTests(SynchronousTestCase):
    """L{FastEPollReactor} dispatches as the epoll reactor, minus the context."""

    skip = EPOLL_MISSING

    def test_internals(self) -> None:
        """The epoll reactor still has the poller, map and dispatcher used."""
        reactor = newReactor(self, EPollReactor)
        self.assertTrue(hasattr(reactor._poller, "poll"))
        self.assertIsInstance(reactor._selectables, dict)
        self.assertTrue(callable(reactor._doReadOrWrite))

    def test_upstreamBuildsContextPerEvent(self) -> None:
        """The epoll reactor runs each event in a context: what is saved."""
        reactor = newReactor(self, EPollReactor)
        reader = PipeReader()
        pollOnce(self, reactor, reader)
        self.assertEqual(reader.systems, ["pipe-reader"])

    def test_dispatchesWithoutContext(self) -> None:
        """A ready descriptor is read, with no per-event logging context."""
        reactor = newReactor(self, FastEPollReactor)
        reader = PipeReader()
        pollOnce(self, reactor, reader)
        self.assertEqual(reader.read, b"x")
        self.assertEqual(len(reader.systems), 1)
        self.assertNotEqual(reader.systems[0], "pipe-reader")

    def test_errorDisconnectsAndIsLogged(self) -> None:
        """A handler's exception is logged and disconnects its descriptor."""
        reactor = newReactor(self, FastEPollReactor)
        reader = PipeReader(failing=ZeroDivisionError("a bug in a protocol"))
        pollOnce(self, reactor, reader)
        self.assertEqual(len(reader.lost), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertNotIn(reader, reactor.getReaders())

    def test_keyboardInterruptPropagates(self) -> None:
        """Ctrl-C during dispatch stops the reactor, as C{callWithLogger} lets it."""

        class InterruptedReactor(FastEPollReactor):
            def _doReadOrWrite(self, selectable: object, fd: int, event: int) -> None:
                raise KeyboardInterrupt

        reactor = newReactor(self, InterruptedReactor)
        self.assertRaises(KeyboardInterrupt, pollOnce, self, reactor, PipeReader())
        self.assertEqual(self.flushLoggedErrors(KeyboardInterrupt), [])

    def test_dispatchErrorLogged(self) -> None:
        """Any other exception out of dispatch is logged, and polling goes on."""

        class BrokenReactor(FastEPollReactor):
            def _doReadOrWrite(self, selectable: object, fd: int, event: int) -> None:
                raise ValueError("a bug in dispatch")

        reactor = newReactor(self, BrokenReactor)
        pollOnce(self, reactor, PipeReader())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_reactorPlugin(self) -> None:
        """C{twistd -r fastepoll} finds the reactor plugin."""
        names = [r.shortName for r in getPlugins(IReactorInstaller)]
        self.assertIn("fastepoll", names)
