"""twistd glue for the C{echo} plugin: L{Options} and L{makeService}."""

from __future__ import annotations

import sys
from typing import TextIO, cast

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IReactorTime,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.python import usage

from echotwist.endpoints import DEFAULT_PORT, BadEndpoint, normalizeListen
from echotwist.protocol import EchoFactory
from echotwist.server import ListeningService
from echotwist.stats import ServerStats
from echotwist.udp import (
    DEFAULT_RATE,
    DatagramEcho,
    ReflectionGuard,
    parseRate,
    parseUDP,
)
from echotwist.udpserver import DatagramListeningService


class Options(usage.Options):
    """Command-line options of C{twistd echo}."""

    synopsis = (
        "[--port PORT_OR_ENDPOINT] [--listen ENDPOINT ...]"
        " [--udp PORT_OR_UDP ...] [--udp-rate N]"
    )
    longdesc = (
        "An RFC 862 echo server: every byte a client sends comes back. "
        "PORT_OR_ENDPOINT is a port number (5000 means tcp:5000) or a Twisted "
        "endpoint description such as tcp6:5000, "
        "tcp:5000:interface=127.0.0.1, unix:/run/echo.sock, "
        "ssl:5443:privateKey=key.pem:certKey=cert.pem (tls: is the same) or "
        "systemd:domain=INET:index=0 (socket activation). "
        f"With neither --port nor --listen it listens on tcp:{DEFAULT_PORT}. "
        "UDP echo is off unless --udp is given; datagrams from privileged "
        "source ports (<1024) or broadcast/multicast addresses are dropped, "
        "and each source host is limited to --udp-rate datagrams a second."
    )
    optParameters = [
        [
            "port",
            "p",
            None,
            "Port number or endpoint description to listen on.",
        ],
        [
            "udp-rate",
            None,
            str(int(DEFAULT_RATE)),
            "UDP datagrams a second answered per source host (0: no limit).",
        ],
    ]

    def __init__(
        self, reactor: IReactorTime | None = None, errorStream: TextIO | None = None
    ) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["udp"] = []
        self._reactor = reactor
        self.errorStream = errorStream if errorStream is not None else sys.stderr

    @property
    def reactor(self) -> IReactorTime:
        """The reactor to listen with: the one given, else twistd's."""
        if self._reactor is None:
            # twistd has installed its reactor by the time options are
            # parsed; importing it here (not at module level) keeps
            # `twistd -r ...` working.
            from twisted.internet import reactor

            self._reactor = cast(IReactorTime, reactor)
        assert self._reactor is not None
        return self._reactor

    def opt_listen(self, description: str) -> None:
        """Listen on ENDPOINT too (repeatable; a bare number means tcp:N)."""
        self["listen"].append(description)

    def opt_udp(self, description: str) -> None:
        """Echo UDP datagrams on PORT (all IPv4 addresses) or
        udp:PORT:interface=ADDR (repeatable).
        """
        self["udp"].append(description)

    def postOptions(self) -> None:
        """Check every listening description and build its endpoint."""
        wanted: list[str] = list(self["listen"])
        if self["port"] is not None:
            wanted.insert(0, self["port"])
        if not wanted:
            wanted = [f"tcp:{DEFAULT_PORT}"]
        endpoints: list[tuple[str, IStreamServerEndpoint]] = []
        for text in wanted:
            try:
                description = normalizeListen(text)
                endpoint = serverFromString(self.reactor, description)
            # Twisted's endpoint parsers raise whatever their arguments
            # provoke: ValueError, KeyError, TypeError, IndexError, and
            # OSError when ssl: cannot read its default server.pem.
            except Exception as e:
                raise usage.UsageError(_endpointError(text, e)) from None
            endpoints.append((description, endpoint))
        self["endpoints"] = endpoints
        try:
            self["udpListens"] = [parseUDP(text) for text in self["udp"]]
        except BadEndpoint as e:
            raise usage.UsageError(str(e)) from None
        try:
            self["udp-rate"] = parseRate(self["udp-rate"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse C{options}; on a usage error print one line and exit 2.

        twistd's own handler would print the whole help text to standard
        output before the error, burying it; one line on standard error
        is what a command-line user needs.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            self.errorStream.write(
                f"twistd echo: error: {e} (see: twistd echo --help)\n"
            )
            self.errorStream.flush()
            raise SystemExit(2) from None


def _endpointError(text: str, error: Exception) -> str:
    if isinstance(error, BadEndpoint):
        return str(error)
    if isinstance(error, ImportError | NotImplementedError):
        return (
            f"cannot listen on {text!r}: TLS needs pyOpenSSL (install echotwist[tls])"
        )
    detail = str(error).strip() or type(error).__name__
    if isinstance(error, ValueError) and "Unknown endpoint type" in detail:
        kind = text.split(":", 1)[0]
        return f"unknown endpoint type {kind!r} in {text!r}"
    return f"invalid endpoint {text!r}: {detail}"


def makeService(options: Options) -> MultiService:
    """Build the echo service that C{twistd echo} runs.

    A L{MultiService} holding the TCP/stream L{ListeningService} and one
    L{DatagramListeningService} per C{--udp}, all counting in one
    L{ServerStats}; other features add their own children to it.
    """
    stats = ServerStats()
    root = MultiService()
    factory = EchoFactory(clock=options.reactor, stats=stats)
    ListeningService(options["endpoints"], factory).setServiceParent(root)
    if options["udpListens"]:
        # One guard for every UDP port: a source's budget is per host, not
        # per port it aims at.
        guard = ReflectionGuard(options.reactor, rate=options["udp-rate"])
        # twistd's reactor provides IReactorUDP as well as IReactorTime.
        reactor = cast(IReactorUDP, options.reactor)
        for listen in options["udpListens"]:
            service = DatagramListeningService(
                reactor, listen, DatagramEcho(guard, stats)
            )
            service.setServiceParent(root)
    return root
