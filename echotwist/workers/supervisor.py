"""The supervisor of C{twistd echo --workers N}: start, watch and stop workers.

L{WorkerPool} opens every worker's listening sockets, starts the worker
processes (C{python -m echotwist.workers}, L{echotwist.workers.worker})
on the supervisor's kind of reactor (L{workerReactor}), and stops them
on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from twisted.application.service import Service
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import (
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    Logger,
)
from twisted.python.failure import Failure

from echotwist.endpoints import (
    formatAddress,
)
from echotwist.internals.aiotcp import reactorLoop
from echotwist.internals.fastepoll import FastEPollReactor
from echotwist.server.listening import StartsEarly, cannotListen, startupErrors
from echotwist.workers.config import (
    READY_FD,
    STOP_GRACE,
    Binding,
    listenBinding,
    tcpBinding,
)


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
        if childFD != READY_FD:
            return
        self.buffer += data
        if not self.ready and b"ready\n" in self.buffer:
            self.ready = True
            self.pool.workerReady(self.index)

    def processEnded(self, reason: Failure) -> None:
        """Tell the pool, and whoever waits for this worker to stop."""
        self.pool.workerEnded(self.index, reason)
        self.ended.callback(None)


class WorkerPool(StartsEarly):
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
        self.errorStream = errorStream if errorStream is not None else startupErrors()
        self.executable = executable
        # sockets[i][j]: worker i's listening socket for binding j, then
        # its metrics socket, if any.
        self.sockets: list[list[socket.socket]] = []
        self.workers: list[tuple[WorkerProtocol, IProcessTransport]] = []
        self.stopping = False

    def startService(self) -> None:
        """Start the workers, each with its own listening sockets."""
        StartsEarly.startService(self)
        sockets, self.sockets = self.sockets, []
        reactorName = workerReactor(self.reactor, runningLoop(self.reactor))
        for index, own in enumerate(sockets, 1):
            protocol = WorkerProtocol(self, index)
            childFDs: dict[int, int | str] = {0: 0, 1: 1, 2: 2, READY_FD: "r"}
            arguments = [
                self.executable,
                "-m",
                "echotwist.workers",
                str(index),
                reactorName,
            ]
            for number, sock in enumerate(own):
                descriptor = READY_FD + 1 + number
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

    def startEarly(self) -> None:
        """Open every worker's listening sockets, before privileges drop."""
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
        cannotListen(binding.text(), str(error.strerror), self.errorStream)

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
    # A worker already gone has its processEnded on the way: Twisted says
    # so with ProcessExitedAlready (an OSError from the kernel is the same).
    with contextlib.suppress(ProcessExitedAlready, OSError):
        transport.signalProcess(name)


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
