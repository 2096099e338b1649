"""twistd glue for the C{echo} plugin: L{Options} and L{makeService}."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar, cast

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorProcess,
    IReactorTime,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.reflect import fullyQualifiedName

from echotwist import versionText
from echotwist.endpoints import (
    DEFAULT_PORT,
    BadEndpoint,
    normalizeListen,
    proxiedDescription,
    splitDescription,
)
from echotwist.internals.emfile import guardAccept
from echotwist.internals.leanserver import useLeanServer
from echotwist.internals.proxyheader import ProxyHeaderEndpoint
from echotwist.internals.speedups import describeEchoPath
from echotwist.logging import LogLevelsService, logObserver, parseLogLevel
from echotwist.parsing import parseCount, parseRate, parseSeconds
from echotwist.protocol import EchoFactory
from echotwist.server import limits
from echotwist.server.defaultreactor import installDefaultReactor
from echotwist.server.filelimit import FileLimitService
from echotwist.server.listening import DatagramListeningService, ListeningService
from echotwist.server.pidfile import pidFileProblem
from echotwist.server.shutdown import CleanExitService, DrainService
from echotwist.server.stats import ServerStats
from echotwist.server.udp import (
    DEFAULT_RATE,
    DatagramEcho,
    ReflectionGuard,
    parseUDP,
)
from echotwist.workers.restarts import DEFAULT_LIMIT, DEFAULT_WINDOW

T = TypeVar("T")

_log = Logger(observer=logObserver)


def _checked(parse: Callable[[str], T], option: str, text: str) -> T:
    """Parse C{text} for C{--option}, turning a bad value into a usage error."""
    try:
        return parse(text)
    except ValueError as e:
        raise usage.UsageError(f"--{option}: {e}") from None


class Options(usage.Options):
    """Command-line options of C{twistd echo}."""

    synopsis = (
        "[--port PORT_OR_ENDPOINT] [--listen ENDPOINT ...] [--idle-timeout SECONDS]"
        " [--max-connections N] [--max-per-ip N] [--allow CIDR ...]"
        " [--deny CIDR ...] [--shutdown-timeout SECONDS] [--metrics ENDPOINT]"
        " [--udp PORT_OR_UDP ...] [--udp-rate N] [--workers N|auto [--pin-workers]"
        " [--max-restarts N] [--restart-window SECONDS]]"
        " [--log-level [NAMESPACE=]LEVEL ...] [--version]"
    )
    longdesc = (
        "An RFC 862 echo server: every byte a client sends comes back. "
        "PORT_OR_ENDPOINT is a port number (5000 means tcp:5000) or a Twisted "
        "endpoint description such as tcp6:5000, "
        "tcp:5000:interface=127.0.0.1, unix:/run/echo.sock, "
        "ssl:5443:privateKey=key.pem:certKey=cert.pem, tls:PEM_DIRECTORY:5443, "
        "systemd:domain=INET:index=0 (socket activation), haproxy:tcp:5001 "
        "(each connection starts with a PROXY protocol v1/v2 header naming the "
        "client, as HAProxy's send-proxy writes; for proxies only), or under "
        "twistd -r "
        "uvloop aiotcp:5000 (uvloop's own transports). "
        f"With neither --port nor --listen it listens on tcp:{DEFAULT_PORT}. "
        "UDP echo is off unless --udp is given; datagrams from privileged "
        "source ports (<1024), broadcast/multicast addresses or the server's "
        "own UDP addresses are dropped, as is a datagram the server has just "
        "echoed to the same sender (that breaks loops with other echo "
        "servers), and each source host is limited to --udp-rate datagrams "
        "a second. "
        "Limits apply to all listeners together; --allow/--deny only to IP "
        "clients. On SIGTERM it stops accepting, lets open connections finish "
        "for up to --shutdown-timeout seconds, aborts the rest and exits 0; "
        "so does SIGINT (Ctrl-C). SIGHUP never stops it: with --workers it "
        "reloads (new workers, running the code installed now, take over the "
        "listening sockets, then the old ones drain), and a single process "
        "logs it and serves on. With --workers, a worker that exits is "
        "replaced at once (after a growing delay if it keeps dying soon after "
        "starting), and more than --max-restarts unexpected exits within "
        "--restart-window seconds stop the server with exit status 1. "
        "Without twistd -r it runs on the fastest reactor here (fastepoll on "
        "Linux); -r NAME runs on another. "
        "Each connection logs two info lines (opened, closed); --log-level "
        "takes debug, info (the default), warn, error or critical, for all of "
        "echotwist's lines or, as NAMESPACE=LEVEL, for a namespace's: "
        "--log-level echotwist.protocol=warn drops the per-connection lines "
        "(repeatable; the workers of --workers get it too). "
        "See docs/hardening.md."
    )
    optFlags = [
        [
            "pin-workers",
            None,
            "With --workers: pin worker I to the I-th CPU (round robin) and"
            " give it the connections the kernel receives on that CPU"
            " (SO_INCOMING_CPU; Linux, steering from 6.2).",
        ],
    ]
    optParameters = [
        [
            "port",
            "p",
            None,
            "Port number or endpoint description to listen on.",
        ],
        [
            "idle-timeout",
            None,
            f"{limits.DEFAULT_IDLE_TIMEOUT:g}",
            "Abort a connection without traffic either way for this many"
            " seconds (closed after 1 to 1.125 times this); 0 turns it off.",
        ],
        [
            "max-connections",
            None,
            str(limits.DEFAULT_MAX_CONNECTIONS),
            "Serve at most N connections at once; more are closed at once,"
            " logged and counted (reason limit). 0: no limit.",
        ],
        [
            "max-per-ip",
            None,
            "0",
            "Serve at most N connections at once per client IP address"
            " (reason per-ip). 0: no limit.",
        ],
        [
            "shutdown-timeout",
            None,
            f"{limits.DEFAULT_SHUTDOWN_TIMEOUT:g}",
            "On SIGTERM, let open connections finish for up to this many"
            " seconds, then abort them.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on ENDPOINT (such as"
            " tcp:9100:interface=127.0.0.1; needs echotwist[metrics]). With"
            " --workers, a tcp:/tcp6: ENDPOINT: worker I serves on its port + I - 1.",
        ],
        [
            "udp-rate",
            None,
            str(int(DEFAULT_RATE)),
            "UDP datagrams a second answered per source host (0: no limit).",
        ],
        [
            "workers",
            None,
            "1",
            "Run N worker processes (auto: one per usable CPU) sharing the"
            " tcp:/tcp6:/aiotcp: ports (SO_REUSEPORT), on twistd's reactor if"
            " it is uvloop, asyncio or fastepoll (else the default one), each"
            " applying the limits (per worker), idle timeout, drain and metrics"
            " (one port each); not with --udp.",
        ],
        [
            "max-restarts",
            None,
            str(DEFAULT_LIMIT),
            "With --workers: give up (stop, exit 1) after more than N"
            " unexpected worker exits within --restart-window seconds."
            " 0: never give up.",
        ],
        [
            "restart-window",
            None,
            f"{DEFAULT_WINDOW:g}",
            "With --workers: the seconds over which --max-restarts counts exits.",
        ],
    ]

    def __init__(
        self, reactor: IReactorTime | None = None, errorStream: TextIO | None = None
    ) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["udp"] = []
        self["allow"] = []
        self["deny"] = []
        self["log-level"] = []
        self._reactor = reactor
        self.errorStream = errorStream if errorStream is not None else sys.stderr

    @property
    def reactor(self) -> IReactorTime:
        """The reactor to listen with: the one given, else twistd's."""
        if self._reactor is None:
            # twistd has installed the reactor -r names by the time options
            # are parsed; without -r, none is installed yet, and the
            # fastest is chosen here.  Importing it here (not at module
            # level) keeps `twistd -r ...` working.
            installDefaultReactor()
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

    def opt_allow(self, network: str) -> None:
        """Serve only clients in CIDR (repeatable; IPv4 or IPv6; reason denied)."""
        self["allow"].append(_checked(limits.parseNetwork, "allow", network))

    def opt_deny(self, network: str) -> None:
        """Never serve clients in CIDR (repeatable; wins over --allow)."""
        self["deny"].append(_checked(limits.parseNetwork, "deny", network))

    def opt_log_level(self, level: str) -> None:
        """Log echotwist's events from LEVEL up, or NAMESPACE's: NAMESPACE=LEVEL."""
        _checked(parseLogLevel, "log-level", level)
        self["log-level"].append(level)

    def opt_version(self) -> None:
        """Print echotwist's version (and Twisted's and Python's) and exit."""
        print(versionText())
        raise SystemExit(0)

    def postOptions(self) -> None:
        """Check the numbers and every listening description (build endpoints)."""
        self["logLevels"] = [parseLogLevel(text) for text in self["log-level"]]
        for name in ("idle-timeout", "shutdown-timeout", "restart-window"):
            self[name] = _checked(parseSeconds, name, str(self[name]))
        if self["restart-window"] <= 0:
            raise usage.UsageError("--restart-window: must be more than 0 seconds")
        for name in ("max-connections", "max-per-ip", "max-restarts"):
            self[name] = _checked(parseCount, name, str(self[name]))
        wanted: list[str] = list(self["listen"])
        if self["port"] is not None:
            wanted.insert(0, self["port"])
        if not wanted:
            wanted = [f"tcp:{DEFAULT_PORT}"]
        self["endpoints"] = [self._endpoint(text) for text in wanted]
        if self["metrics"] is not None:
            if importlib.util.find_spec("prometheus_client") is None:
                raise usage.UsageError(
                    "--metrics needs prometheus_client:"
                    " pip install 'echotwist[metrics]'"
                )
            try:
                self["metricsEndpoint"] = self._endpoint(self["metrics"])
            except usage.UsageError as e:
                raise usage.UsageError(f"--metrics: {e}") from None
        try:
            self["udpListens"] = [parseUDP(text) for text in self["udp"]]
        except BadEndpoint as e:
            raise usage.UsageError(str(e)) from None
        try:
            self["udp-rate"] = parseRate(str(self["udp-rate"]), "--udp-rate")
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self._checkWorkers()

    def _checkWorkers(self) -> None:
        """Check C{--workers} and what it can be combined with."""
        from echotwist.workers.config import (
            CAN_PIN,
            UNSHARED,
            usableCpus,
            workerCount,
            workerMetrics,
        )

        try:
            self["workers"] = workerCount(
                self["workers"], [d for d, _ in self["endpoints"]], usableCpus
            )
        except BadEndpoint as e:
            raise usage.UsageError(str(e)) from None
        if self["pin-workers"]:
            if self["workers"] == 1:
                raise usage.UsageError("--pin-workers needs --workers 2 or more")
            if not CAN_PIN:
                raise usage.UsageError(
                    "--pin-workers needs Linux (sched_setaffinity, SO_INCOMING_CPU)"
                )
        if self["workers"] == 1:
            return
        if self["metrics"] is not None:
            try:
                workerMetrics(self["metricsEndpoint"][0], self["workers"])
            except BadEndpoint as e:
                raise usage.UsageError(f"--metrics: {e}") from None
        # Refuse what the workers cannot carry rather than silently drop it.
        unsupported = [
            f"--{name}" for name, default in UNSHARED.items() if self[name] != default
        ]
        if unsupported:
            raise usage.UsageError(
                f"--workers cannot be combined with {', '.join(unsupported)}"
            )

    def _endpoint(self, text: str) -> tuple[str, IStreamServerEndpoint]:
        """Check a listening description and build its endpoint."""
        try:
            description = normalizeListen(text)
            inner = proxiedDescription(description)
            wrapped = description if inner is None else inner
            if wrapped.startswith("tls:"):
                _checkPEMDirectory(wrapped)
            endpoint = serverFromString(self.reactor, wrapped)
            if inner is not None:
                # Our reading of PROXY headers, not Twisted's haproxy:
                # wrapper (echotwist.internals.proxyheader says why).
                endpoint = ProxyHeaderEndpoint(endpoint, self.reactor)
        # Twisted's endpoint parsers raise whatever their arguments
        # provoke: ValueError, KeyError, TypeError, IndexError, and OSError
        # when ssl: cannot read its key file.
        except Exception as e:
            raise usage.UsageError(_endpointError(text, e)) from None
        return description, endpoint

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
        problem = pidFileProblem(twistdPidFile(self))
        if problem is not None:
            # Not a usage error: the environment, as a port that cannot be
            # bound, and so exit status 1.
            self.errorStream.write(f"twistd echo: {problem}\n")
            self.errorStream.flush()
            raise SystemExit(1)


def _checkPEMDirectory(description: str) -> None:
    """Refuse a C{tls:PATH} whose PATH holds no C{.pem} file.

    Twisted's TLS server endpoint reads the directory lazily, so without
    this check a missing one would start a server that fails every
    handshake without a word.
    """
    path = Path(splitDescription(description).positional[0])
    if not path.is_dir() or not any(path.glob("*.pem")):
        raise BadEndpoint(
            f"{description!r}: {str(path)!r} is not a directory of .pem files"
            " (each a key and its certificate)"
        )


def _endpointError(text: str, error: Exception) -> str:
    if isinstance(error, BadEndpoint):
        return str(error)
    if isinstance(error, ImportError | NotImplementedError):
        return (
            f"cannot listen on {text!r}: TLS needs pyOpenSSL (install echotwist[tls])"
        )
    detail = str(error).strip() or type(error).__name__
    if text.startswith("systemd:") and isinstance(error, IndexError | KeyError):
        return (
            f"{text!r}: no listening socket was passed by systemd (LISTEN_FDS,"
            " LISTEN_PID and LISTEN_FDNAMES; with systemd-socket-activate, add"
            " --fdname=NAME)"
        )
    if isinstance(error, ValueError) and "Unknown endpoint type" in detail:
        kind = text.split(":", 1)[0]
        return f"unknown endpoint type {kind!r} in {text!r}"
    return f"invalid endpoint {text!r}: {detail}"


def twistdPidFile(options: Options) -> str:
    """The pid file twistd will write (empty for none, or outside twistd).

    twistd's own options are ours' C{parent}, parsed before ours; its
    C{--pidfile} is still as given (relative to the current directory).
    """
    parent = getattr(options, "parent", None)
    path = None if parent is None else parent.get("pidfile")
    return path if isinstance(path, str) else ""


def twistdLogger(options: Options) -> str | None:
    """The name of the C{twistd --logger} factory these options run under.

    twistd parses its own options, C{--logger} among them, and then ours
    as a sub-command: its options are ours' C{parent}.  None when none was
    given, or outside twistd.
    """
    parent = getattr(options, "parent", None)
    logger = None if parent is None else parent.get("logger")
    return None if logger is None else fullyQualifiedName(logger)


def makeService(options: Options) -> MultiService:
    """Build the echo service that C{twistd echo} runs.

    With C{--workers N} (N > 1), a L{MultiService} holding the
    L{WorkerPool} that supervises N worker processes, each running the
    single-process service below on its share of the ports, and a
    SIGTERM handler so that stopping exits 0.  Otherwise one
    holding the echo listeners (guarded against running out of file
    descriptors), one L{DatagramListeningService} per C{--udp},
    the graceful-shutdown drain and, when asked for, the metrics endpoint,
    all counting in one L{ServerStats}.  Either way echotwist's events
    are logged from the C{--log-level} levels up (the top service is a
    L{LogLevelsService}).
    """
    if options["workers"] > 1:
        from echotwist.workers.config import (
            STOP_GRACE,
            workerCpus,
            workerMetrics,
            workerOptions,
        )
        from echotwist.workers.restarts import RestartPolicy
        from echotwist.workers.supervisor import WorkerPool

        pool = WorkerPool(
            [description for description, _ in options["endpoints"]],
            options["workers"],
            cast(IReactorProcess, options.reactor),
            options.reactor,
            options=workerOptions(options),
            metrics=(
                None
                if options["metrics"] is None
                else workerMetrics(options["metricsEndpoint"][0], options["workers"])
            ),
            stopTimeout=options["shutdown-timeout"] + STOP_GRACE,
            cpus=(
                workerCpus(options["workers"], os.sched_getaffinity(0))
                if options["pin-workers"]
                else None
            ),
            policy=RestartPolicy(options["max-restarts"], options["restart-window"]),
            logger=twistdLogger(options),
        )
        supervisor = LogLevelsService(options["logLevels"])
        # First: the signals are ours before any worker starts.
        CleanExitService(
            cast(IReactorCore, options.reactor), reload=pool.reload
        ).setServiceParent(supervisor)
        pool.setServiceParent(supervisor)
        return supervisor
    reactor = options.reactor
    _log.info("Echo path {path}", path=describeEchoPath())
    stats = ServerStats()
    worker = options.get("worker")
    if worker is not None:
        # A worker of --workers: its metrics say which, and its restarts.
        stats.worker, stats.workerRestarts = worker
    connectionLimits = limits.ConnectionLimits(
        maxConnections=options["max-connections"],
        maxPerIp=options["max-per-ip"],
        policy=limits.AddressPolicy(options["allow"], options["deny"]),
    )
    factory = EchoFactory(
        clock=reactor,
        stats=stats,
        limits=connectionLimits,
        idleTimeout=options["idle-timeout"],
    )

    def guard(port: IListeningPort) -> None:
        # Smaller idle connections (see echotwist.internals.leanserver).
        useLeanServer(port)
        guardAccept(port, reactor, lambda: stats.reject(limits.EMFILE))

    top = LogLevelsService(options["logLevels"])
    # The drain comes first: it takes over SIGTERM before anything listens.
    DrainService(
        cast(IReactorCore, reactor), factory, options["shutdown-timeout"]
    ).setServiceParent(top)
    # Then, still before anything listens, enough descriptors for
    # --max-connections.
    FileLimitService(options["max-connections"]).setServiceParent(top)
    ListeningService(options["endpoints"], factory, onPort=guard).setServiceParent(top)
    if options["metrics"] is not None:
        # Imported only when asked for: prometheus_client is an extra.
        from echotwist.server.metrics import metricsSite

        ListeningService(
            [options["metricsEndpoint"]],
            metricsSite(stats),
            logFormat="Metrics on {address}",
        ).setServiceParent(top)
    if options["udpListens"]:
        # One guard for every UDP port: a source's budget is per host, not
        # per port it aims at.
        udpGuard = ReflectionGuard(reactor, rate=options["udp-rate"])
        # twistd's reactor provides IReactorUDP as well as IReactorTime.
        for listen in options["udpListens"]:
            DatagramListeningService(
                cast(IReactorUDP, reactor), listen, DatagramEcho(udpGuard, stats)
            ).setServiceParent(top)
    return top
