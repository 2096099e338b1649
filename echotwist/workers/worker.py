"""A worker process of C{twistd echo --workers N}: serve inherited sockets.

A worker serves with the single-process service that C{twistd echo}
builds (its caller says how to build it), over the listening sockets its
supervisor opened, and says on descriptor 3 when it does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TextIO, cast

from twisted.application.reactors import installReactor
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorSocket,
    IStreamServerEndpoint,
)
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    formatEventAsClassicLogText,
    globalLogBeginner,
)
from twisted.python.reflect import namedAny

from echotwist.internals.aiotcp import AdoptedNativeEndpoint, reactorLoop
from echotwist.logging import logObserver
from echotwist.workers.config import (
    READY_FD,
    Inherited,
    WorkerIdentity,
    parseWorkerArguments,
)

# How a worker builds its service: from the reactor, the echo options,
# the (description, endpoint) pairs to listen on, the metrics one, and
# which worker it is.
Endpoint = tuple[str, IStreamServerEndpoint]
ServiceBuilder = Callable[
    [IReactorSocket, Sequence[str], list[Endpoint], Endpoint | None, WorkerIdentity],
    IService,
]


def workerObserver(index: int, logger: str | None, stream: TextIO) -> ILogObserver:
    """The observer of worker C{index}: its supervisor's format, marked as its own.

    C{logger} names the supervisor's C{twistd --logger} factory (such as
    C{echotwist.logging.jsonLogger}), which the worker logs with too, so
    that every line of the output has one format; its events carry
    C{worker} (C{INDEX}) and the system C{workerINDEX}.  Without one, lines
    are twistd's classic text on C{stream}, marked C{[workerINDEX]}.
    """
    if logger is None:
        observer: Callable[[LogEvent], None] = FileLogObserver(
            stream, formatEventAsClassicLogText
        )
    else:
        observer = namedAny(logger)()

    def observe(event: LogEvent) -> None:
        observer(dict(event, log_system=f"worker{index}", worker=index))

    # An observer is any callable taking an event (ILogObserver's one method).
    return cast(ILogObserver, observe)


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


def serveWorker(  # noqa: PLR0917 (the worker's command line, in its order)
    reactor: IReactorSocket,
    index: int,
    listening: Sequence[Inherited],
    arguments: Sequence[str],
    metrics: Inherited | None,
    buildService: ServiceBuilder,
    restarts: int = 0,
) -> Deferred[None]:
    """Serve echoes on the listening descriptors the supervisor passed.

    C{buildService} builds the service that C{twistd echo ARGUMENTS}
    would run in a single process, listening on the adopted descriptors
    instead of C{--port} (and serving metrics on the adopted C{metrics}
    descriptor, if given).  It is stopped (drained) when the reactor
    shuts down, on SIGTERM or SIGINT.  SIGHUP is ignored: the supervisor
    reloads (a terminal hang-up signals the whole group).
    """
    endpoints = [
        (f"descriptor {inherited.descriptor}", adoptedEndpoint(reactor, inherited))
        for inherited in listening
    ]
    metricsEndpoint = (
        None
        if metrics is None
        else (f"descriptor {metrics.descriptor}", adoptedEndpoint(reactor, metrics))
    )
    service = buildService(
        reactor,
        arguments,
        endpoints,
        metricsEndpoint,
        WorkerIdentity(index, restarts),
    )
    service.privilegedStartService()
    # After the service took its signals: SIGHUP is the supervisor's.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    service.startService()
    IReactorCore(reactor).addSystemEventTrigger(
        "before", "shutdown", service.stopService
    )
    Logger(namespace="echotwist.workers", observer=logObserver).info(
        "Worker {index} (pid {pid}) listening", index=index, pid=os.getpid()
    )
    tellReady(READY_FD)
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
    log = Logger(namespace="echotwist.workers", observer=logObserver)
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


def main(
    reactor: IReactorSocket, buildService: ServiceBuilder, *argv: str
) -> Deferred[None]:
    """Worker entry point: C{python -m echotwist.workers INDEX REACTOR ...}."""
    arguments = parseWorkerArguments(argv)
    globalLogBeginner.beginLoggingTo(
        [workerObserver(arguments.index, arguments.logger, sys.stdout)],
        redirectStandardIO=False,
    )
    if arguments.cpu is not None:
        pinWorker(arguments.index, arguments.cpu)
    return serveWorker(
        reactor,
        arguments.index,
        arguments.listening,
        arguments.options,
        arguments.metrics,
        buildService,
        arguments.restarts,
    )


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


def run(argv: Sequence[str], buildService: ServiceBuilder) -> None:
    """C{python -m echotwist.workers INDEX REACTOR tcp:FD ... -- OPTIONS ...}.

    Listening sockets are C{tcp:FD}, C{tcp6:FD}, C{aiotcp:FD} or
    C{aiotcp6:FD} (L{parseListeningArgument}).
    """
    stopWithSupervisor()
    reactorName = argv[1]
    if reactorName != "default":
        installReactor(reactorName)
    from twisted.internet import task

    task.react(main, [buildService, *argv])
