"""Tests for the twistd glue: L{echotwist.tap}, the plugin and the service."""

from __future__ import annotations

import io
import signal
from typing import cast

from twisted.application.service import IService, IServiceMaker, ServiceMaker
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from echotwist.endpoints import (
    DEFAULT_BACKLOG,
    BadEndpoint,
    checkBacklog,
    checkPort,
    formatAddress,
    normalizeListen,
)
from echotwist.protocol import EchoFactory
from echotwist.server.listening import ListeningService
from echotwist.tap import Options, makeService


def parse(*argv: str) -> Options:
    """Parse C{argv} as C{twistd echo} options on a memory reactor."""
    options = Options(reactor=MemoryReactorClock(), errorStream=io.StringIO())
    options.parseOptions(list(argv))
    return options


class PluginTests(SynchronousTestCase):
    """The C{echo} plugin is found the way twistd finds it."""

    def plugin(self) -> ServiceMaker:
        """Return the plugin whose tapname is C{echo}."""
        found = [
            cast(ServiceMaker, p)
            for p in getPlugins(IServiceMaker)
            if p.tapname == "echo"
        ]
        self.assertEqual(len({p.module for p in found}), 1)
        return found[0]

    def test_found(self) -> None:
        """getPlugins(IServiceMaker) finds C{echo}, and it provides the interface."""
        plugin = self.plugin()
        self.assertTrue(verifyObject(IServiceMaker, plugin))
        self.assertEqual(plugin.module, "echotwist.tap")

    def test_optionsAndService(self) -> None:
        """The plugin's options and service are echotwist's."""
        plugin = self.plugin()
        self.assertIs(plugin.options, Options)
        options = parse("--port", "0")
        service = plugin.makeService(options)
        self.assertTrue(verifyObject(IService, service))


class OptionsTests(SynchronousTestCase):
    """Parsing of C{--port} and C{--listen}."""

    def descriptions(self, *argv: str) -> list[str]:
        """The endpoint descriptions C{argv} asks for."""
        return [d for d, _ in parse(*argv)["endpoints"]]

    def test_default(self) -> None:
        """With neither option the server listens on tcp:5000."""
        self.assertEqual(self.descriptions(), [f"tcp:5000:backlog={DEFAULT_BACKLOG}"])

    def test_barePort(self) -> None:
        """A bare number is a TCP port, with -p or --port."""
        self.assertEqual(
            self.descriptions("--port", "5000"), [f"tcp:5000:backlog={DEFAULT_BACKLOG}"]
        )
        self.assertEqual(
            self.descriptions("-p", "7"), [f"tcp:7:backlog={DEFAULT_BACKLOG}"]
        )

    def test_endpointDescriptions(self) -> None:
        """Endpoint descriptions are accepted, the default backlog added if none."""
        for description in (
            "tcp6:5000",
            "tcp:5000:interface=127.0.0.1",
            "unix:/tmp/echo.sock",
        ):
            self.assertEqual(
                self.descriptions("--port", description),
                [f"{description}:backlog={DEFAULT_BACKLOG}"],
            )
        self.assertEqual(
            self.descriptions("--port", "tcp:5000:backlog=100"),
            ["tcp:5000:backlog=100"],
        )

    def test_listenRepeatableWithPort(self) -> None:
        """--listen repeats and combines with --port, --port first."""
        self.assertEqual(
            self.descriptions(
                "--listen", "tcp6:7001", "--port", "7000", "--listen", "7002"
            ),
            [
                f"tcp:7000:backlog={DEFAULT_BACKLOG}",
                f"tcp6:7001:backlog={DEFAULT_BACKLOG}",
                f"tcp:7002:backlog={DEFAULT_BACKLOG}",
            ],
        )

    def test_endpointKinds(self) -> None:
        """Each description becomes the matching Twisted endpoint."""
        endpoints = [
            e
            for _, e in parse(
                "--listen", "tcp:1", "--listen", "tcp6:2", "--listen", "unix:/x"
            )["endpoints"]
        ]
        self.assertIsInstance(endpoints[0], TCP4ServerEndpoint)
        self.assertIsInstance(endpoints[1], TCP6ServerEndpoint)
        self.assertIsInstance(endpoints[2], UNIXServerEndpoint)

    def test_badValues(self) -> None:
        """Bad ports and endpoints print one line on stderr and exit 2."""
        cases = {
            ("--port", "abc"): "invalid port 'abc'",
            ("--port", "70000"): "invalid port '70000': must be 0 to 65535",
            ("--port", "-1"): "invalid port '-1'",
            ("--port", "tcp:70000"): "invalid port '70000'",
            ("--listen", "foo:12"): "unknown endpoint type 'foo'",
            ("--listen", "tcp:"): "invalid port ''",
            ("--port", "tcp:0:interface=127.0.0.1:backlog=99999999999999999999"): (
                "invalid backlog '99999999999999999999': must be 1 to 65535"
            ),
            ("--port", "tcp:0:backlog=-1"): "invalid backlog '-1': must be 1 to 65535",
            ("--port", "tcp:0:backlog=0"): "invalid backlog '0': must be 1 to 65535",
            ("--port", "unix:/x:backlog=0"): "invalid backlog '0': must be 1 to 65535",
            ("--port", "tcp:0:interface=\\"): "ends in a lone backslash",
            # Arabic-Indic 12, which int() would take.
            ("--max-per-ip", "\u0661\u0662"): "--max-per-ip: invalid count",
            ("--listen", ""): "empty endpoint description",
            ("--bogus",): "option --bogus not recognized",
        }
        for argv, expected in cases.items():
            stream = io.StringIO()
            options = Options(reactor=MemoryReactorClock(), errorStream=stream)
            with self.assertRaises(SystemExit) as caught:
                options.parseOptions(list(argv))
            self.assertEqual(caught.exception.code, 2, argv)
            message = stream.getvalue()
            self.assertIn(expected, message, argv)
            self.assertTrue(message.startswith("twistd echo: error: "), message)
            self.assertEqual(message.count("\n"), 1, message)


class EndpointTextTests(SynchronousTestCase):
    """The pure helpers of L{echotwist.endpoints}."""

    def test_checkPort(self) -> None:
        """Ports 0 to 65535 pass; others raise L{BadEndpoint}."""
        self.assertEqual(checkPort("0"), 0)
        self.assertEqual(checkPort("65535"), 65535)
        for bad in ("65536", "x", "", "1.5"):
            self.assertRaises(BadEndpoint, checkPort, bad)

    def test_checkBacklog(self) -> None:
        """Backlogs 1 to 65535 pass; others raise L{BadEndpoint} saying why."""
        self.assertEqual(checkBacklog("1"), 1)
        self.assertEqual(checkBacklog("65535"), 65535)
        for bad, why in (
            ("99999999999", "must be 1 to 65535"),
            ("-1", "must be 1 to 65535"),
            ("0", "must be 1 to 65535"),
            ("x", "not a whole number"),
        ):
            error = self.assertRaises(BadEndpoint, checkBacklog, bad)
            self.assertEqual(str(error), f"invalid backlog {bad!r}: {why}")

    def test_normalize(self) -> None:
        """Bare numbers become tcp:N; keyword ports are checked too."""
        self.assertEqual(normalizeListen(" 80 "), f"tcp:80:backlog={DEFAULT_BACKLOG}")
        self.assertEqual(
            normalizeListen("tcp:port=80"), f"tcp:port=80:backlog={DEFAULT_BACKLOG}"
        )
        self.assertRaises(BadEndpoint, normalizeListen, "tcp:port=99999")
        self.assertRaises(BadEndpoint, normalizeListen, "tcp:interface=::1")

    def test_formatAddress(self) -> None:
        """Bound addresses read back as endpoint-like text."""
        self.assertEqual(
            formatAddress(IPv4Address("TCP", "127.0.0.1", 5000)), "tcp:127.0.0.1:5000"
        )
        self.assertEqual(
            formatAddress(IPv6Address("TCP", "::1", 5000)), "tcp6:[::1]:5000"
        )
        self.assertEqual(formatAddress(UNIXAddress(b"/run/e.sock")), "unix:/run/e.sock")


class MakeServiceTests(SynchronousTestCase):
    """L{makeService} listens where asked."""

    def test_listensWhereAsked(self) -> None:
        """Starting the service listens on every endpoint with an EchoFactory."""
        reactor = MemoryReactorClock()
        options = Options(reactor=reactor)
        options.parseOptions(
            ["--port", "5000", "--listen", "tcp:5001:interface=127.0.0.1"]
        )
        service = makeService(options)
        # Starting takes over this process's signals; give them back after.
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        service.privilegedStartService()
        service.startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(5000, ""), (5001, "127.0.0.1")],
        )
        self.assertIsInstance(reactor.tcpServers[0][1], EchoFactory)
        self.successResultOf(cast(ListeningService, service).stopService())


class FailingEndpoint:
    """An endpoint whose listen fails as a port in use does."""

    def listen(self, factory: object) -> object:
        """Fail to listen."""
        return fail(
            CannotListenError("any", 5000, OSError(98, "Address already in use"))
        )


@implementer(IListeningPort)
class RecordingPort:
    """A listening port that records whether it was stopped."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.stopped = 0

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> None:
        """Record the stop."""
        self.stopped += 1

    def getHost(self) -> IPv4Address:
        """The address it listens on."""
        return IPv4Address("TCP", "127.0.0.1", self.number)


@implementer(IStreamServerEndpoint)
class OpeningEndpoint:
    """An endpoint whose listen succeeds, keeping the ports it opened."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.ports: list[RecordingPort] = []

    def listen(self, factory: object) -> Deferred[IListeningPort]:
        """Listen at once on a L{RecordingPort}."""
        port = RecordingPort(self.number)
        self.ports.append(port)
        return succeed(port)


class ListeningServiceTests(SynchronousTestCase):
    """L{ListeningService} is all or nothing, and says why in one line."""

    def test_cannotListen(self) -> None:
        """A port in use prints one line on the error stream and exits 1."""
        reactor = MemoryReactorClock()
        stream = io.StringIO()
        good = OpeningEndpoint(6000)
        bad = cast(IStreamServerEndpoint, FailingEndpoint())
        service = ListeningService(
            [("tcp:6000", good), ("tcp:5000", bad)],
            EchoFactory(clock=reactor),
            errorStream=stream,
        )
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(stream.getvalue().count("\n"), 1)
        self.assertIn("twistd echo: cannot listen on tcp:5000:", stream.getvalue())
        self.assertIn("Address already in use", stream.getvalue())
        # The port that did open was closed again: all or nothing.
        [opened] = good.ports
        self.assertEqual(opened.stopped, 1)
        self.assertEqual(service.ports, [])

    def test_startWithoutPrivilegedStart(self) -> None:
        """StartService alone listens too, once."""
        reactor = MemoryReactorClock()
        service = ListeningService(
            [("tcp:6000", TCP4ServerEndpoint(reactor, 6000))],
            EchoFactory(clock=reactor),
        )
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertEqual(len(service.ports), 1)
