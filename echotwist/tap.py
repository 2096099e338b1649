"""twistd glue for the C{echo} plugin: L{Options} and L{makeService}."""

from __future__ import annotations

import sys
from typing import TextIO, cast

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IReactorProcess,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.python import usage

from echotwist.endpoints import DEFAULT_PORT, BadEndpoint, normalizeListen
from echotwist.protocol import EchoFactory
from echotwist.server import ListeningService


class Options(usage.Options):
    """Command-line options of C{twistd echo}."""

    synopsis = "[--port PORT_OR_ENDPOINT] [--listen ENDPOINT ...]"
    longdesc = (
        "An RFC 862 echo server: every byte a client sends comes back. "
        "PORT_OR_ENDPOINT is a port number (5000 means tcp:5000) or a Twisted "
        "endpoint description such as tcp6:5000, "
        "tcp:5000:interface=127.0.0.1 or unix:/run/echo.sock. "
        f"With neither --port nor --listen it listens on tcp:{DEFAULT_PORT}."
    )
    optParameters = [
        [
            "port",
            "p",
            None,
            "Port number or endpoint description to listen on.",
        ],
        [
            "workers",
            None,
            "1",
            "Run N worker processes sharing the tcp:/tcp6: ports (SO_REUSEPORT).",
        ],
    ]

    def __init__(
        self, reactor: IReactorTime | None = None, errorStream: TextIO | None = None
    ) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
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
            except (BadEndpoint, ValueError, KeyError, IndexError, TypeError) as e:
                raise usage.UsageError(_endpointError(text, e)) from None
            endpoints.append((description, endpoint))
        self["endpoints"] = endpoints
        from echotwist.workers import workerCount

        try:
            self["workers"] = workerCount(self["workers"], [d for d, _ in endpoints])
        except BadEndpoint as e:
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
    detail = str(error).strip() or type(error).__name__
    if isinstance(error, ValueError) and "Unknown endpoint type" in detail:
        kind = text.split(":", 1)[0]
        return f"unknown endpoint type {kind!r} in {text!r}"
    return f"invalid endpoint {text!r}: {detail}"


def makeService(options: Options) -> IService:
    """Build the echo service that C{twistd echo} runs."""
    if options["workers"] > 1:
        from echotwist.workers import WorkerPool

        return WorkerPool(
            [description for description, _ in options["endpoints"]],
            options["workers"],
            cast(IReactorProcess, options.reactor),
            options.reactor,
        )
    factory = EchoFactory(clock=options.reactor)
    return ListeningService(options["endpoints"], factory)
