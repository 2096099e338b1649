"""Unit tests for the hardening options of C{twistd echo} and its service tree."""

from __future__ import annotations

import io
import ipaddress
import signal
import socket
from typing import cast

from twisted.application.service import IServiceCollection, MultiService
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.internals.emfile import AcceptGuard
from echotwist.internals.leanserver import LeanServer
from echotwist.protocol import EchoFactory
from echotwist.server.filelimit import FileLimitService
from echotwist.server.listening import ListeningService
from echotwist.server.shutdown import DrainService
from echotwist.tap import Options, makeService


def parse(*arguments: str) -> tuple[Options, MemoryReactorClock]:
    """Parse C{arguments} as C{twistd echo} would, on a memory reactor."""
    reactor = MemoryReactorClock()
    options = Options(reactor=reactor, errorStream=io.StringIO())
    options.parseOptions(list(arguments))
    return options, reactor


class OptionsTests(SynchronousTestCase):
    """The limit, timeout and address options parse, default and reject."""

    def test_defaults(self) -> None:
        """Idle 300 s, 10000 connections, no per-IP cap, 10 s drain, no rules."""
        options, _ = parse()
        self.assertEqual(
            (
                options["idle-timeout"],
                options["max-connections"],
                options["max-per-ip"],
                options["shutdown-timeout"],
                options["allow"],
                options["deny"],
            ),
            (300.0, 10000, 0, 10.0, [], []),
        )

    def test_values(self) -> None:
        """Given values are parsed; --allow and --deny repeat, IPv4 and IPv6."""
        options, _ = parse(
            "--idle-timeout=2.5",
            "--max-connections=3",
            "--max-per-ip=1",
            "--shutdown-timeout=0",
            "--allow=127.0.0.0/8",
            "--allow=::1",
            "--deny=127.0.0.2",
        )
        self.assertEqual(options["idle-timeout"], 2.5)
        self.assertEqual(options["max-connections"], 3)
        self.assertEqual(options["max-per-ip"], 1)
        self.assertEqual(options["shutdown-timeout"], 0.0)
        self.assertEqual(
            options["allow"],
            [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1")],
        )
        self.assertEqual(options["deny"], [ipaddress.ip_network("127.0.0.2")])

    def test_badValues(self) -> None:
        """Bad values: one line on standard error naming the option, exit 2."""
        for arguments in (
            ["--idle-timeout=-1"],
            ["--max-connections=lots"],
            ["--max-per-ip=-2"],
            ["--shutdown-timeout=inf"],
            ["--allow=10.0.0.1/8"],
            ["--deny=example.org"],
            ["--metrics=tcp:99999"],
        ):
            errors = io.StringIO()
            options = Options(reactor=MemoryReactorClock(), errorStream=errors)
            with self.assertRaises(SystemExit) as caught:
                options.parseOptions(arguments)
            self.assertEqual(caught.exception.code, 2)
            option = arguments[0].split("=")[0]
            self.assertIn(f"error: {option}: ", errors.getvalue())
            self.assertEqual(errors.getvalue().count("\n"), 1)

    def test_helpDocumentsOptions(self) -> None:
        """--help lists every hardening option."""
        text = str(Options(reactor=MemoryReactorClock()))
        for option in (
            "--idle-timeout",
            "--max-connections",
            "--max-per-ip",
            "--allow",
            "--deny",
            "--shutdown-timeout",
            "--metrics",
        ):
            self.assertIn(option, text)


class MakeServiceTests(SynchronousTestCase):
    """L{makeService} builds a service tree others can extend."""

    def test_serviceTree(self) -> None:
        """A MultiService holding the listeners and the drain, sharing a factory."""
        options, reactor = parse("--listen=tcp:0", "--max-connections=7")
        service = makeService(options)
        self.assertIsInstance(service, MultiService)
        self.assertTrue(IServiceCollection.providedBy(service))
        children = list(service)
        listening = [c for c in children if isinstance(c, ListeningService)]
        draining = [c for c in children if isinstance(c, DrainService)]
        self.assertEqual((len(listening), len(draining)), (1, 1))
        self.assertIs(children[0], draining[0], "SIGTERM is handled before listening")
        fileLimits = [c for c in children if isinstance(c, FileLimitService)]
        self.assertEqual(len(fileLimits), 1)
        self.assertEqual(fileLimits[0].maxConnections, 7)
        self.assertLess(
            children.index(fileLimits[0]),
            children.index(listening[0]),
            "descriptors are raised before listening",
        )
        factory = listening[0].factory
        self.assertIsInstance(factory, EchoFactory)
        self.assertIs(draining[0].factory, factory)
        assert isinstance(factory, EchoFactory)
        assert factory.limits is not None
        self.assertEqual(factory.limits.maxConnections, 7)
        self.assertEqual(factory.idleTimeout, 300.0)
        # Starting takes over this process's signals; give them back after.
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        service.privilegedStartService()
        self.assertEqual(signal.getsignal(signal.SIGTERM), draining[0].stopSignal)
        self.assertEqual(signal.getsignal(signal.SIGINT), draining[0].stopSignal)
        self.assertEqual(signal.getsignal(signal.SIGHUP), draining[0].hangUpSignal)
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertIs(reactor.tcpServers[0][1], factory)

    def test_echoPortsAreLeanAndGuarded(self) -> None:
        """Each echo port serves with L{LeanServer} and pauses on EMFILE."""
        options, reactor = parse("--listen=tcp:0")
        service = makeService(options)
        (listening,) = [c for c in service if isinstance(c, ListeningService)]
        port = tcp.Port(0, listening.factory, reactor=reactor)
        realSocket = cast(socket.socket, object())
        port.socket = realSocket
        assert listening.onPort is not None
        listening.onPort(port)
        self.assertIs(port.transport, LeanServer)
        self.assertIsInstance(port.socket, AcceptGuard)
        self.assertIs(cast(AcceptGuard, port.socket).realSocket, realSocket)
