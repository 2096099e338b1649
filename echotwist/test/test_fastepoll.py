"""Tests for L{echotwist.internals.fastepoll}, and the epoll internals it relies on."""

from __future__ import annotations

import errno
import os
import socket as socket_
import sys
from types import ModuleType
from typing import cast

from twisted.application.reactors import IReactorInstaller
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.plugin import getPlugins
from twisted.python import context
from twisted.python.failure import Failure
from twisted.python.log import ILogContext
from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.leanserver import LeanServer
from echotwist.internals.speedups import builtSpeedups
from echotwist.test.transports import FakeSocket

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


def newReactor(
    test: SynchronousTestCase, kind: type[EPollReactor], *arguments: object
) -> EPollReactor:
    """A reactor of C{kind} made with C{arguments} (not installed), closed at
    cleanup.
    """
    reactor = kind(*arguments)

    def close() -> None:
        reactor.removeAll()
        reactor._poller.close()

    test.addCleanup(close)
    return reactor


class PipeSocket(FakeSocket):
    """A fake socket whose descriptor is a pipe's reading end, so that epoll
    reports it readable once the pipe has a byte; C{recv} gives what the
    test put in C{incoming}, as L{FakeSocket}'s does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.readEnd, self.writeEnd = os.pipe()
        os.write(self.writeEnd, b"x")

    def fileno(self) -> int:
        """The pipe's reading end."""
        return self.readEnd

    def closePipe(self) -> None:
        """Close both ends."""
        os.close(self.readEnd)
        os.close(self.writeEnd)


class Receiver(Protocol):
    """Records what it receives and how it was closed; may raise on data."""

    def __init__(self, failing: BaseException | None = None) -> None:
        self.received: list[bytes] = []
        self.lost: list[Failure] = []
        self.failing = failing

    def dataReceived(self, data: bytes) -> None:
        """Record C{data}, then raise if told to."""
        self.received.append(data)
        if self.failing is not None:
            raise self.failing

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Record the reason."""
        self.lost.append(reason)


class FastEPollReactorTests(SynchronousTestCase):
    """L{FastEPollReactor} dispatches as the epoll reactor, minus the context."""

    skip = EPOLL_MISSING
    # How it dispatches: in Python here, in C below.
    speedups: ModuleType | None = None

    def fastReactor(self) -> EPollReactor:
        """A L{FastEPollReactor} dispatching as this test case says."""
        return newReactor(self, FastEPollReactor, self.speedups)

    def readyLeanServer(
        self, reactor: EPollReactor, incoming: list[bytes | OSError], protocol: Receiver
    ) -> LeanServer:
        """A L{LeanServer} reading from a readable L{PipeSocket} on C{reactor}."""
        socket = PipeSocket()
        socket.incoming = incoming
        self.addCleanup(socket.closePipe)
        transport = LeanServer(
            cast(socket_.socket, socket),
            protocol,
            ("127.0.0.1", 40000),
            tcp.Port(0, Factory.forProtocol(Protocol), reactor=reactor),
            1,
            reactor,
        )
        protocol.makeConnection(transport)
        # Registered here (Echo would register itself as a producer), and
        # unregistered before its pipe closes (cleanups run last first).
        reactor.addReader(transport)
        self.addCleanup(reactor.removeReader, transport)
        return transport

    def test_leanServerRead(self) -> None:
        """A readable L{LeanServer}'s bytes go to its protocol, as C{doRead}."""
        reactor = self.fastReactor()
        protocol = Receiver()
        transport = self.readyLeanServer(reactor, [b"hello"], protocol)
        reactor.doPoll(0)
        self.assertEqual(protocol.received, [b"hello"])
        self.assertIn(transport, reactor.getReaders())
        self.assertEqual(protocol.lost, [])

    def test_leanServerReadsBufferSize(self) -> None:
        """One read takes at most the transport's C{bufferSize} bytes."""
        reactor = self.fastReactor()
        protocol = Receiver()
        big = b"y" * (LeanServer.bufferSize + 10)
        self.readyLeanServer(reactor, [big], protocol)
        reactor.doPoll(0)
        self.assertEqual(protocol.received, [big[: LeanServer.bufferSize]])

    def test_leanServerNothingThere(self) -> None:
        """A read that would block changes nothing."""
        reactor = self.fastReactor()
        protocol = Receiver()
        transport = self.readyLeanServer(reactor, [], protocol)
        reactor.doPoll(0)
        self.assertEqual((protocol.received, protocol.lost), ([], []))
        self.assertIn(transport, reactor.getReaders())

    def assertReadCloses(self, read: bytes | OSError, reason: type[Exception]) -> None:
        """A read of C{read} closes the connection with C{reason}."""
        reactor = self.fastReactor()
        protocol = Receiver()
        transport = self.readyLeanServer(reactor, [read], protocol)
        reactor.doPoll(0)
        self.assertEqual(len(protocol.lost), 1)
        self.assertIsInstance(protocol.lost[0].value, reason)
        self.assertNotIn(transport, reactor.getReaders())

    def test_leanServerEndOfInput(self) -> None:
        """The peer's end (an empty read) closes the connection as done."""
        self.assertReadCloses(b"", ConnectionDone)

    def test_leanServerReadError(self) -> None:
        """A read error closes the connection as lost."""
        self.assertReadCloses(
            ConnectionResetError(errno.ECONNRESET, "reset"), ConnectionLost
        )

    def test_leanServerProtocolError(self) -> None:
        """A protocol's exception is logged and closes its connection with it."""
        reactor = self.fastReactor()
        bug = ZeroDivisionError("a bug in a protocol")
        protocol = Receiver(failing=bug)
        transport = self.readyLeanServer(reactor, [b"hello"], protocol)
        reactor.doPoll(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(protocol.lost), 1)
        self.assertIs(protocol.lost[0].value, bug)
        self.assertNotIn(transport, reactor.getReaders())

    def test_readFailedWhileHandling(self) -> None:
        """The read's exception is being handled when C{_readFailed} runs,
        as inside an C{except} (C{sys.exc_info()}, chained exceptions).
        """
        seen: list[bool] = []

        class Recording(FastEPollReactor):
            def _readFailed(
                self, selectable: object, fd: int, error: BaseException
            ) -> None:
                seen.append(sys.exc_info()[1] is error)
                super()._readFailed(selectable, fd, error)

        reactor = newReactor(self, Recording, self.speedups)
        self.readyLeanServer(reactor, [b"x"], Receiver(failing=ZeroDivisionError()))
        reactor.doPoll(0)
        self.assertEqual(seen, [True])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_leanServerKeyboardInterrupt(self) -> None:
        """Ctrl-C in a protocol stops the reactor; the connection stays."""
        reactor = self.fastReactor()
        protocol = Receiver(failing=KeyboardInterrupt())
        transport = self.readyLeanServer(reactor, [b"hello"], protocol)
        self.assertRaises(KeyboardInterrupt, reactor.doPoll, 0)
        self.assertEqual(self.flushLoggedErrors(KeyboardInterrupt), [])
        self.assertIn(transport, reactor.getReaders())

    def test_removedEarlierInTheBatchSkipped(self) -> None:
        """A descriptor removed by an earlier event of the same poll is skipped."""
        reactor = self.fastReactor()
        transports: list[LeanServer] = []

        class Remover(Receiver):
            # On data, unregister every other connection.
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                for transport in transports:
                    if transport.protocol is not self:
                        reactor.removeReader(transport)

        removers = [Remover(), Remover()]
        for remover in removers:
            transports.append(self.readyLeanServer(reactor, [b"x"], remover))
        # Both are ready in the same poll; whichever is dispatched first
        # removes the other, which must then not be read.
        reactor.doPoll(0)
        self.assertEqual(sum(len(r.received) for r in removers), 1)
        readers = reactor.getReaders()
        self.assertEqual(sum(t in readers for t in transports), 1)

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
        reactor = self.fastReactor()
        reader = PipeReader()
        pollOnce(self, reactor, reader)
        self.assertEqual(reader.read, b"x")
        self.assertEqual(len(reader.systems), 1)
        self.assertNotEqual(reader.systems[0], "pipe-reader")

    def test_errorDisconnectsAndIsLogged(self) -> None:
        """A handler's exception is logged and disconnects its descriptor."""
        reactor = self.fastReactor()
        reader = PipeReader(failing=ZeroDivisionError("a bug in a protocol"))
        pollOnce(self, reactor, reader)
        self.assertEqual(len(reader.lost), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertNotIn(reader, reactor.getReaders())

    def test_keyboardInterruptPropagates(self) -> None:
        """Ctrl-C during a read stops the reactor, as C{callWithLogger} lets it."""
        reactor = self.fastReactor()
        reader = PipeReader(failing=KeyboardInterrupt())
        self.assertRaises(KeyboardInterrupt, pollOnce, self, reactor, reader)
        self.assertEqual(self.flushLoggedErrors(KeyboardInterrupt), [])

    def test_keyboardInterruptPropagatesFromOtherEvents(self) -> None:
        """Ctrl-C during any other dispatch stops the reactor too."""

        class InterruptedReactor(FastEPollReactor):
            def _doReadOrWrite(self, selectable: object, fd: int, event: int) -> None:
                raise KeyboardInterrupt

        reactor = newReactor(self, InterruptedReactor, self.speedups)
        self.assertRaises(KeyboardInterrupt, writeOnce, self, reactor, PipeWriter())
        self.assertEqual(self.flushLoggedErrors(KeyboardInterrupt), [])

    def test_dispatchErrorLogged(self) -> None:
        """Any other exception out of dispatch is logged, and polling goes on."""

        class BrokenReactor(FastEPollReactor):
            def _doReadOrWrite(self, selectable: object, fd: int, event: int) -> None:
                raise ValueError("a bug in dispatch")

        reactor = newReactor(self, BrokenReactor, self.speedups)
        writeOnce(self, reactor, PipeWriter())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_writableThroughUpstream(self) -> None:
        """A writable descriptor is handled by C{_doReadOrWrite}: C{doWrite}."""
        reactor = self.fastReactor()
        writer = PipeWriter()
        writeOnce(self, reactor, writer)
        self.assertEqual(writer.writes, 1)

    def test_endOfInputDisconnects(self) -> None:
        """A read that says the connection is done disconnects it as a read,
        in the fast path as in the epoll reactor's C{_doReadOrWrite} (pinned).
        """
        for kind in (EPollReactor, FastEPollReactor):
            reactor = newReactor(
                self, kind, *(() if kind is EPollReactor else (self.speedups,))
            )
            reader = PipeReader(result=CONNECTION_DONE)
            pollOnce(self, reactor, reader)
            self.assertEqual(len(reader.lost), 1, kind)
            self.assertIsInstance(reader.lost[0].value, ConnectionDone, kind)
            self.assertNotIn(reader, reactor.getReaders(), kind)

    def test_reactorPlugin(self) -> None:
        """C{twistd -r fastepoll} finds the reactor plugin."""
        names = [r.shortName for r in getPlugins(IReactorInstaller)]
        self.assertIn("fastepoll", names)


class NativeFastEPollReactorTests(FastEPollReactorTests):
    """The same, dispatching with the C speedups' C{Dispatcher}."""

    skip = EPOLL_MISSING or (
        "the C speedups are not built" if builtSpeedups is None else None
    )
    speedups = builtSpeedups
