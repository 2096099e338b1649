"""What C{--workers} means, decided without I/O: checks, bindings, command lines.

Which endpoints the workers can share (L{listenBinding}), how many
workers (L{workerCount}), which of the supervisor's options a worker
applies (L{workerOptions}) and which it cannot (L{UNSHARED}),
each worker's metrics port (L{workerMetrics}), the CPU of each
(L{workerCpus}), and how a worker's command line names its sockets
(L{parseWorkerArguments}).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from twisted.internet.address import IPv4Address, IPv6Address

from echotwist.endpoints import (
    BadEndpoint,
    checkBacklog,
    checkPort,
    listenArgument,
    splitDescription,
)
from echotwist.parsing import parseWhole

# Seconds a worker has to exit after SIGTERM, beyond its drain, before it
# is killed.
STOP_GRACE = 5.0

# The echo options a worker applies, forwarded from the supervisor's
# command line.  --port/--listen are the supervisor's (the worker serves
# the sockets it is handed), --workers would recurse, --metrics differs
# per worker (workerMetrics) and --udp is refused with --workers (see
# Options._checkWorkers).  --log-level is kept as given, a repeated option.
FORWARDED = ("idle-timeout", "max-connections", "max-per-ip", "shutdown-timeout")
FORWARDED_REPEATED = ("allow", "deny", "log-level")

# The most workers one supervisor starts.
MAX_WORKERS = 256

# The descriptor on which a worker says it serves.
READY_FD = 3

# Whether this system can pin workers to CPUs and steer connections to
# them (--pin-workers): Linux can.
CAN_PIN = hasattr(os, "sched_setaffinity") and hasattr(socket, "SO_INCOMING_CPU")

# The options --workers cannot carry to its worker processes, with the
# values that mean "not used".  UDP: a datagram port cannot be shared by
# the workers without SO_REUSEPORT sockets of its own, and one process
# serves it well enough.
UNSHARED: dict[str, object] = {
    "udp": [],
}


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
    them with the asyncio loop's own server (L{echotwist.internals.aiotcp}), the
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
    a colon (as L{echotwist.internals.aiotcp.NativeTCPEndpoint} decides).
    Every binding listens with its description's C{backlog=}, else with
    the system's largest backlog (C{SOMAXCONN}), as one process does.
    """
    parts = splitDescription(description)
    if parts.kind not in _SHARED:
        raise BadEndpoint(
            "--workers shares only tcp:, tcp6: and aiotcp: endpoints,"
            f" not {description!r}"
        )
    port = checkPort(parts.argument("port", 0) or "")
    # By name or by position, as Twisted's parsers take them.
    host = listenArgument(parts, "interface") or ""
    given = listenArgument(parts, "backlog")
    backlog = socket.SOMAXCONN if given is None else checkBacklog(given)
    family = _SHARED[parts.kind]
    if family is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return Binding(family, host or "0.0.0.0", port, True, backlog)
    default = "::" if family == socket.AF_INET6 else "0.0.0.0"
    return Binding(family, host or default, port, backlog=backlog)


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


def workerCount(
    text: str, descriptions: Sequence[str], usableCpus: Callable[[], int]
) -> int:
    """Check a C{--workers} value against the endpoints it would share.

    C{auto} means one worker per CPU this process may use (C{usableCpus}).
    Raise L{BadEndpoint} for a count outside 1..L{MAX_WORKERS}, or for more
    than one worker on an endpoint that is not C{tcp:}/C{tcp6:}/C{aiotcp:}.
    """
    if text == "auto":
        count = min(max(usableCpus(), 1), MAX_WORKERS)
    else:
        try:
            count = parseWhole(text, "--workers", 1, MAX_WORKERS)
        except ValueError as e:
            raise BadEndpoint(f"{e} (or auto)") from None
    if count > 1:
        for description in descriptions:
            listenBinding(description)
    return count


def usableCpus() -> int:
    """How many CPUs this process may run on (its affinity mask, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


class WorkerIdentity(NamedTuple):
    """Which worker a process is (C{number}, from 1), and how many times the
    supervisor has replaced that worker so far (C{restarts}).
    """

    number: int
    restarts: int


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
        restarts: int = 0,
        logger: str | None = None,
    ) -> None:
        self.index = index
        self.reactorName = reactorName
        self.listening = list(listening)
        self.options = list(options)
        self.metrics = metrics
        # The CPU to run on (--pin-workers), or None.
        self.cpu = cpu
        # How many times the supervisor has replaced this worker so far.
        self.restarts = restarts
        # The supervisor's twistd --logger factory, by name, or None.
        self.logger = logger


def parseWorkerArguments(argv: Sequence[str]) -> WorkerArguments:
    """Read a worker's command line.

    C{INDEX REACTOR tcp:FD ... [metrics=tcp:FD] [cpu=N] [restarts=N]
    [logger=NAME] -- ECHO_OPTIONS ...}; each listening C{FD} is named
    C{tcp:}, C{tcp6:}, C{aiotcp:} or C{aiotcp6:} (L{parseListeningArgument}).
    """
    separator = list(argv).index("--") if "--" in argv else len(argv)
    index, reactorName, *descriptors = argv[:separator]
    named: dict[str, str] = {}
    listening = []
    for argument in descriptors:
        name, equals, value = argument.partition("=")
        if equals:
            named[name] = value
        else:
            listening.append(argument)
    return WorkerArguments(
        int(index),
        reactorName,
        [parseListeningArgument(a) for a in listening],
        argv[separator + 1 :],
        parseListeningArgument(named["metrics"]) if "metrics" in named else None,
        cpu=int(named["cpu"]) if "cpu" in named else None,
        restarts=int(named.get("restarts", "0")),
        logger=named.get("logger"),
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
