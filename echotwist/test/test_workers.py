"""Unit tests for L{echotwist.workers}: C{twistd echo --workers N}.

The supervisor runs against a fake process reactor and clock.  The
end-to-end tests (the real C{twistd echo --workers 2}) are in
L{echotwist.test.e2e.test_workers}.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any, cast

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IReactorProcess
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.endpoints import BadEndpoint
from echotwist.internals.aiotcp import AdoptedNativeEndpoint
from echotwist.internals.fastepoll import FastEPollReactor
from echotwist.server.shutdown import CleanExitService
from echotwist.tap import Options, makeService
from echotwist.workers.config import (
    FORWARDED,
    FORWARDED_REPEATED,
    STOP_GRACE,
    Binding,
    Inherited,
    kernelSteersByCpu,
    listenBinding,
    parseListeningArgument,
    parseWorkerArguments,
    tcpBinding,
    usableCpus,
    workerCount,
    workerCpus,
    workerMetrics,
    workerOptions,
)
from echotwist.workers.supervisor import WorkerPool, workerReactor
from echotwist.workers.worker import adoptedEndpoint, pinWorker, tellReady


class TellReadyTests(SynchronousTestCase):
    """L{tellReady} tells the supervisor once, even a supervisor already gone."""

    def test_tells(self) -> None:
        """The supervisor reads one line, then end of file: the pipe is closed."""
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        tellReady(writeEnd)
        self.assertEqual(os.read(readEnd, 100), b"ready\n")
        self.assertEqual(os.read(readEnd, 100), b"")

    def test_supervisorGone(self) -> None:
        """With nobody left to read (EPIPE), the worker carries on: no error."""
        readEnd, writeEnd = os.pipe()
        os.close(readEnd)
        # Raises BrokenPipeError (and the worker dies with a traceback)
        # unless it is handled.
        tellReady(writeEnd)


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
        for description in ("unix:/tmp/x", "tls:5000", "ssl:5000", "aiotcp6:5000"):
            error = self.assertRaises(BadEndpoint, listenBinding, description)
            self.assertIn("only tcp:, tcp6: and aiotcp: endpoints", str(error))

    def test_metricsOnlyTCP(self) -> None:
        """Metrics bindings are Twisted TCP only: C{aiotcp:} is refused there."""
        self.assertEqual(
            tcpBinding("tcp:9100"), Binding(socket.AF_INET, "0.0.0.0", 9100)
        )
        for description in ("aiotcp:9100", "unix:/tmp/m"):
            error = self.assertRaises(BadEndpoint, tcpBinding, description)
            self.assertIn("metrics only on tcp: and tcp6:", str(error))

    def test_positionalArguments(self) -> None:
        """An interface and backlog given by position count, as in Twisted."""
        self.assertEqual(
            listenBinding("tcp:0:127.0.0.1:77"),
            Binding(socket.AF_INET, "127.0.0.1", 0, backlog=77),
        )
        self.assertEqual(
            listenBinding(r"tcp6:0:77:\:\:1"),
            Binding(socket.AF_INET6, "::1", 0, backlog=77),
        )
        self.assertEqual(
            listenBinding("aiotcp:0:127.0.0.1:77"),
            Binding(socket.AF_INET, "127.0.0.1", 0, True, 77),
        )

    def test_tcpIsNotNative(self) -> None:
        """C{tcp:} bindings are Twisted's, with the backlog they are given."""
        binding = listenBinding("tcp:5000:interface=127.0.0.1:backlog=7")
        self.assertEqual(
            (binding.native, binding.backlog, binding.kind()), (False, 7, "tcp")
        )

    def test_aiotcp(self) -> None:
        """C{aiotcp:PORT:interface=HOST} is a native IPv4 binding."""
        binding = listenBinding("aiotcp:5000:interface=127.0.0.1")
        self.assertEqual(
            binding, Binding(socket.AF_INET, "127.0.0.1", 5000, native=True)
        )
        self.assertEqual(binding.kind(), "aiotcp")
        self.assertEqual(binding.text(), "aiotcp:5000:interface=127.0.0.1")

    def test_aiotcpDefaults(self) -> None:
        """Without an interface, every IPv4 address (as NativeTCPEndpoint binds)."""
        self.assertEqual(
            listenBinding("aiotcp:port=0"),
            Binding(socket.AF_INET, "0.0.0.0", 0, native=True),
        )

    def test_aiotcpIPv6(self) -> None:
        """An interface with a colon makes an C{aiotcp:} binding IPv6."""
        binding = listenBinding(r"aiotcp:7:interface=\:\:1")
        self.assertEqual(binding, Binding(socket.AF_INET6, "::1", 7, native=True))
        self.assertEqual(binding.kind(), "aiotcp6")
        self.assertEqual(binding.text(), r"aiotcp:7:interface=\:\:1")
        self.assertEqual(listenBinding(binding.text()), binding)

    def test_backlog(self) -> None:
        """C{backlog=N} of any shared description is the listen backlog;
        without it, C{SOMAXCONN}.
        """
        for kind in ("aiotcp", "tcp", "tcp6"):
            self.assertEqual(
                listenBinding(f"{kind}:0:backlog=12:interface=127.0.0.1").backlog, 12
            )
            self.assertEqual(listenBinding(f"{kind}:0").backlog, socket.SOMAXCONN)
            self.assertRaises(
                BadEndpoint, listenBinding, f"{kind}:0:backlog=99999999999"
            )

    def test_workerArguments(self) -> None:
        """A worker's command line: index, reactor, descriptors, then options."""
        arguments = parseWorkerArguments(
            ["2", "fastepoll", "tcp:4", "tcp6:5", "--", "--idle-timeout=1.0"]
        )
        self.assertEqual(
            (
                arguments.index,
                arguments.reactorName,
                arguments.listening,
                arguments.options,
            ),
            (
                2,
                "fastepoll",
                [Inherited(socket.AF_INET, 4), Inherited(socket.AF_INET6, 5)],
                ["--idle-timeout=1.0"],
            ),
        )

    def test_nativeWorkerArguments(self) -> None:
        """C{aiotcp:FD}/C{aiotcp6:FD} sockets mix with Twisted TCP ones."""
        arguments = parseWorkerArguments(
            ["1", "uvloop", "aiotcp:4", "tcp:5", "aiotcp6:6", "metrics=tcp:7"]
        )
        self.assertEqual(
            (arguments.reactorName, arguments.listening, arguments.metrics),
            (
                "uvloop",
                [
                    Inherited(socket.AF_INET, 4, native=True),
                    Inherited(socket.AF_INET, 5, native=False),
                    Inherited(socket.AF_INET6, 6, native=True),
                ],
                Inherited(socket.AF_INET, 7, native=False),
            ),
        )

    def test_workerMetricsArgument(self) -> None:
        """C{metrics=tcp:FD} is the worker's own metrics socket."""
        arguments = parseWorkerArguments(
            ["1", "default", "tcp:4", "metrics=tcp6:5", "--", "--metrics=tcp6:0"]
        )
        self.assertEqual(
            (arguments.listening, arguments.metrics, arguments.options),
            (
                [Inherited(socket.AF_INET, 4)],
                Inherited(socket.AF_INET6, 5),
                ["--metrics=tcp6:0"],
            ),
        )

    def test_workerArgumentsWithoutOptions(self) -> None:
        """Without C{--} a worker has no echo options: the defaults."""
        arguments = parseWorkerArguments(["1", "default", "tcp:4"])
        self.assertEqual(
            (arguments.listening, arguments.options),
            ([Inherited(socket.AF_INET, 4)], []),
        )

    def test_workerCpuArgument(self) -> None:
        """C{cpu=N} names the worker's CPU; without it the worker is not pinned."""
        arguments = parseWorkerArguments(
            ["2", "default", "tcp:4", "cpu=1", "--", "--max-per-ip=3"]
        )
        self.assertEqual(
            (arguments.listening, arguments.cpu, arguments.options),
            ([Inherited(socket.AF_INET, 4)], 1, ["--max-per-ip=3"]),
        )
        self.assertIsNone(parseWorkerArguments(["1", "default", "tcp:4"]).cpu)

    def test_workerRestartsAndLoggerArguments(self) -> None:
        """C{restarts=N} and C{logger=NAME} come before the options."""
        arguments = parseWorkerArguments(
            [
                "2",
                "default",
                "tcp:4",
                "restarts=3",
                "logger=echotwist.logging.jsonLogger",
                "--",
                "--max-per-ip=3",
            ]
        )
        self.assertEqual(
            (arguments.listening, arguments.restarts, arguments.logger),
            ([Inherited(socket.AF_INET, 4)], 3, "echotwist.logging.jsonLogger"),
        )
        self.assertEqual(arguments.options, ["--max-per-ip=3"])
        plain = parseWorkerArguments(["1", "default", "tcp:4"])
        self.assertEqual((plain.restarts, plain.logger), (0, None))

    def test_pinWorker(self) -> None:
        """A worker pins itself to its CPU and says so."""
        calls: list[tuple[int, set[int]]] = []
        with capturedLogs() as events:
            pinWorker(2, 1, lambda pid, cpus: calls.append((pid, cpus)))
        self.assertEqual(calls, [(0, {1})])
        self.assertEqual(
            [formatEvent(event) for event in events], ["Worker 2 runs on CPU 1"]
        )

    def test_pinWorkerRefused(self) -> None:
        """A CPU the worker may not use: one logged line, exit status 1."""

        def refuse(pid: int, cpus: set[int]) -> None:
            raise OSError(errno.EINVAL, "Invalid argument")

        with capturedLogs() as events:
            error = self.assertRaises(SystemExit, pinWorker, 2, 7, refuse)
        self.assertEqual(error.code, 1)
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["Worker 2 cannot run on CPU 7: Invalid argument"],
        )

    def test_kernelSteersByCpu(self) -> None:
        """Steering by CPU within a SO_REUSEPORT group needs Linux 6.2."""
        for release, steers in (
            ("6.18.44-fc-v782", True),
            ("6.2.0", True),
            ("7.0", True),
            ("6.1.55-generic", False),
            ("5.15.0-91-generic", False),
            ("weird", False),
        ):
            self.assertEqual(kernelSteersByCpu(release), steers, release)

    def test_workerCpus(self) -> None:
        """Workers take the CPUs in order, round robin past the last."""
        self.assertEqual(workerCpus(3, {3, 1}), [1, 3, 1])
        self.assertEqual(workerCpus(2, [0, 1, 2, 3]), [0, 1])
        self.assertEqual(workerCpus(2, [5]), [5, 5])

    def test_listeningArgument(self) -> None:
        """A worker reads its family and descriptor from C{tcp:FD}/C{tcp6:FD}."""
        self.assertEqual(parseListeningArgument("tcp:4"), (socket.AF_INET, 4, False))
        self.assertEqual(parseListeningArgument("tcp6:5"), (socket.AF_INET6, 5, False))

    def test_nativeListeningArgument(self) -> None:
        """C{aiotcp:FD}/C{aiotcp6:FD} name sockets for the loop's own server."""
        self.assertEqual(
            parseListeningArgument("aiotcp:4"), Inherited(socket.AF_INET, 4, True)
        )
        self.assertEqual(
            parseListeningArgument("aiotcp6:9"), Inherited(socket.AF_INET6, 9, True)
        )

    def test_badListeningArgument(self) -> None:
        """Any other kind of worker socket is refused."""
        for text in ("unix:4", "4", "aiotcp:x"):
            self.assertRaises(ValueError, parseListeningArgument, text)

    def test_argumentsRoundTrip(self) -> None:
        """What the supervisor writes for a binding, a worker reads back."""
        for description, family, native in (
            ("tcp:0", socket.AF_INET, False),
            ("tcp6:0", socket.AF_INET6, False),
            ("aiotcp:0", socket.AF_INET, True),
            (r"aiotcp:0:interface=\:\:", socket.AF_INET6, True),
        ):
            kind = listenBinding(description).kind()
            self.assertEqual(
                parseListeningArgument(f"{kind}:8"), Inherited(family, 8, native)
            )

    def test_text(self) -> None:
        """A binding reads back as an endpoint description."""
        self.assertEqual(
            Binding(socket.AF_INET6, "::1", 7).text(), r"tcp6:7:interface=\:\:1"
        )
        description = Binding(socket.AF_INET, "127.0.0.1", 5).text()
        self.assertEqual(
            tcpBinding(description), Binding(socket.AF_INET, "127.0.0.1", 5)
        )


def eightCpus() -> int:
    """Eight usable CPUs (a given count does not ask)."""
    return 8


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
        """C{--workers 3}: a pool of three, after a SIGTERM handler for exit 0."""
        options, _ = self.parse(
            "--workers", "3", "--port", "tcp:0", "--shutdown-timeout", "7"
        )
        assert options is not None
        handler, service = makeService(options)
        self.assertIsInstance(handler, CleanExitService)
        assert isinstance(service, WorkerPool)
        self.assertEqual(service.count, 3)
        self.assertEqual(service.stopTimeout, 7 + STOP_GRACE)

    def test_pinWorkers(self) -> None:
        """C{--pin-workers}: each worker gets a CPU this process may use."""
        options, _ = self.parse("--workers", "3", "--pin-workers", "--port", "tcp:0")
        assert options is not None
        _, service = makeService(options)
        assert isinstance(service, WorkerPool)
        self.assertEqual(service.cpus, workerCpus(3, os.sched_getaffinity(0)))

    def test_notPinnedByDefault(self) -> None:
        """Without C{--pin-workers} workers run wherever the kernel puts them."""
        options, _ = self.parse("--workers", "2", "--port", "tcp:0")
        assert options is not None
        _, service = makeService(options)
        assert isinstance(service, WorkerPool)
        self.assertIsNone(service.cpus)

    def test_pinWorkersNeedsWorkers(self) -> None:
        """C{--pin-workers} alone is a usage error of one line."""
        options, error = self.parse("--pin-workers", "--port", "tcp:0")
        self.assertIsNone(options)
        self.assertEqual(
            error,
            "twistd echo: error: --pin-workers needs --workers 2 or more"
            " (see: twistd echo --help)\n",
        )

    def test_unsupportedCombinations(self) -> None:
        """--udp is refused with --workers."""
        options, error = self.parse("--workers", "2", "--port", "tcp:0", "--udp", "0")
        self.assertIsNone(options)
        self.assertIn("--workers cannot be combined with --udp", error)

    def test_metricsPerWorker(self) -> None:
        """With --metrics, worker I serves metrics on the port + I - 1."""
        options, _ = self.parse(
            "--workers=3", "--metrics", "tcp:9100:interface=127.0.0.1"
        )
        assert options is not None
        _, service = makeService(options)
        assert isinstance(service, WorkerPool)
        self.assertEqual(
            service.metrics,
            [f"tcp:{port}:interface=127.0.0.1" for port in (9100, 9101, 9102)],
        )

    def test_metricsPortZero(self) -> None:
        """Metrics on port 0: every worker picks a port of its own."""
        self.assertEqual(
            workerMetrics(r"tcp6:0:interface=\:\:1", 2), [r"tcp6:0:interface=\:\:1"] * 2
        )

    def test_metricsRefused(self) -> None:
        """Metrics with --workers must be TCP, with room for every port."""
        for metrics, message in (
            ("unix:/tmp/m.sock", "metrics only on tcp:"),
            ("tcp:65535", "beyond 65535"),
        ):
            options, error = self.parse("--workers", "2", "--metrics", metrics)
            self.assertIsNone(options)
            self.assertIn(message, error)
            self.assertEqual(len(error.splitlines()), 1)

    def test_forwardedOptions(self) -> None:
        """Limits, timeouts, address rules and log levels are forwarded to every
        worker.
        """
        options, _ = self.parse(
            "--work=2",
            "-ptcp:0",
            "--listen",
            "tcp6:0",
            "--idle-timeout",
            "1.5",
            "--max-connections=7",
            "--max-per-ip",
            "2",
            "--shutdown-timeout=0",
            "--allow=127.0.0.0/8",
            "--allow",
            "::1",
            "--deny=127.0.0.2",
            "--log-level=warn",
            "--log-level",
            "echotwist.protocol=error",
        )
        assert options is not None
        forwarded = workerOptions(options)
        self.assertEqual(
            forwarded,
            [
                "--idle-timeout=1.5",
                "--max-connections=7",
                "--max-per-ip=2",
                "--shutdown-timeout=0.0",
                "--allow=127.0.0.0/8",
                "--allow=::1/128",
                "--deny=127.0.0.2/32",
                "--log-level=warn",
                "--log-level=echotwist.protocol=error",
            ],
        )
        # pool() below checks that the pool puts them on each command line.
        (_, service) = makeService(options)
        assert isinstance(service, WorkerPool)
        self.assertEqual(service.options, forwarded)

    def test_workerParsesForwarded(self) -> None:
        """A worker's echo options parse to the supervisor's values."""
        options, _ = self.parse(
            "--workers=2",
            "--idle-timeout=0.25",
            "--deny=10.0.0.0/8",
            "--max-per-ip=3",
            "--log-level=echotwist=warn",
        )
        assert options is not None
        worker, error = self.parse(*workerOptions(options))
        assert worker is not None, error
        for name in FORWARDED + FORWARDED_REPEATED:
            self.assertEqual(worker[name], options[name], name)
        self.assertEqual(worker["logLevels"], options["logLevels"])
        self.assertEqual(worker["workers"], 1)

    def test_defaultsForwarded(self) -> None:
        """Without options, a worker gets the single-process defaults."""
        options, _ = self.parse("--workers=2")
        assert options is not None
        worker, _ = self.parse(*workerOptions(options))
        single, _ = self.parse()
        assert worker is not None
        assert single is not None
        for name in FORWARDED + FORWARDED_REPEATED:
            self.assertEqual(worker[name], single[name], name)

    def test_badCount(self) -> None:
        """Zero, negative or non-numeric counts are one-line usage errors."""
        for count in ("0", "-2", "many", "100000"):
            options, error = self.parse("--workers", count)
            self.assertIsNone(options)
            self.assertEqual(len(error.splitlines()), 1)
            self.assertIn("--workers", error)

    def test_auto(self) -> None:
        """C{auto} is one worker per CPU the process may use."""
        self.assertEqual(workerCount("auto", ["tcp:0"], lambda: 3), 3)
        self.assertEqual(workerCount("auto", ["tcp:0"], lambda: 1), 1)
        # One CPU: no supervisor, so any endpoint will do.
        self.assertEqual(workerCount("auto", ["unix:/x"], lambda: 1), 1)
        self.assertRaises(BadEndpoint, workerCount, "auto", ["unix:/x"], lambda: 2)
        options, error = self.parse("--workers", "auto")
        assert options is not None, error
        self.assertEqual(options["workers"], usableCpus())

    def test_onlyTCP(self) -> None:
        """Sharing a UNIX socket among workers is refused, naming what is shared."""
        options, error = self.parse("--workers", "2", "--listen", "unix:/tmp/e.sock")
        self.assertIsNone(options)
        self.assertIn("shares only tcp:, tcp6: and aiotcp: endpoints", error)
        self.assertEqual(len(error.splitlines()), 1)

    def test_helpNamesShared(self) -> None:
        """C{twistd echo --help} says which listeners the workers share."""
        usage = " ".join(Options(reactor=Clock()).getUsage().split())
        self.assertIn("sharing the tcp:/tcp6:/aiotcp: ports", usage)

    def test_countWithNative(self) -> None:
        """C{aiotcp:} endpoints, alone or with C{tcp:} ones, take many workers."""
        self.assertEqual(
            workerCount("2", ["aiotcp:0:interface=127.0.0.1"], lambda: 8), 2
        )
        self.assertEqual(
            workerCount("3", ["tcp:0", "aiotcp:5000", "tcp6:0"], lambda: 8), 3
        )
        self.assertRaises(
            BadEndpoint, workerCount, "2", ["aiotcp:0", "unix:/x"], eightCpus
        )
        # One worker is the single process: anything goes.
        self.assertEqual(workerCount("1", ["unix:/x"], eightCpus), 1)


class UvloopLoop:
    """Stands for a uvloop event loop: its class comes from uvloop."""

    __module__ = "uvloop"


class OtherLoop:
    """Stands for an event loop of asyncio's own (or any but uvloop's)."""


class AdoptedEndpointTests(SynchronousTestCase):
    """A worker serves each inherited socket with the matching endpoint."""

    def test_tcp(self) -> None:
        """A C{tcp:FD} socket: Twisted's adopted endpoint, on the reactor."""
        reactor = MemoryReactor()
        endpoint = adoptedEndpoint(reactor, Inherited(socket.AF_INET6, 7))
        assert isinstance(endpoint, AdoptedStreamServerEndpoint)
        self.assertEqual(
            (endpoint.reactor, endpoint.fileno, endpoint.addressFamily),
            (reactor, 7, socket.AF_INET6),
        )

    def test_native(self) -> None:
        """An C{aiotcp:FD} socket: the native endpoint on the reactor's loop."""
        reactor = MemoryReactor()
        loop = OtherLoop()
        asked: list[object] = []

        def loopOf(given: object) -> asyncio.AbstractEventLoop:
            asked.append(given)
            return cast(asyncio.AbstractEventLoop, loop)

        endpoint = adoptedEndpoint(
            reactor, Inherited(socket.AF_INET, 9, native=True), loopOf
        )
        assert isinstance(endpoint, AdoptedNativeEndpoint)
        self.assertEqual(
            (asked, endpoint.loop, endpoint.fileno, endpoint.addressFamily),
            ([reactor], loop, 9, socket.AF_INET),
        )

    def test_nativeNeedsAsyncioReactor(self) -> None:
        """Without an asyncio reactor a native socket cannot be served."""
        error = self.assertRaises(
            ValueError,
            adoptedEndpoint,
            MemoryReactor(),
            Inherited(socket.AF_INET, 9, native=True),
        )
        self.assertIn("asyncio reactor", str(error))


class FakeProcess:
    """A spawned process: records the signals sent to it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        # Set once the process has exited: signals then raise, as Twisted's do.
        self.exited = False

    def signalProcess(self, signalID: str | int) -> None:
        """Record C{signalID}; raise L{ProcessExitedAlready} once exited."""
        if self.exited:
            raise ProcessExitedAlready()
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
        process = FakeProcess(1000 + len(self.spawned))
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
    descriptions: Sequence[str] = ("tcp:5000:interface=127.0.0.1",),
    cpus: Sequence[int] | None = None,
    **kwargs: Any,  # noqa: ANN401 (WorkerPool's own keyword arguments)
) -> tuple[WorkerPool, FakeProcessReactor, list[ListeningSocket]]:
    """A started pool over a fake reactor, its sockets already listening.

    Each worker has one socket per description (numbered from 100 up,
    in order) and its metrics socket (from 200).  C{kwargs} go to
    L{WorkerPool}.
    """
    reactor = FakeProcessReactor()
    workers = WorkerPool(
        descriptions,
        count,
        cast(IReactorProcess, reactor),
        reactor,
        options=["--idle-timeout=1.0"],
        metrics=[f"tcp:{9100 + i}" for i in range(count)],
        stopTimeout=12.0,
        executable="python",
        cpus=cpus,
        **kwargs,
    )
    sockets = [ListeningSocket(100 + i) for i in range(count * len(descriptions))]
    metrics = [ListeningSocket(200 + i) for i in range(count)]
    workers.sockets = [
        [
            *(cast(socket.socket, s) for s in sockets[i::count]),
            cast(socket.socket, metrics[i]),
        ]
        for i in range(count)
    ]
    # The sockets above stand for those bound early: only start the workers.
    workers.startedEarly = True
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
        """Each worker gets its own socket as descriptor 4, then the options."""
        _, reactor, sockets = pool(3)
        self.assertEqual(
            [list(args) for _, args, _ in reactor.spawned],
            [
                [
                    "python",
                    "-m",
                    "echotwist.workers",
                    str(i),
                    "default",
                    "tcp:4",
                    "metrics=tcp:5",
                    "--",
                    "--idle-timeout=1.0",
                    f"--metrics=tcp:{9099 + i}",
                ]
                for i in (1, 2, 3)
            ],
        )
        self.assertEqual(
            [fds[4] for fds in reactor.childFDs], [s.fileno() for s in sockets]
        )
        self.assertEqual([fds[5] for fds in reactor.childFDs], [200, 201, 202])
        self.assertEqual({fds[3] for fds in reactor.childFDs}, {"r"})
        # The supervisor keeps its copies, for replacements, until it stops.
        self.assertFalse(any(s.closed for s in sockets))

    def test_pinnedWorkers(self) -> None:
        """With CPUs given, worker I is told its CPU before the options."""
        _, reactor, _ = pool(3, cpus=[0, 1, 0])
        self.assertEqual(
            [list(args)[5:9] for _, args, _ in reactor.spawned],
            [["tcp:4", "metrics=tcp:5", f"cpu={cpu}", "--"] for cpu in (0, 1, 0)],
        )

    def test_nativeSockets(self) -> None:
        """C{aiotcp:} sockets are handed over as C{aiotcp:FD}/C{aiotcp6:FD}."""
        _, reactor, _ = pool(
            2,
            [
                "aiotcp:5000:interface=127.0.0.1",
                "tcp:5001:interface=127.0.0.1",
                r"aiotcp:5002:interface=\:\:1",
            ],
        )
        self.assertEqual(
            [list(args)[5:9] for _, args, _ in reactor.spawned],
            [["aiotcp:4", "tcp:5", "aiotcp6:6", "metrics=tcp:7"]] * 2,
        )
        self.assertEqual(
            [[fds[n] for n in (4, 5, 6)] for fds in reactor.childFDs],
            [[100, 102, 104], [101, 103, 105]],
        )

    def test_workerReactor(self) -> None:
        """Workers follow a fast epoll supervisor; otherwise the default."""
        self.assertEqual(
            workerReactor(FastEPollReactor.__new__(FastEPollReactor)), "fastepoll"
        )
        self.assertEqual(workerReactor(Clock()), "default")

    def test_workerReactorAsyncio(self) -> None:
        """An asyncio supervisor's workers run uvloop if its loop is uvloop's."""
        reactor = AsyncioSelectorReactor.__new__(AsyncioSelectorReactor)
        self.assertEqual(workerReactor(reactor, UvloopLoop()), "uvloop")
        self.assertEqual(workerReactor(reactor, OtherLoop()), "asyncio")
        self.assertEqual(workerReactor(reactor, None), "asyncio")
        # A uvloop loop does not make another reactor an asyncio one.
        self.assertEqual(workerReactor(Clock(), UvloopLoop()), "default")

    def test_spawnsOnSupervisorReactor(self) -> None:
        """The pool names the supervisor's reactor kind on each worker's line."""
        _, reactor, _ = pool(1)
        self.assertEqual(reactor.spawned[0][1][4], "default")

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
        """Stopping closes the sockets, sends SIGTERM to each worker and waits
        for every exit.
        """
        workers, reactor, sockets = pool(2)
        stopped = workers.stopService()
        self.assertTrue(all(s.closed for s in sockets))
        self.assertEqual([p.signals for _, _, p in reactor.spawned], [["TERM"]] * 2)
        end(reactor, 0)
        self.assertNoResult(stopped)
        end(reactor, 1)
        self.successResultOf(stopped)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_killAfterTimeout(self) -> None:
        """A worker that ignores SIGTERM is killed after the stop timeout."""
        workers, reactor, _ = pool(1)
        stopped = workers.stopService()
        reactor.advance(11.9)
        self.assertEqual(reactor.spawned[0][2].signals, ["TERM"])
        reactor.advance(0.1)
        self.assertEqual(reactor.spawned[0][2].signals, ["TERM", "KILL"])
        end(reactor, 0, status=9)
        self.successResultOf(stopped)

    def test_killAfterExitIgnored(self) -> None:
        """A worker that exited before the kill is not an error."""
        workers, reactor, _ = pool(1)
        stopped = workers.stopService()
        reactor.spawned[0][2].exited = True
        reactor.advance(12.0)
        self.assertEqual(reactor.spawned[0][2].signals, ["TERM"])
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
