"""Tests for L{echotwist.internals.fastepoll}, and the epoll internals it relies on."""

from __future__ import annotations

import os

from twisted.application.reactors import IReactorInstaller
from twisted.internet.error import ConnectionDone
from twisted.internet.main import CONNECTION_DONE
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

    def __init__(
        self, failing: BaseException | None = None, result: object = None
    ) -> None:
        self.readEnd, self.writeEnd = os.pipe()
        self.failing = failing
        self.result = result
        self.read = b""
        self.systems: list[object] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        """The pipe's reading end."""
        return self.readEnd

    def logPrefix(self) -> str:
        """What the epoll reactor puts in the logging context."""
        return "pipe-reader"

    def doRead(self) -> object:
        """Read what is there, noting the logging context of the call;
        return the result it was made with (a reason to disconnect, or None).
        """
        self.systems.append(context.get(ILogContext, {}).get("system"))
        if self.failing is not None:
            raise self.failing
        self.read += os.read(self.readEnd, 100)
        return self.result

    def connectionLost(self, reason: Failure) -> None:
        """Record the disconnection."""
        self.lost.append(reason)

    def close(self) -> None:
        """Close both ends."""
        os.close(self.readEnd)
        os.close(self.writeEnd)


class PipeWriter:
    """A write descriptor on a pipe (always writable): counts its writes."""

    def __init__(self) -> None:
        self.readEnd, self.writeEnd = os.pipe()
        self.writes = 0
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        """The pipe's writing end."""
        return self.writeEnd

    def logPrefix(self) -> str:
        """What the epoll reactor puts in the logging context."""
        return "pipe-writer"

    def doWrite(self) -> None:
        """Count the write event."""
        self.writes += 1

    def connectionLost(self, reason: Failure) -> None:
        """Record the disconnection."""
        self.lost.append(reason)

    def close(self) -> None:
        """Close both ends."""
        os.close(self.readEnd)
        os.close(self.writeEnd)


def writeOnce(
    test: SynchronousTestCase, reactor: EPollReactor, writer: PipeWriter
) -> None:
    """Let C{reactor} dispatch C{writer}'s writability once."""
    test.addCleanup(writer.close)
    reactor.addWriter(writer)
    test.addCleanup(reactor.removeWriter, writer)
    reactor.doPoll(0)


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
        """Ctrl-C during a read stops the reactor, as C{callWithLogger} lets it."""
        reactor = newReactor(self, FastEPollReactor)
        reader = PipeReader(failing=KeyboardInterrupt())
        self.assertRaises(KeyboardInterrupt, pollOnce, self, reactor, reader)
        self.assertEqual(self.flushLoggedErrors(KeyboardInterrupt), [])

    def test_keyboardInterruptPropagatesFromOtherEvents(self) -> None:
        """Ctrl-C during any other dispatch stops the reactor too."""

        class InterruptedReactor(FastEPollReactor):
            def _doReadOrWrite(self, selectable: object, fd: int, event: int) -> None:
                raise KeyboardInterrupt

        reactor = newReactor(self, InterruptedReactor)
        self.assertRaises(KeyboardInterrupt, writeOnce, self, reactor, PipeWriter())
        self.assertEqual(self.flushLoggedErrors(KeyboardInterrupt), [])

    def test_dispatchErrorLogged(self) -> None:
        """Any other exception out of dispatch is logged, and polling goes on."""

        class BrokenReactor(FastEPollReactor):
            def _doReadOrWrite(self, selectable: object, fd: int, event: int) -> None:
                raise ValueError("a bug in dispatch")

        reactor = newReactor(self, BrokenReactor)
        writeOnce(self, reactor, PipeWriter())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_writableThroughUpstream(self) -> None:
        """A writable descriptor is handled by C{_doReadOrWrite}: C{doWrite}."""
        reactor = newReactor(self, FastEPollReactor)
        writer = PipeWriter()
        writeOnce(self, reactor, writer)
        self.assertEqual(writer.writes, 1)

    def test_endOfInputDisconnects(self) -> None:
        """A read that says the connection is done disconnects it as a read,
        in the fast path as in the epoll reactor's C{_doReadOrWrite} (pinned).
        """
        for kind in (EPollReactor, FastEPollReactor):
            reactor = newReactor(self, kind)
            reader = PipeReader(result=CONNECTION_DONE)
            pollOnce(self, reactor, reader)
            self.assertEqual(len(reader.lost), 1, kind)
            self.assertIsInstance(reader.lost[0].value, ConnectionDone, kind)
            self.assertNotIn(reader, reactor.getReaders(), kind)

    def test_reactorPlugin(self) -> None:
        """C{twistd -r fastepoll} finds the reactor plugin."""
        names = [r.shortName for r in getPlugins(IReactorInstaller)]
        self.assertIn("fastepoll", names)
