"""Tests for L{echotwist.workers}: C{twistd echo --workers N}.

Unit tests run the supervisor against a fake process reactor and clock; the
end-to-end test runs the real C{twistd echo --workers 2} and checks that
connections spread over both workers and that SIGTERM stops them all.
"""

from __future__ import annotations

import io
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IReactorProcess
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.endpoints import BadEndpoint
from echotwist.fastpath import FastEPollReactor
from echotwist.tap import Options, makeService
from echotwist.test.e2e import WAIT, startServer
from echotwist.workers import (
    STOP_TIMEOUT,
    Binding,
    WorkerPool,
    parseListeningArgument,
    tcpBinding,
    workerReactor,
)


class BindingTests(SynchronousTestCase):
    """Endpoint descriptions become shareable TCP bindings."""

    def test_tcp(self) -> None:
        """C{tcp:PORT:interface=HOST} gives that host and port."""
        self.assertEqual(
            tcpBinding("tcp:5000:interface=127.0.0.1"),
            Binding(socket.AF_INET, "127.0.0.1", 5000),
        )

    def test_tcpDefaults(self) -> None:
        """Without an interface, every IPv4 (or IPv6) address."""
        self.assertEqual(tcpBinding("tcp:0"), Binding(socket.AF_INET, "0.0.0.0", 0))
        self.assertEqual(tcpBinding("tcp6:7"), Binding(socket.AF_INET6, "::", 7))

    def test_tcp6EscapedInterface(self) -> None:
        """Escaped colons in an IPv6 interface are unescaped."""
        self.assertEqual(
            tcpBinding(r"tcp6:port=9:interface=\:\:1"),
            Binding(socket.AF_INET6, "::1", 9),
        )

    def test_rejectsOthers(self) -> None:
        """UNIX, TLS and other endpoints cannot be shared this way."""
        for description in ("unix:/tmp/x", "tls:5000", "aiotcp:5000"):
            self.assertRaises(BadEndpoint, tcpBinding, description)

    def test_listeningArgument(self) -> None:
        """A worker reads its family and descriptor from C{tcp:FD}/C{tcp6:FD}."""
        self.assertEqual(parseListeningArgument("tcp:4"), (socket.AF_INET, 4))
        self.assertEqual(parseListeningArgument("tcp6:5"), (socket.AF_INET6, 5))

    def test_text(self) -> None:
        """A binding reads back as an endpoint description."""
        self.assertEqual(
            Binding(socket.AF_INET6, "::1", 7).text(), r"tcp6:7:interface=\:\:1"
        )
        description = Binding(socket.AF_INET, "127.0.0.1", 5).text()
        self.assertEqual(
            tcpBinding(description), Binding(socket.AF_INET, "127.0.0.1", 5)
        )


class OptionsTests(SynchronousTestCase):
    """C{--workers} is checked like every other option."""

    def parse(self, *arguments: str) -> tuple[Options | None, str]:
        """Parse C{arguments}; return the options, or None and the error."""
        errors = io.StringIO()
        options = Options(reactor=Clock(), errorStream=errors)
        try:
            options.parseOptions(list(arguments))
        except SystemExit as e:
            self.assertEqual(e.code, 2)
            return None, errors.getvalue()
        return options, errors.getvalue()

    def test_defaultOne(self) -> None:
        """Without C{--workers} there is one process, the usual service."""
        options, _ = self.parse("--port", "tcp:0:interface=127.0.0.1")
        assert options is not None
        self.assertEqual(options["workers"], 1)
        self.assertFalse(
            any(isinstance(child, WorkerPool) for child in makeService(options))
        )

    def test_workersService(self) -> None:
        """C{--workers 3} builds a worker pool of three."""
        options, _ = self.parse("--workers", "3", "--port", "tcp:0")
        assert options is not None
        (service,) = makeService(options)
        assert isinstance(service, WorkerPool)
        self.assertEqual(service.count, 3)

    def test_unsupportedCombinations(self) -> None:
        """Options the workers cannot carry yet are refused with --workers."""
        for extra in (
            ("--metrics", "tcp:0"),
            ("--udp", "0"),
            ("--allow", "127.0.0.0/8"),
            ("--idle-timeout", "5"),
        ):
            options, error = self.parse("--workers", "2", "--port", "tcp:0", *extra)
            self.assertIsNone(options, extra)
            self.assertIn(f"--workers cannot be combined with {extra[0]}", error)

    def test_badCount(self) -> None:
        """Zero, negative or non-numeric counts are one-line usage errors."""
        for count in ("0", "-2", "many", "100000"):
            options, error = self.parse("--workers", count)
            self.assertIsNone(options)
            self.assertEqual(len(error.splitlines()), 1)
            self.assertIn("--workers", error)

    def test_onlyTCP(self) -> None:
        """Sharing a UNIX socket among workers is refused."""
        options, error = self.parse("--workers", "2", "--listen", "unix:/tmp/e.sock")
        self.assertIsNone(options)
        self.assertIn("only tcp", error)


class FakeProcess:
    """A spawned process: records the signals sent to it."""

    def __init__(self) -> None:
        self.signals: list[str] = []

    def signalProcess(self, signalID: str | int) -> None:
        """Record C{signalID}."""
        self.signals.append(str(signalID))


class FakeProcessReactor(Clock):
    """A clock that records C{spawnProcess} calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[IProcessProtocol, Sequence[str], FakeProcess]] = []
        self.childFDs: list[Mapping[int, int | str]] = []

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: str,
        args: Sequence[str],
        **kwargs: object,
    ) -> FakeProcess:
        """Record the call; return a fake process."""
        self.childFDs.append(cast(Mapping[int, int | str], kwargs["childFDs"]))
        process = FakeProcess()
        self.spawned.append((processProtocol, args, process))
        return process


class ListeningSocket:
    """Stands for a listening socket the supervisor opened for a worker."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.closed = False

    def fileno(self) -> int:
        """The descriptor to hand to the worker."""
        return self.descriptor

    def close(self) -> None:
        """Record that the supervisor let go of its copy."""
        self.closed = True


def pool(
    count: int = 2,
) -> tuple[WorkerPool, FakeProcessReactor, list[ListeningSocket]]:
    """A started pool over a fake reactor, its sockets already listening."""
    reactor = FakeProcessReactor()
    workers = WorkerPool(
        ["tcp:5000:interface=127.0.0.1"],
        count,
        cast(IReactorProcess, reactor),
        reactor,
        executable="python",
    )
    sockets = [ListeningSocket(100 + i) for i in range(count)]
    workers.sockets = [[cast(socket.socket, s)] for s in sockets]
    workers.startService()
    return workers, reactor, sockets


def ready(reactor: FakeProcessReactor, index: int) -> None:
    """Worker C{index} (from 0) reports that it listens."""
    reactor.spawned[index][0].childDataReceived(3, b"ready\n")


def end(reactor: FakeProcessReactor, index: int, status: int = 0) -> None:
    """Worker C{index} (from 0) exits with C{status}."""
    reason = ProcessDone(0) if status == 0 else ProcessTerminated(status)
    reactor.spawned[index][0].processEnded(Failure(reason))


class WorkerPoolTests(SynchronousTestCase):
    """The supervisor starts, announces and stops its workers."""

    def test_spawnsWorkers(self) -> None:
        """Each worker gets its own listening socket as descriptor 4."""
        _, reactor, sockets = pool(3)
        self.assertEqual(
            [list(args) for _, args, _ in reactor.spawned],
            [
                ["python", "-m", "echotwist.workers", str(i), "default", "tcp:4"]
                for i in (1, 2, 3)
            ],
        )
        self.assertEqual(
            [fds[4] for fds in reactor.childFDs], [s.fileno() for s in sockets]
        )
        self.assertEqual({fds[3] for fds in reactor.childFDs}, {"r"})
        self.assertTrue(all(s.closed for s in sockets))

    def test_workerReactor(self) -> None:
        """Workers follow a fast epoll supervisor; otherwise the default."""
        self.assertEqual(
            workerReactor(FastEPollReactor.__new__(FastEPollReactor)), "fastepoll"
        )
        self.assertEqual(workerReactor(Clock()), "default")

    def test_listeningOnceAllReady(self) -> None:
        """C{Listening on} is logged when the last worker is ready, not before."""
        _, reactor, _ = pool(2)
        with capturedLogs() as events:
            ready(reactor, 0)
            self.assertEqual(events, [])
            ready(reactor, 1)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["address"], "tcp:127.0.0.1:5000")

    def test_stopSignalsAndWaits(self) -> None:
        """Stopping sends SIGTERM to each worker and waits for every exit."""
        workers, reactor, _ = pool(2)
        stopped = workers.stopService()
        self.assertEqual([p.signals for _, _, p in reactor.spawned], [["TERM"]] * 2)
        end(reactor, 0)
        self.assertNoResult(stopped)
        end(reactor, 1)
        self.successResultOf(stopped)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_killAfterTimeout(self) -> None:
        """A worker that ignores SIGTERM is killed after the timeout."""
        workers, reactor, _ = pool(1)
        stopped = workers.stopService()
        reactor.advance(STOP_TIMEOUT)
        self.assertEqual(reactor.spawned[0][2].signals, ["TERM", "KILL"])
        end(reactor, 0, status=9)
        self.successResultOf(stopped)

    def test_unexpectedExitLogged(self) -> None:
        """A worker that dies while serving is logged as an error."""
        _, reactor, _ = pool(2)
        with capturedLogs() as events:
            end(reactor, 1, status=1)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["index"], 2)
        self.assertEqual(events[0]["log_level"].name, "error")


class EndToEndTests(SynchronousTestCase):
    """The real C{twistd echo --workers 2}."""

    def test_spreadAndStop(self) -> None:
        """Connections reach both workers; SIGTERM stops every process."""
        server = startServer(self, "--workers", "2")
        pids = [
            int(m.group(1))
            for m in server.output.waitForAll(r"Worker \d \(pid (\d+)\) listening", 2)
        ]
        connections = []
        for i in range(40):
            connection = socket.create_connection(("127.0.0.1", server.port), WAIT)
            connection.settimeout(WAIT)
            connections.append(connection)
            connection.sendall(b"%d" % i)
            self.assertEqual(connection.recv(16), b"%d" % i)
        for connection in connections:
            connection.close()
        handled = server.output.waitForAll(r"\[worker(\d)\] Handling client", 40)
        counts = {n: [m.group(1) for m in handled].count(n) for n in ("1", "2")}
        self.assertTrue(all(counts.values()), counts)
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        for pid in pids:
            self.assertFalse(Path(f"/proc/{pid}").exists(), f"worker {pid} left")
        self.assertNotIn(os.getpid(), pids)

    def test_portInUse(self) -> None:
        """A port already taken ends start-up with one line and status 1."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = startServer(
            self,
            "--workers",
            "2",
            listen=(f"tcp:{port}:interface=127.0.0.1",),
            wait=False,
        )
        self.assertEqual(server.wait(), 1)
        server.output.waitFor(rf"twistd echo: cannot listen on tcp:{port}:")
        self.assertNotIn("Traceback", server.output.text())

    def test_fastEpollWorkers(self) -> None:
        """Under C{twistd -r fastepoll} the workers start on it and echo."""
        server = startServer(self, "--workers", "2", twistdOptions=("-r", "fastepoll"))
        server.output.waitForAll(r"Worker \d \(pid \d+\) listening", 2)
        connection = socket.create_connection(("127.0.0.1", server.port), WAIT)
        self.addCleanup(connection.close)
        connection.settimeout(WAIT)
        connection.sendall(b"fast")
        self.assertEqual(connection.recv(16), b"fast")
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
