"""Tests for L{echotwist.endpoints}: descriptions taken apart and checked."""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from echotwist.endpoints import (
    DEFAULT_BACKLOG,
    BadEndpoint,
    Description,
    formatHostPort,
    listenArgument,
    normalizeListen,
    parseHost,
    splitDescription,
)

# A description for each listening type that takes backlog=, and where
# Twisted's (or aiotcp:'s) parser takes the backlog positionally.
WITH_BACKLOG = {
    "tcp:5000": "tcp:5000:127.0.0.1:{}",
    "tcp6:5000": "tcp6:5000:{}",
    "ssl:5443:privateKey=k.pem": "ssl:5443:k.pem:c.pem:SSLv23_METHOD:0.0.0.0:{}",
    "tls:/etc/pems:5443": "tls:/etc/pems:5443:{}",
    "unix:/run/echo.sock": "unix:/run/echo.sock:600:{}",
    "aiotcp:5000": "aiotcp:5000:127.0.0.1:{}",
}


class SplitDescriptionTests(SynchronousTestCase):
    """L{splitDescription} reads a description as Twisted's parser does."""

    def test_parts(self) -> None:
        """The kind, positional arguments and NAME=VALUE ones come apart."""
        self.assertEqual(
            splitDescription("tcp:5000:interface=127.0.0.1:50"),
            Description("tcp", ["5000", "50"], {"interface": "127.0.0.1"}),
        )

    def test_escapes(self) -> None:
        r"""A backslash makes any next character plain: C{\:}, C{\=}, C{\\}."""
        self.assertEqual(
            splitDescription(r"tcp6:5000:interface=\:\:1").keywords,
            {"interface": "::1"},
        )
        self.assertEqual(
            splitDescription(r"unix:/a\=b").positional,
            ["/a=b"],
        )
        # An escaped backslash does not escape the colon after it.
        self.assertEqual(
            splitDescription(r"unix:C\\:mode=600"),
            Description("unix", ["C\\"], {"mode": "600"}),
        )

    def test_equalsInValue(self) -> None:
        """Only the first C{=} of an argument names it; later ones are its value."""
        self.assertEqual(
            splitDescription("unix:/x:lockfile=a=b").keywords, {"lockfile": "a=b"}
        )

    def test_loneBackslash(self) -> None:
        """A description ending in a lone backslash is refused, saying so."""
        for text in ("tcp:0:interface=\\", "unix:/tmp/x\\\\\\"):
            error = self.assertRaises(BadEndpoint, splitDescription, text)
            self.assertEqual(
                str(error),
                f"invalid endpoint {text!r}: it ends in a lone backslash"
                " (a backslash escapes the next character; \\\\ is one backslash)",
            )
        self.assertEqual(splitDescription("unix:/tmp/x\\\\").positional, ["/tmp/x\\"])


class NormalizeListenTests(SynchronousTestCase):
    """L{normalizeListen} checks a listening description and fills in the backlog."""

    def test_defaultBacklog(self) -> None:
        """Each type taking backlog= gets the system's largest when none is given."""
        self.assertEqual(DEFAULT_BACKLOG, socket.SOMAXCONN)
        suffix = f":backlog={socket.SOMAXCONN}"
        self.assertEqual(normalizeListen(" 80 "), "tcp:80" + suffix)
        for text in WITH_BACKLOG:
            self.assertEqual(normalizeListen(text), text + suffix)

    def test_givenBacklogKept(self) -> None:
        """A backlog given by name or position is kept as it is."""
        for text, positional in WITH_BACKLOG.items():
            named = f"{text}:backlog=100"
            self.assertEqual(normalizeListen(named), named)
            self.assertEqual(
                normalizeListen(positional.format(100)), positional.format(100)
            )

    def test_backlogRange(self) -> None:
        """A backlog outside 1 to 65535, or not in ASCII digits, is refused."""
        for text, positional in WITH_BACKLOG.items():
            for bad, why in (
                ("0", "must be 1 to 65535"),
                ("-1", "must be 1 to 65535"),
                ("65536", "must be 1 to 65535"),
                ("99999999999999999999", "must be 1 to 65535"),
                ("١٢", "not a whole number"),
                ("1_0", "not a whole number"),
            ):
                for description in (f"{text}:backlog={bad}", positional.format(bad)):
                    error = self.assertRaises(BadEndpoint, normalizeListen, description)
                    self.assertEqual(str(error), f"invalid backlog {bad!r}: {why}")
            for good in ("1", "65535"):
                normalizeListen(f"{text}:backlog={good}")

    def test_kindIgnoresCase(self) -> None:
        """Twisted finds plugin types in any case; so are they checked."""
        self.assertRaises(BadEndpoint, normalizeListen, "TCP6:0:backlog=-1")
        self.assertEqual(
            normalizeListen("TCP6:0"), f"tcp6:0:backlog={socket.SOMAXCONN}"
        )

    def test_systemdUntouched(self) -> None:
        """Sockets passed by systemd already listen: no backlog is added."""
        self.assertEqual(
            normalizeListen("systemd:domain=INET:index=0"),
            "systemd:domain=INET:index=0",
        )

    def test_otherNumbers(self) -> None:
        """Every number Twisted would read with C{int()} must be ASCII digits."""
        for text, message in (
            ("unix:/x:mode=٦٦٦", "invalid mode '٦٦٦': not an octal number"),
            ("unix:/x:٦٦٦", "invalid mode '٦٦٦': not an octal number"),
            ("unix:/x:mode=1000", "invalid mode '1000': must be 0 to 777 (octal)"),
            # Arabic-Indic digits one and zero, which int() would take.
            (
                "unix:/x:lockfile=\u0661",
                "invalid lockfile '\u0661': not a whole number",
            ),
            ("unix:/x:lockfile=2", "invalid lockfile '2': must be 0 to 1"),
            (
                "systemd:domain=INET:index=\u0660",
                "invalid systemd index '\u0660': not a whole number",
            ),
            ("systemd:INET:-1", "invalid systemd index '-1': must be 0 or more"),
            ("tcp:١٢", "invalid port '١٢': not a whole number"),
        ):
            error = self.assertRaises(BadEndpoint, normalizeListen, text)
            self.assertEqual(str(error), message)
        normalizeListen("unix:/x:mode=660:lockfile=0")
        normalizeListen("systemd:domain=INET6:index=2")

    def test_loneBackslash(self) -> None:
        """A trailing backslash is a clear error, not Twisted's StopIteration."""
        error = self.assertRaises(BadEndpoint, normalizeListen, "tcp:0:interface=\\")
        self.assertIn("ends in a lone backslash", str(error))

    def test_twistedListensWithTheBacklog(self) -> None:
        """Twisted's endpoints built from the result listen with that backlog."""
        reactor = MemoryReactor()
        factory = Factory.forProtocol(Protocol)
        for text in ("tcp:5000", "tcp6:5001", "tcp:5002:backlog=7"):
            serverFromString(reactor, normalizeListen(text)).listen(factory)
        self.assertEqual(
            [backlog for _, _, backlog, _ in reactor.tcpServers],
            [socket.SOMAXCONN, socket.SOMAXCONN, 7],
        )
        serverFromString(reactor, normalizeListen("unix:/x")).listen(factory)
        self.assertEqual(reactor.unixServers[0][2], socket.SOMAXCONN)
        directory = Path(self.mktemp())
        directory.mkdir()
        tls = serverFromString(reactor, normalizeListen(f"tls:{directory}:5003"))
        tls.listen(factory)
        self.assertEqual(reactor.tcpServers[-1][2], socket.SOMAXCONN)


class ListenArgumentTests(SynchronousTestCase):
    """L{listenArgument} finds an argument by name or at its type's position."""

    def test_byNameOrPosition(self) -> None:
        """Interface and backlog are found where each type's parser takes them."""
        for text, interface, backlog in (
            ("tcp:5000:127.0.0.1:100", "127.0.0.1", "100"),
            ("tcp:5000:interface=127.0.0.1:backlog=100", "127.0.0.1", "100"),
            ("tcp6:5000:100:\\:\\:1", "::1", "100"),
            ("aiotcp:5000:127.0.0.1:100", "127.0.0.1", "100"),
            ("ssl:5443:k.pem:c.pem:SSLv23_METHOD:127.0.0.1:100", "127.0.0.1", "100"),
            ("tls:/pems:5443:100:127.0.0.1", "127.0.0.1", "100"),
            ("TCP6:5000:backlog=100", None, "100"),
            ("tcp:5000", None, None),
        ):
            description = splitDescription(text)
            self.assertEqual(
                (
                    listenArgument(description, "interface"),
                    listenArgument(description, "backlog"),
                ),
                (interface, backlog),
                text,
            )

    def test_otherTypes(self) -> None:
        """A type without positions of its own has its arguments by name only."""
        description = splitDescription("onion:80:backlog=3:7")
        self.assertEqual(listenArgument(description, "backlog"), "3")
        self.assertIsNone(listenArgument(description, "interface"))


class HostTests(SynchronousTestCase):
    """Hosts as typed on a command line, and shown with a port."""

    def test_parseHost(self) -> None:
        """Brackets around an IPv6 address are taken off; other hosts stay."""
        self.assertEqual(parseHost("[::1]"), "::1")
        self.assertEqual(parseHost("[fe80::1%eth0]"), "fe80::1%eth0")
        self.assertEqual(parseHost("::1"), "::1")
        self.assertEqual(parseHost("127.0.0.1"), "127.0.0.1")
        self.assertEqual(parseHost("example.test"), "example.test")

    def test_badBrackets(self) -> None:
        """Brackets that are unbalanced or hold no IPv6 address are refused."""
        for text in ("[::1", "::1]", "[127.0.0.1]", "[example.test]", "[]", "[[::1]]"):
            error = self.assertRaises(ValueError, parseHost, text)
            self.assertEqual(
                str(error),
                f"invalid host {text!r}: brackets enclose an IPv6 address only",
            )

    def test_formatHostPort(self) -> None:
        """An IPv6 address is bracketed once before the port; others are not."""
        self.assertEqual(formatHostPort("::1", 7), "[::1]:7")
        self.assertEqual(formatHostPort("127.0.0.1", 7), "127.0.0.1:7")
        self.assertEqual(formatHostPort("example.test", 7), "example.test:7")
