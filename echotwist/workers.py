"""C{twistd echo --workers N}: N processes share the TCP listening ports.

The twistd process becomes a supervisor.  Before privileges are dropped it
opens, for every worker and every C{tcp:}, C{tcp6:} or C{aiotcp:} endpoint
(L{listenBinding}; others are refused), a socket listening on the same
address with C{SO_REUSEPORT} (so a bind error ends start-up with one line
and exit status 1, and ports below 1024 work).  It then starts N worker
processes (C{python -m echotwist.workers}), hands each its own listening
sockets as inherited descriptors (named C{tcp:FD}, C{tcp6:FD}, or
C{aiotcp:FD}/C{aiotcp6:FD} for C{aiotcp:} ones) and the echo options on
its command line (L{workerOptions}).  A worker parses those with the
plugin's own L{Options} and serves with the service L{makeService} builds
for a single process (so idle timeout, connection limits, address rules,
the accept guard and the drain on SIGTERM are the same code), over its
adopted sockets: Twisted's TCP port serves the C{tcp} ones, the asyncio
loop's own server (L{echotwist.native.AdoptedNativeEndpoint}) the
C{aiotcp} ones.  The kernel spreads new connections evenly over the
sockets of the group.  A worker reports on its
file descriptor 3 when it serves; once all have, the supervisor logs
C{Listening on ...}.  Stopping
the supervisor (SIGTERM) sends SIGTERM to every worker, which drains its
connections for up to C{--shutdown-timeout} seconds and exits 0; the
supervisor waits for them all (SIGKILL L{STOP_GRACE} seconds after the
drain should have ended) and exits 0 too.

Workers run on the supervisor's kind of reactor (L{workerReactor}): uvloop
under C{twistd -r uvloop}, Twisted's asyncio reactor under C{-r asyncio},
the fast epoll reactor under C{-r fastepoll}, else Twisted's default
reactor.  (A supervisor on uvloop hears its workers exit through the
SIGCHLD handler of L{echotwist.uvloopreactor}.)  Workers log to the
supervisor's standard output with their index as the
log system (C{[worker1]}).  Each worker keeps its own statistics (and
serves them with C{--metrics} on a port of its own, L{workerMetrics}), and the
limits apply per worker: C{--max-connections 100} with 4 workers admits up
to 400 connections in all (and C{--max-per-ip} likewise per worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn, TextIO

from twisted.application.reactors import installReactor
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import (
    IProcessTransport,
    IReactorCore,
    IReactorProcess,
    IReactorSocket,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    FileLogObserver,
    LogEvent,
    Logger,
    formatEventAsClassicLogText,
    globalLogBeginner,
)
from twisted.python.failure import Failure

from echotwist.endpoints import (
    _UNESCAPED_COLON,
    BadEndpoint,
    checkBacklog,
    formatAddress,
)
from echotwist.fastpath import FastEPollReactor
from echotwist.native import AdoptedNativeEndpoint, reactorLoop
from echotwist.tap import Options, makeService

# Seconds a worker has to exit after SIGTERM, beyond its drain, before it
# is killed.
STOP_GRACE = 5.0

# The echo options a worker applies, forwarded from the supervisor's
# command line.  --port/--listen are the supervisor's (the worker serves
# the sockets it is handed), --workers would recurse, --metrics differs
# per worker (workerMetrics) and --udp is refused with --workers (see
# Options._checkWorkers).
FORWARDED = ("idle-timeout", "max-connections", "max-per-ip", "shutdown-timeout")
FORWARDED_REPEATED = ("allow", "deny")

# The most workers one supervisor starts.
MAX_WORKERS = 256

_READY_FD = 3


def kernelSteersByCpu(release: str) -> bool:
    """Whether a Linux kernel of C{release} (C{uname -r}) steers by CPU.

    From Linux 4.6 the kernel ignored C{SO_INCOMING_CPU} within a
    C{SO_REUSEPORT} group; 6.2 made the group choose the socket of the CPU
    a connection arrives on ("soreuseport: Fix socket selection for
    SO_INCOMING_CPU").  Before it, C{--pin-workers} still pins the
    workers but the kernel spreads connections by hash alone.
    """
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (6, 2)


def workerCpus(count: int, available: Iterable[int]) -> list[int]:
    """The CPU of each of C{count} workers under C{--pin-workers}.

    Worker I (from 1) gets the I-th of the C{available} CPUs (those the
    supervisor may run on), round robin when there are more workers than
    CPUs.
    """
    cpus = sorted(available)
    return [cpus[index % len(cpus)] for index in range(count)]


class Binding:
    """An address to listen on: family, host and port, and who serves it.

    C{native} bindings come from C{aiotcp:} descriptions: a worker serves
    them with the asyncio loop's own server (L{echotwist.native}), the
    others with Twisted's TCP port.
    """

    def __init__(
        self,
        family: socket.AddressFamily,
        host: str,
        port: int,
        native: bool = False,
        backlog: int = socket.SOMAXCONN,
    ) -> None:
        self.family = family
        self.host = host
        self.port = port
        self.native = native
        self.backlog = backlog

    def _key(self) -> tuple[socket.AddressFamily, str, int, bool, int]:
        return (self.family, self.host, self.port, self.native, self.backlog)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Binding) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Binding({self.family}, {self.host!r}, {self.port},"
            f" native={self.native}, backlog={self.backlog})"
        )

    def kind(self) -> str:
        """How a worker's command line names this binding's sockets.

        C{tcp} or C{tcp6}; C{aiotcp} or C{aiotcp6} for native ones.
        """
        prefix = "aiotcp" if self.native else "tcp"
        return prefix + ("6" if self.family == socket.AF_INET6 else "")

    def text(self) -> str:
        """The endpoint description of this binding, for messages."""
        host = self.host.replace(":", "\\:")
        # aiotcp: has no IPv6 twin: an interface with colons makes it IPv6.
        kind = "aiotcp" if self.native else self.kind()
        return f"{kind}:{self.port}:interface={host}"

    def address(self) -> IPv4Address | IPv6Address:
        """The Twisted address of this binding."""
        if self.family == socket.AF_INET6:
            return IPv6Address("TCP", self.host, self.port)
        return IPv4Address("TCP", self.host, self.port)

    def makeSocket(self, listen: bool, reusePort: bool = True) -> socket.socket:
        """A socket bound here (with C{SO_REUSEPORT} if C{reusePort}),
        listening if C{listen}.
        """
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reusePort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.native and self.family == socket.AF_INET6:
                # As NativeTCPEndpoint binds (socket.create_server): IPv6
                # only, so aiotcp on :: behaves the same with --workers.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.host, self.port))
            if listen:
                sock.listen(self.backlog)
        except BaseException:
            sock.close()
            raise
        return sock


# The endpoint types --workers shares, each with the family its sockets
# have (None: decided by the interface, as NativeTCPEndpoint decides).
_SHARED: dict[str, socket.AddressFamily | None] = {
    "tcp": socket.AF_INET,
    "tcp6": socket.AF_INET6,
    "aiotcp": None,
}


def listenBinding(description: str) -> Binding:
    """The binding of a C{tcp:}, C{tcp6:} or C{aiotcp:} endpoint description.

    Only these can be shared with C{SO_REUSEPORT}; anything else raises
    L{BadEndpoint}.  An C{aiotcp:} binding is IPv6 when its interface has
    a colon (as L{echotwist.native.NativeTCPEndpoint} decides) and listens
    with its C{backlog=} if given; the others, like C{tcp:} ones without
    it, listen with the system's largest backlog.
    """
    kind, *args = _UNESCAPED_COLON.split(description)
    if kind not in _SHARED:
        raise BadEndpoint(
            "--workers shares only tcp:, tcp6: and aiotcp: endpoints,"
            f" not {description!r}"
        )
    positional = [a for a in args if "=" not in a]
    keywords = dict(a.split("=", 1) for a in args if "=" in a)
    port = keywords.get("port", positional[0] if positional else "")
    host = keywords.get("interface", "").replace("\\:", ":")
    family = _SHARED[kind]
    if family is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        backlog = keywords.get("backlog")
        return Binding(
            family,
            host or "0.0.0.0",
            int(port),
            native=True,
            backlog=socket.SOMAXCONN if backlog is None else checkBacklog(backlog),
        )
    default = "::" if family == socket.AF_INET6 else "0.0.0.0"
    return Binding(family, host or default, int(port))


def tcpBinding(description: str) -> Binding:
    """The binding of a C{tcp:} or C{tcp6:} endpoint description.

    For the workers' metrics, which Twisted's HTTP server serves: anything
    else raises L{BadEndpoint}.
    """
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6"):
        raise BadEndpoint(
            f"--workers serves metrics only on tcp: and tcp6: endpoints,"
            f" not {description!r}"
        )
    return listenBinding(description)


def workerCount(text: str, descriptions: Sequence[str]) -> int:
    """Check a C{--workers} value against the endpoints it would share.

    Raise L{BadEndpoint} for a count outside 1..L{MAX_WORKERS}, or for more
    than one worker on an endpoint that is not C{tcp:}/C{tcp6:}/C{aiotcp:}.
    """
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise BadEndpoint(
            f"invalid --workers {text!r}: give a number from 1 to {MAX_WORKERS}"
        )
    if int(text) > 1:
        for description in descriptions:
            listenBinding(description)
    return int(text)


def workerOptions(options: Mapping[str, Any]) -> list[str]:
    """The C{twistd echo} arguments that give a worker C{options}' settings.

    Built from the parsed values rather than copied from the supervisor's
    command line: getopt accepts abbreviations (C{--work 2}) and joined
    values (C{-p5000}), so filtering the raw arguments would be fragile,
    and the values have been checked already.
    """
    arguments = [f"--{name}={options[name]}" for name in FORWARDED]
    for name in FORWARDED_REPEATED:
        arguments.extend(f"--{name}={value}" for value in options[name])
    return arguments


def workerMetrics(description: str, count: int) -> list[str]:
    """The metrics endpoint of each of C{count} workers, from C{--metrics}.

    Each worker counts in its own process, so each serves its own metrics:
    worker I on the given port + I - 1 (all on port 0 if that is given, so
    each gets a port of its own).  Raise L{BadEndpoint} unless
    C{description} is C{tcp:}/C{tcp6:} with room for every port.
    """
    base = tcpBinding(description)
    if base.port + count - 1 > 65535:
        raise BadEndpoint(
            f"ports {base.port} to {base.port + count - 1} for {count} workers"
            " go beyond 65535"
        )
    descriptions = []
    for offset in range(count):
        port = base.port + offset if base.port else 0
        descriptions.append(Binding(base.family, base.host, port).text())
    return descriptions


class Inherited(NamedTuple):
    """A listening socket a worker inherits from its supervisor.

    C{native}: served by the asyncio loop's own server (C{aiotcp:}) rather
    than by Twisted's TCP port.
    """

    family: socket.AddressFamily
    descriptor: int
    native: bool = False


class WorkerArguments:
    """What a worker's command line says: index, reactor, sockets, options."""

    def __init__(
        self,
        index: int,
        reactorName: str,
        listening: Sequence[Inherited],
        options: Sequence[str],
        metrics: Inherited | None = None,
        *,
        cpu: int | None = None,
    ) -> None:
        self.index = index
        self.reactorName = reactorName
        self.listening = list(listening)
        self.options = list(options)
        self.metrics = metrics
        # The CPU to run on (--pin-workers), or None.
        self.cpu = cpu


def parseWorkerArguments(argv: Sequence[str]) -> WorkerArguments:
    """Read C{INDEX REACTOR tcp:FD ... [metrics=tcp:FD] [cpu=N] -- ECHO_OPTIONS ...}.

    Each listening C{FD} is named C{tcp:}, C{tcp6:}, C{aiotcp:} or
    C{aiotcp6:} (L{parseListeningArgument}).
    """
    separator = list(argv).index("--") if "--" in argv else len(argv)
    index, reactorName, *descriptors = argv[:separator]
    listening = [a for a in descriptors if not a.startswith(("metrics=", "cpu="))]
    metrics = [a.split("=", 1)[1] for a in descriptors if a.startswith("metrics=")]
    cpus = [int(a.split("=", 1)[1]) for a in descriptors if a.startswith("cpu=")]
    return WorkerArguments(
        int(index),
        reactorName,
        [parseListeningArgument(a) for a in listening],
        argv[separator + 1 :],
        parseListeningArgument(metrics[0]) if metrics else None,
        cpu=cpus[0] if cpus else None,
    )


# How a worker's command line names its sockets (Binding.kind).
_KINDS = {
    "tcp": (socket.AF_INET, False),
    "tcp6": (socket.AF_INET6, False),
    "aiotcp": (socket.AF_INET, True),
    "aiotcp6": (socket.AF_INET6, True),
}


def parseListeningArgument(text: str) -> Inherited:
    """Read a worker's C{tcp:FD}, C{tcp6:FD}, C{aiotcp:FD} or C{aiotcp6:FD}.

    Raise L{ValueError} for anything else.
    """
    kind, _, descriptor = text.partition(":")
    if kind not in _KINDS:
        raise ValueError(f"not a worker's listening socket: {text!r}")
    family, native = _KINDS[kind]
    return Inherited(family, int(descriptor), native)


class WorkerProtocol(ProcessProtocol):
    """The supervisor's side of one worker: readiness and exit."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ready = False
        self.ended: Deferred[None] = Deferred()
        self.buffer = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """A line C{ready} on descriptor 3 means the worker listens."""
        if childFD != _READY_FD:
            return
        self.buffer += data
        if not self.ready and b"ready\n" in self.buffer:
            self.ready = True
            self.pool.workerReady(self.index)

    def processEnded(self, reason: Failure) -> None:
        """Tell the pool, and whoever waits for this worker to stop."""
        self.pool.workerEnded(self.index, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """Listen on the TCP ports, start N workers on them, stop them on exit."""

    log = Logger()

    def __init__(
        self,
        descriptions: Sequence[str],
        count: int,
        reactor: IReactorProcess,
        clock: IReactorTime,
        *,
        options: Sequence[str] = (),
        metrics: Sequence[str] | None = None,
        stopTimeout: float = STOP_GRACE,
        errorStream: TextIO | None = None,
        executable: str = sys.executable,
        cpus: Sequence[int] | None = None,
    ) -> None:
        self.bindings = [listenBinding(d) for d in descriptions]
        self.count = count
        # cpus[i]: the CPU worker i is pinned to, and its listening
        # sockets steer connections from (--pin-workers); None: neither.
        self.cpus = None if cpus is None else list(cpus)
        self.options = list(options)
        self.metrics = metrics
        # metricsBindings[i]: worker i's own metrics port, opened here too
        # so that a taken port fails start-up like a taken echo port.
        self.metricsBindings = (
            None if metrics is None else [tcpBinding(d) for d in metrics]
        )
        self.stopTimeout = stopTimeout
        self.reactor = reactor
        self.clock = clock
        self.errorStream = errorStream if errorStream is not None else sys.__stderr__
        self.executable = executable
        # sockets[i][j]: worker i's listening socket for binding j, then
        # its metrics socket, if any.
        self.sockets: list[list[socket.socket]] = []
        self.workers: list[tuple[WorkerProtocol, IProcessTransport]] = []
        self.stopping = False

    def privilegedStartService(self) -> None:
        """Bind and listen now, before twistd drops privileges."""
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """Start the workers, each with its own listening sockets."""
        Service.startService(self)
        if not self.sockets:
            self._listen()
        sockets, self.sockets = self.sockets, []
        reactorName = workerReactor(self.reactor, runningLoop(self.reactor))
        for index, own in enumerate(sockets, 1):
            protocol = WorkerProtocol(self, index)
            childFDs: dict[int, int | str] = {0: 0, 1: 1, 2: 2, _READY_FD: "r"}
            arguments = [
                self.executable,
                "-m",
                "echotwist.workers",
                str(index),
                reactorName,
            ]
            for number, sock in enumerate(own):
                descriptor = _READY_FD + 1 + number
                childFDs[descriptor] = sock.fileno()
                if number < len(self.bindings):
                    arguments.append(f"{self.bindings[number].kind()}:{descriptor}")
                else:
                    assert self.metricsBindings is not None
                    kind = self.metricsBindings[index - 1].kind()
                    arguments.append(f"metrics={kind}:{descriptor}")
            if self.cpus is not None:
                arguments.append(f"cpu={self.cpus[index - 1]}")
            arguments += ["--", *self.options]
            if self.metrics is not None:
                arguments.append(f"--metrics={self.metrics[index - 1]}")
            transport = self.reactor.spawnProcess(
                protocol,
                self.executable,
                arguments,
                env=os.environ,
                childFDs=childFDs,
            )
            # The worker has its copies now.
            for sock in own:
                sock.close()
            self.workers.append((protocol, transport))

    def _listen(self) -> None:
        for index in range(self.count):
            own: list[socket.socket] = []
            self.sockets.append(own)
            for binding in self.bindings:
                try:
                    sock = binding.makeSocket(listen=True)
                except OSError as e:
                    self._fail(binding, e)
                if self.cpus is not None:
                    # A connection whose handshake the kernel handles on
                    # this CPU goes to this worker, pinned there: its
                    # packets need not cross to another core.
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_INCOMING_CPU, self.cpus[index]
                    )
                own.append(sock)
                # Port 0 picks a port for the first worker; the others share it.
                binding.port = sock.getsockname()[1]
            if self.metricsBindings is not None:
                # Not shared: each worker's metrics port is its own.
                metrics = self.metricsBindings[index]
                try:
                    own.append(metrics.makeSocket(listen=True, reusePort=False))
                except OSError as e:
                    self._fail(metrics, e)

    def _fail(self, binding: Binding, error: OSError) -> NoReturn:
        self._closeSockets()
        if self.errorStream is not None:
            self.errorStream.write(
                f"twistd echo: cannot listen on {binding.text()}: {error.strerror}\n"
            )
            self.errorStream.flush()
        raise SystemExit(1)

    def _closeSockets(self) -> None:
        for own in self.sockets:
            for sock in own:
                sock.close()
        self.sockets = []

    def workerReady(self, index: int) -> None:
        """Once every worker serves, announce the addresses."""
        if not all(protocol.ready for protocol, _ in self.workers):
            return
        for binding in self.bindings:
            self.log.info(
                "Listening on {address} with {count} workers",
                address=formatAddress(binding.address()),
                count=self.count,
            )

    def workerEnded(self, index: int, reason: Failure) -> None:
        """Log a worker's exit; an unexpected one is an error."""
        if self.stopping and reason.check(ProcessDone) is not None:
            return
        level = self.log.info if self.stopping else self.log.error
        level(
            "Worker {index} exited: {why}",
            index=index,
            why=reason.getErrorMessage(),
        )

    def stopService(self) -> Deferred[object]:
        """SIGTERM every worker; wait for them (SIGKILL after a timeout)."""
        Service.stopService(self)
        self.stopping = True
        self._closeSockets()
        waits: list[Deferred[None]] = []
        for protocol, transport in self.workers:
            if protocol.ended.called:
                continue
            _signal(transport, "TERM")
            waits.append(protocol.ended)
        killer = self.clock.callLater(self.stopTimeout, self._kill) if waits else None

        def stopped(result: object) -> None:
            if killer is not None and killer.active():
                killer.cancel()

        return DeferredList(waits, consumeErrors=True).addCallback(stopped)

    def _kill(self) -> None:
        for protocol, transport in self.workers:
            if not protocol.ended.called:
                _signal(transport, "KILL")


def _signal(transport: IProcessTransport, name: str) -> None:
    # A worker already gone has its processEnded on the way.
    with contextlib.suppress(OSError):
        transport.signalProcess(name)


def _prefixedObserver(index: int, stream: TextIO) -> FileLogObserver:
    def format(event: LogEvent) -> str | None:
        event = dict(event, log_system=f"worker{index}")
        return formatEventAsClassicLogText(event)

    return FileLogObserver(stream, format)


def tellReady(descriptor: int) -> None:
    """Tell the supervisor on pipe C{descriptor} that this worker serves, and close it.

    A supervisor that died before reading it (the write fails with EPIPE)
    is no error here: its death signal (L{stopWithSupervisor}) stops and
    drains this worker, as for any worker whose supervisor dies.
    """
    try:
        os.write(descriptor, b"ready\n")
    except BrokenPipeError:
        pass
    finally:
        os.close(descriptor)


def adoptedEndpoint(
    reactor: IReactorSocket,
    inherited: Inherited,
    loopOf: Callable[[object], asyncio.AbstractEventLoop] = reactorLoop,
) -> IStreamServerEndpoint:
    """The endpoint serving an inherited listening socket.

    Twisted's adopted TCP endpoint, or for C{aiotcp:} sockets the asyncio
    loop's own server (L{AdoptedNativeEndpoint}) on C{reactor}'s loop, as
    C{loopOf} finds it.  Either takes the descriptor over and closes it
    when it stops listening.
    """
    family, descriptor, native = inherited
    if native:
        return AdoptedNativeEndpoint(loopOf(reactor), descriptor, family)
    return AdoptedStreamServerEndpoint(reactor, descriptor, family)


def serveWorker(
    reactor: IReactorSocket,
    index: int,
    listening: Sequence[Inherited],
    arguments: Sequence[str],
    metrics: Inherited | None = None,
) -> Deferred[None]:
    """Serve echoes on the listening descriptors the supervisor passed.

    The service is the one C{twistd echo ARGUMENTS} would run in a single
    process, listening on the adopted descriptors instead of C{--port}
    (and serving metrics on the adopted C{metrics} descriptor, if given).
    It is stopped (drained) when the reactor shuts down, on SIGTERM.
    """
    # The worker's reactor is twistd's kind of reactor: it provides every
    # reactor interface the service needs.
    options = Options(reactor=IReactorTime(reactor))
    options.parseOptions(list(arguments))
    options["endpoints"] = [
        (f"descriptor {inherited.descriptor}", adoptedEndpoint(reactor, inherited))
        for inherited in listening
    ]
    if metrics is not None:
        options["metricsEndpoint"] = (
            f"descriptor {metrics.descriptor}",
            adoptedEndpoint(reactor, metrics),
        )
    service = makeService(options)
    service.privilegedStartService()
    service.startService()
    IReactorCore(reactor).addSystemEventTrigger(
        "before", "shutdown", service.stopService
    )
    Logger(namespace="echotwist.workers").info(
        "Worker {index} (pid {pid}) listening", index=index, pid=os.getpid()
    )
    tellReady(_READY_FD)
    # Never fires: the worker runs until SIGTERM stops the reactor, and
    # task.react then exits with status 0.
    return Deferred()


def pinWorker(
    index: int,
    cpu: int,
    setAffinity: Callable[[int, set[int]], None] = os.sched_setaffinity,
) -> None:
    """Run this worker (number C{index}) on C{cpu} only, and log it.

    A CPU it may not use (a cpuset changed since the supervisor read its
    own) is logged in one line and ends the worker with status 1.
    """
    log = Logger(namespace="echotwist.workers")
    try:
        setAffinity(0, {cpu})
    except OSError as e:
        log.error(
            "Worker {index} cannot run on CPU {cpu}: {why}",
            index=index,
            cpu=cpu,
            why=e.strerror,
        )
        raise SystemExit(1) from None
    log.info("Worker {index} runs on CPU {cpu}", index=index, cpu=cpu)


def main(reactor: IReactorSocket, *argv: str) -> Deferred[None]:
    """Worker entry point: C{python -m echotwist.workers INDEX REACTOR ...}."""
    arguments = parseWorkerArguments(argv)
    globalLogBeginner.beginLoggingTo(
        [_prefixedObserver(arguments.index, sys.stdout)], redirectStandardIO=False
    )
    if arguments.cpu is not None:
        pinWorker(arguments.index, arguments.cpu)
    return serveWorker(
        reactor,
        arguments.index,
        arguments.listening,
        arguments.options,
        arguments.metrics,
    )


def workerReactor(reactor: object, loop: object = None) -> str:
    """The reactor the workers of a supervisor on C{reactor} use.

    Workers run on the supervisor's kind of reactor, by its C{twistd -r}
    name: C{uvloop} for an asyncio reactor running a uvloop C{loop}
    (C{twistd -r uvloop}), C{asyncio} for Twisted's asyncio reactor on
    another loop, C{fastepoll} for the fast epoll reactor, and Twisted's
    default reactor for anything else.  C{loop} is the asyncio loop
    C{reactor} runs, if any (L{runningLoop}).
    """
    if isinstance(reactor, FastEPollReactor):
        return "fastepoll"
    if isinstance(reactor, AsyncioSelectorReactor):
        # By the class's module, so that uvloop (an optional extra) need
        # not be importable to tell.
        module = type(loop).__module__
        return "uvloop" if module.partition(".")[0] == "uvloop" else "asyncio"
    return "default"


def runningLoop(reactor: object) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop C{reactor} runs on, or None if it is no asyncio reactor."""
    if not isinstance(reactor, AsyncioSelectorReactor):
        return None
    return reactorLoop(reactor)


# prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def stopWithSupervisor() -> None:
    """Have the kernel SIGTERM this worker (so it drains) if its parent dies.

    A supervisor killed outright (SIGKILL, a crash) cannot forward
    SIGTERM; without this its workers would serve on forever, orphaned,
    holding the port and the supervisor's standard output.  Linux only,
    as is the connection spreading of C{SO_REUSEPORT} this module relies on.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        # The supervisor died before the request was in place.
        raise SystemExit(0)


def run(argv: Sequence[str]) -> None:
    """C{python -m echotwist.workers INDEX REACTOR tcp:FD ... -- OPTIONS ...}.

    Listening sockets are C{tcp:FD}, C{tcp6:FD}, C{aiotcp:FD} or
    C{aiotcp6:FD} (L{parseListeningArgument}).
    """
    stopWithSupervisor()
    reactorName = argv[1]
    if reactorName != "default":
        installReactor(reactorName)
    from twisted.internet import task

    task.react(main, argv)


if __name__ == "__main__":
    run(sys.argv[1:])
