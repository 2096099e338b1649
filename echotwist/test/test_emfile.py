"""Unit tests for L{echotwist.internals.emfile}, pinning the Twisted internals it uses.

A real C{twisted.internet.tcp.Port} runs its real C{doRead} over a fake
listening socket on a memory reactor: no sockets, no real time.
"""

from __future__ import annotations

import errno
from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.emfile import FIRST_DELAY, MAX_DELAY, AcceptGuard, guardAccept


class FakeListeningSocket:
    """A listening socket whose C{accept} fails or succeeds as scripted."""

    def __init__(self) -> None:
        self.error = errno.EMFILE
        self.accepts = 0
        self.client: Any = None
        self.closed = False

    def accept(self) -> tuple[Any, tuple[str, int]]:
        """Fail with C{error}, or return C{client} once (then EAGAIN)."""
        self.accepts += 1
        if self.client is not None:
            client, self.client = self.client, None
            return client, ("127.0.0.1", 40000)
        raise OSError(self.error, errno.errorcode[self.error])

    def getsockname(self) -> tuple[str, int]:
        """The address the port reports."""
        return ("127.0.0.1", 5000)

    def close(self) -> None:
        """Record closing."""
        self.closed = True


def listeningPort() -> tuple[tcp.Port, FakeListeningSocket, MemoryReactorClock]:
    """A Twisted TCP port, 'listening' on a fake socket and reading."""
    reactor = MemoryReactorClock()
    factory = Factory.forProtocol(Protocol)
    port = tcp.Port(0, factory, reactor=reactor)
    fake = FakeListeningSocket()
    port.socket = fake
    port.connected = True
    port.numberAccepts = 100
    port.startReading()
    return port, fake, reactor


class AcceptGuardTests(SynchronousTestCase):
    """Running out of descriptors pauses accepting and retries with backoff."""

    def guarded(
        self,
    ) -> tuple[tcp.Port, FakeListeningSocket, MemoryReactorClock, list[None]]:
        """A port with a guard installed, and the list of exhaustion reports."""
        port, fake, reactor = listeningPort()
        exhausted: list[None] = []
        guard = guardAccept(port, reactor, lambda: exhausted.append(None))
        self.assertIsInstance(guard, AcceptGuard)
        return port, fake, reactor, exhausted

    def test_emfilePausesReading(self) -> None:
        """EMFILE: one accept attempt, counted, logged once, port stops reading."""
        port, fake, reactor, exhausted = self.guarded()
        with capturedLogs() as events:
            port.doRead()
        self.assertEqual(fake.accepts, 1, "no retry loop, no reserve-fd dance")
        self.assertEqual(len(exhausted), 1)
        self.assertNotIn(port, reactor.getReaders())
        warnings = [e for e in events if e.get("reason") == "emfile"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["address"], "tcp:127.0.0.1:5000")
        self.assertFalse(
            [e for e in events if "EMFILE recovery" in str(e.get("log_format"))],
            "Twisted did not accept-and-close waiting clients",
        )

    def test_retriesWithBackoff(self) -> None:
        """Reading resumes after a delay that doubles up to the maximum."""
        port, _fake, reactor, exhausted = self.guarded()
        delays = []
        with capturedLogs() as events:
            for _ in range(8):
                port.doRead()
                pending = reactor.getDelayedCalls()
                self.assertEqual(len(pending), 1)
                delays.append(pending[0].getTime() - reactor.seconds())
                reactor.advance(delays[-1])
                self.assertIn(port, reactor.getReaders())
        self.assertEqual(delays[0], FIRST_DELAY)
        self.assertEqual(delays[-1], MAX_DELAY)
        self.assertEqual(delays, sorted(delays))
        self.assertEqual(len(exhausted), 8)
        self.assertEqual(len([e for e in events if e.get("reason") == "emfile"]), 1)

    def test_otherExhaustionErrors(self) -> None:
        """ENFILE and ENOBUFS pause accepting too."""
        for error in (errno.ENFILE, errno.ENOBUFS):
            port, fake, reactor, exhausted = self.guarded()
            fake.error = error
            port.doRead()
            self.assertEqual(len(exhausted), 1)
            self.assertNotIn(port, reactor.getReaders())

    def test_noClientsIsNotExhaustion(self) -> None:
        """EAGAIN (no client waiting) is passed through and changes nothing."""
        port, fake, reactor, exhausted = self.guarded()
        fake.error = errno.EAGAIN
        port.doRead()
        self.assertEqual(exhausted, [])
        self.assertIn(port, reactor.getReaders())

    def test_acceptsAgain(self) -> None:
        """After exhaustion the next successful accept resets the backoff."""
        port, fake, reactor, _exhausted = self.guarded()
        port.doRead()
        reactor.advance(FIRST_DELAY)
        guard = port.socket
        assert isinstance(guard, AcceptGuard)
        fake.client = object()
        with capturedLogs() as events:
            client, _ = guard.accept()
        self.assertIsNotNone(client)
        self.assertEqual(guard.delay, 0.0)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["failures"], 1)

    def test_stoppedPortStaysStopped(self) -> None:
        """A port closed while paused is not started again."""
        port, _fake, reactor, _ = self.guarded()
        port.doRead()
        port.disconnecting = True
        reactor.advance(FIRST_DELAY)
        self.assertNotIn(port, reactor.getReaders())

    def test_delegatesToSocket(self) -> None:
        """Everything but accept reaches the real socket (close, getsockname)."""
        port, fake, _, _ = self.guarded()
        self.assertEqual(port.getHost().port, 5000)
        port.socket.close()
        self.assertTrue(fake.closed)

    def test_otherPortsLeftAlone(self) -> None:
        """A port that is not a Twisted socket port gets no guard."""
        other = cast(IListeningPort, object())
        self.assertIsNone(guardAccept(other, MemoryReactorClock(), lambda: None))
