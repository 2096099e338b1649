"""Unit tests for the UDP and listener options of L{echotwist.tap}."""

from __future__ import annotations

import io
from pathlib import Path

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.endpoints import DEFAULT_BACKLOG
from echotwist.protocol import EchoFactory
from echotwist.server.filelimit import FileLimitService
from echotwist.server.listening import DatagramListeningService, ListeningService
from echotwist.server.shutdown import DrainService
from echotwist.server.udp import UDPListen
from echotwist.tap import Options, makeService


def parse(*arguments: str) -> tuple[Options, io.StringIO]:
    """Parse C{arguments} with a memory reactor; return the options and stderr."""
    errors = io.StringIO()
    options = Options(reactor=MemoryReactorClock(), errorStream=errors)
    options.parseOptions(list(arguments))
    return options, errors


class UDPOptionsTests(SynchronousTestCase):
    """C{--udp} and C{--udp-rate} parse, repeat and reject bad values."""

    def test_noUDPByDefault(self) -> None:
        """Without C{--udp} nothing listens for datagrams; the rate is 1000."""
        options, _ = parse()
        self.assertEqual((options["udpListens"], options["udp-rate"]), ([], 1000.0))

    def test_repeatable(self) -> None:
        """Every C{--udp} is kept, in order."""
        options, _ = parse("--udp", "7", "--udp", r"udp:0:interface=\:\:1")
        self.assertEqual(
            options["udpListens"],
            [UDPListen("7", 7, ""), UDPListen(r"udp:0:interface=\:\:1", 0, "::1")],
        )

    def test_rate(self) -> None:
        """C{--udp-rate} takes a number of datagrams a second; 0 is accepted."""
        self.assertEqual(parse("--udp-rate", "2.5")[0]["udp-rate"], 2.5)
        self.assertEqual(parse("--udp-rate", "0")[0]["udp-rate"], 0.0)

    def test_badValuesExit2WithOneLine(self) -> None:
        """Bad ports, interfaces and rates print one line to stderr and exit 2."""
        for arguments, expected in (
            (["--udp", "abc"], "invalid UDP port 'abc'"),
            (["--udp", "70000"], "invalid UDP port '70000': must be 0 to 65535"),
            (["--udp", "udp:7:interface=eth0"], "invalid UDP interface 'eth0'"),
            (["--udp-rate", "fast"], "invalid --udp-rate 'fast'"),
            (["--udp-rate", "-3"], "invalid --udp-rate '-3'"),
            (["--udp-rate", "inf"], "invalid --udp-rate 'inf'"),
            (["--udp-rate", "nan"], "invalid --udp-rate 'nan'"),
        ):
            errors = io.StringIO()
            options = Options(reactor=MemoryReactorClock(), errorStream=errors)
            exit = self.assertRaises(SystemExit, options.parseOptions, arguments)
            self.assertEqual(exit.code, 2)
            line = errors.getvalue()
            self.assertEqual(line.count("\n"), 1, line)
            self.assertIn(expected, line)

    def test_tlsIsTwistedsTLS(self) -> None:
        """C{--listen tls:PATH:PORT} is Twisted's own TLS server endpoint."""
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "localhost.pem").write_text("read when a client connects\n")
        options, _ = parse("--listen", f"tls:{directory}:5000")
        self.assertEqual(
            [d for d, _ in options["endpoints"]],
            [f"tls:{directory}:5000:backlog={DEFAULT_BACKLOG}"],
        )

    def test_tlsWithoutPEMs(self) -> None:
        """A tls: directory that is missing or holds no .pem is one line, exit 2."""
        empty = Path(self.mktemp())
        empty.mkdir()
        for path in (empty, empty / "missing"):
            errors = io.StringIO()
            options = Options(reactor=MemoryReactorClock(), errorStream=errors)
            exit = self.assertRaises(
                SystemExit, options.parseOptions, ["--listen", f"tls:{path}:5000"]
            )
            self.assertEqual(exit.code, 2)
            self.assertIn("is not a directory of .pem files", errors.getvalue())
            self.assertEqual(errors.getvalue().count("\n"), 1)

    def test_badKeyFile(self) -> None:
        """A key file that is not PEM is one line and exit 2, not a traceback."""
        bad = Path(self.mktemp())
        bad.write_text("not a key\n")
        errors = io.StringIO()
        options = Options(reactor=MemoryReactorClock(), errorStream=errors)
        exit = self.assertRaises(
            SystemExit, options.parseOptions, ["--listen", f"ssl:0:privateKey={bad}"]
        )
        self.assertEqual(exit.code, 2)
        self.assertEqual(errors.getvalue().count("\n"), 1)
        self.assertIn(f"invalid endpoint 'ssl:0:privateKey={bad}'", errors.getvalue())

    def test_missingKeyFile(self) -> None:
        """A TLS listener whose key file is missing is one line and exit 2."""
        errors = io.StringIO()
        options = Options(reactor=MemoryReactorClock(), errorStream=errors)
        missing = self.mktemp()
        exit = self.assertRaises(
            SystemExit,
            options.parseOptions,
            ["--listen", f"ssl:0:privateKey={missing}"],
        )
        self.assertEqual(exit.code, 2)
        self.assertIn(missing, errors.getvalue())
        self.assertEqual(errors.getvalue().count("\n"), 1)


class MakeServiceTests(SynchronousTestCase):
    """L{makeService} builds one L{MultiService} for TCP and UDP listeners."""

    def test_children(self) -> None:
        """The TCP listener and one UDP service per C{--udp} share one stats."""
        options, _ = parse("--port", "tcp:0", "--udp", "0", "--udp", "udp:0")
        service = makeService(options)
        self.assertIsInstance(service, MultiService)
        children = list(service)
        self.assertEqual(
            [type(c) for c in children],
            [
                DrainService,
                FileLimitService,
                ListeningService,
                DatagramListeningService,
                DatagramListeningService,
            ],
        )
        tcp = children[2]
        assert isinstance(tcp, ListeningService)
        assert isinstance(tcp.factory, EchoFactory)
        stats = {id(tcp.factory.stats)}
        guards = set()
        for child in children[3:]:
            assert isinstance(child, DatagramListeningService)
            stats.add(id(child.protocol.stats))
            guards.add(id(child.protocol.guard))
        self.assertEqual((len(stats), len(guards)), (1, 1))

    def test_tcpOnly(self) -> None:
        """Without C{--udp} the service holds the drain, the file limit and the
        TCP listener only.
        """
        options, _ = parse()
        service = makeService(options)
        self.assertEqual(
            [type(c) for c in service],
            [DrainService, FileLimitService, ListeningService],
        )
