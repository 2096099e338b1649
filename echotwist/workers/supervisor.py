"""The supervisor of C{twistd echo --workers N}: start, watch, replace,
reload and stop workers.

L{WorkerPool} opens every worker's listening sockets and keeps them open
for as long as it runs, starts the worker processes (C{python -m
echotwist.workers}, L{echotwist.workers.worker}) on the supervisor's kind
of reactor (L{workerReactor}), replaces a worker that exits unexpectedly
with one serving the same sockets (L{RestartPolicy} says when, and when to
give up), starts a new set of workers on SIGHUP before the old ones drain
(L{WorkerPool.reload}), and stops them all on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from twisted.application.service import Service
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorCore,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from echotwist.endpoints import formatAddress
from echotwist.internals.aiotcp import reactorLoop
from echotwist.internals.fastepoll import FastEPollReactor
from echotwist.logging import logObserver
from echotwist.server.listening import StartsEarly, cannotListen, startupErrors
from echotwist.server.shutdown import exitAtEnd
from echotwist.workers.config import (
    READY_FD,
    STOP_GRACE,
    Binding,
    listenBinding,
    tcpBinding,
)
from echotwist.workers.restarts import GiveUp, RestartPolicy

# Seconds the new workers of a reload have to say they serve.
RELOAD_TIMEOUT = 30.0


class WorkerProtocol(ProcessProtocol):
    """The supervisor's side of one worker process: readiness and exit.

    C{slot}: which worker (from 0) this process is; a replacement or a
    reloaded worker takes the same slot and its sockets.
    """

    def __init__(self, pool: WorkerPool, slot: int, startedAt: float) -> None:
        self.pool = pool
        self.slot = slot
        self.startedAt = startedAt
        self.ready = False
        # Told to stop (shutdown, or replaced by a reload): its exit is expected.
        self.retired = False
        self.exited = False
        self.ended: Deferred[None] = Deferred()
        self.buffer = b""
        self.transport: IProcessTransport | None = None
        # Kept: Twisted forgets a process's pid once it has exited.
        self.pid: int | None = None
        # For a replacement: when the worker it replaces exited.
        self.replaces: float | None = None

    @property
    def index(self) -> int:
        """The worker's number in logs and on its command line (from 1)."""
        return self.slot + 1

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """A line C{ready} on descriptor 3 means the worker listens."""
        if childFD != READY_FD:
            return
        self.buffer += data
        if not self.ready and b"ready\n" in self.buffer:
            self.ready = True
            self.pool.workerReady(self)

    def processEnded(self, reason: Failure) -> None:
        """Tell the pool, and whoever waits for this worker to stop."""
        self.exited = True
        self.pool.workerEnded(self, reason)
        self.ended.callback(None)

    def stop(self, name: str = "TERM") -> None:
        """Send signal C{name} (SIGTERM: drain and exit) unless it has exited."""
        self.retired = True
        if self.transport is not None and not self.exited:
            _signal(self.transport, name)


class WorkerPool(StartsEarly):
    """Listen on the TCP ports, keep N workers serving them, stop them on exit.

    The pool holds every listening socket itself, so a worker's death never
    closes one: connections that arrive meanwhile wait in its accept queue
    for the replacement, which is handed the same socket.
    """

    log = Logger(observer=logObserver)

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
        policy: RestartPolicy | None = None,
        logger: str | None = None,
        giveUp: Callable[[], None] | None = None,
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
        self.policy = policy if policy is not None else RestartPolicy()
        # The twistd --logger factory's name, which workers log with too.
        self.logger = logger
        self._giveUp = giveUp if giveUp is not None else self._stopAndFail
        # sockets[i][j]: worker i's listening socket for binding j, then
        # its metrics socket, if any; open until the pool stops.
        self.sockets: list[list[socket.socket]] = []
        # current[i]: the process serving as worker i (None while it is
        # being replaced); incoming[i]: its successor during a reload.
        self.current: list[WorkerProtocol | None] = []
        self.incoming: list[WorkerProtocol] = []
        # Every process started and not yet ended.
        self.alive: set[WorkerProtocol] = set()
        # restarts[i]: how many times worker i was replaced after an exit.
        self.restarts = [0] * count
        self.replacements: dict[int, IDelayedCall] = {}
        self.reloadTimeout: IDelayedCall | None = None
        self.announced = False
        self.stopping = False

    def startService(self) -> None:
        """Start the workers, each with its own listening sockets."""
        StartsEarly.startService(self)
        self.reactorName = workerReactor(self.reactor, runningLoop(self.reactor))
        self.current = [self._spawn(slot) for slot in range(self.count)]

    def _spawn(self, slot: int) -> WorkerProtocol:
        """Start a process to serve as worker C{slot} on its sockets."""
        protocol = WorkerProtocol(self, slot, self.clock.seconds())
        index = slot + 1
        childFDs: dict[int, int | str] = {0: 0, 1: 1, 2: 2, READY_FD: "r"}
        arguments = [
            self.executable,
            "-m",
            "echotwist.workers",
            str(index),
            self.reactorName,
        ]
        for number, sock in enumerate(self.sockets[slot]):
            descriptor = READY_FD + 1 + number
            childFDs[descriptor] = sock.fileno()
            if number < len(self.bindings):
                arguments.append(f"{self.bindings[number].kind()}:{descriptor}")
            else:
                assert self.metricsBindings is not None
                kind = self.metricsBindings[slot].kind()
                arguments.append(f"metrics={kind}:{descriptor}")
        if self.cpus is not None:
            arguments.append(f"cpu={self.cpus[slot]}")
        if self.restarts[slot]:
            arguments.append(f"restarts={self.restarts[slot]}")
        if self.logger is not None:
            arguments.append(f"logger={self.logger}")
        arguments += ["--", *self.options]
        if self.metrics is not None:
            arguments.append(f"--metrics={self.metrics[slot]}")
        protocol.transport = self.reactor.spawnProcess(
            protocol,
            self.executable,
            arguments,
            env=os.environ,
            childFDs=childFDs,
        )
        protocol.pid = protocol.transport.pid
        self.alive.add(protocol)
        return protocol

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

    def workerReady(self, worker: WorkerProtocol) -> None:
        """A worker serves: announce, finish a reload or a replacement."""
        if worker in self.incoming:
            if all(w.ready for w in self.incoming):
                self._takeOver()
            return
        if worker.replaces is not None:
            # Log how long the worker was missing: from its predecessor's exit.
            self.log.info(
                "Worker {index} serves again after {seconds:.2f} s (pid {pid})",
                index=worker.index,
                seconds=self.clock.seconds() - worker.replaces,
                pid=worker.pid,
            )
        if not self.announced and all(w is not None and w.ready for w in self.current):
            self.announced = True
            for binding in self.bindings:
                self.log.info(
                    "Listening on {address} with {count} workers",
                    address=formatAddress(binding.address()),
                    count=self.count,
                )

    def workerEnded(self, worker: WorkerProtocol, reason: Failure) -> None:
        """A worker exited: expected, a failed reload, or one to replace."""
        self.alive.discard(worker)
        why = exitReason(reason)
        if worker.retired or self.stopping:
            if reason.check(ProcessDone) is None:
                self.log.info(
                    "Worker {index} (pid {pid}) exited: {why}",
                    index=worker.index,
                    pid=worker.pid,
                    why=why,
                )
            return
        if worker in self.incoming:
            self._reloadFailed(f"new worker {worker.index} exited: {why}")
            return
        if self.current[worker.slot] is not worker:
            return
        self.current[worker.slot] = None
        try:
            delay = self.policy.exited(
                worker.slot, worker.startedAt, self.clock.seconds()
            )
        except GiveUp as e:
            self.log.error(
                "Worker {index} (pid {pid}) exited: {why}",
                index=worker.index,
                pid=worker.pid,
                why=why,
            )
            self.giveUp(str(e))
            return
        self.log.error(
            "Worker {index} (pid {pid}) exited: {why}; replacing it in {delay:g} s"
            " (restart {restarts})",
            index=worker.index,
            pid=worker.pid,
            why=why,
            delay=delay,
            restarts=self.restarts[worker.slot] + 1,
        )
        self.replacements[worker.slot] = self.clock.callLater(
            delay, self._replace, worker.slot, self.clock.seconds()
        )

    def _replace(self, slot: int, exitedAt: float) -> None:
        del self.replacements[slot]
        self.restarts[slot] += 1
        worker = self._spawn(slot)
        worker.replaces = exitedAt
        self.current[slot] = worker

    def giveUp(self, why: str) -> None:
        """Workers keep dying: say why in one line, stop the rest, exit 1."""
        self.log.critical("Giving up: {why}", why=why)
        if self.errorStream is not None:
            self.errorStream.write(f"twistd echo: giving up: {why}\n")
            self.errorStream.flush()
        self._giveUp()

    def _stopAndFail(self) -> None:
        exitAtEnd(1)
        IReactorCore(self.reactor).stop()

    def reload(self) -> None:
        """SIGHUP: start new workers; once all serve, the old ones drain.

        The new ones run the code installed now and are handed the same
        listening sockets, so no connection is refused and none in flight
        is cut.  If one of them exits before serving, or they are not all
        serving after L{RELOAD_TIMEOUT} seconds, the reload is abandoned
        and the old workers serve on.
        """
        if self.stopping:
            return
        if self.incoming:
            self.log.info("Received SIGHUP while reloading; the reload goes on")
            return
        self.log.info(
            "Received SIGHUP, reloading: starting {count} new workers",
            count=self.count,
        )
        self.incoming = [self._spawn(slot) for slot in range(self.count)]
        self.reloadTimeout = self.clock.callLater(
            RELOAD_TIMEOUT,
            self._reloadFailed,
            f"new workers not serving after {RELOAD_TIMEOUT:g} s",
        )

    def _takeOver(self) -> None:
        """The new workers all serve: retire the old ones, which drain."""
        self._cancelReloadTimeout()
        old = [w for w in self.current if w is not None]
        self.current, self.incoming = list(self.incoming), []
        for worker in old:
            worker.stop()
        self.log.info(
            "Reloaded: {count} new workers serve (pids {pids}); the old ones drain",
            count=self.count,
            pids=" ".join(str(w.pid) for w in self.current if w is not None),
        )

    def _reloadFailed(self, why: str) -> None:
        self.reloadTimeout = None
        self._cancelReloadTimeout()
        for worker in self.incoming:
            worker.stop()
        self.incoming = []
        self.log.error("Reload failed: {why}; the old workers serve on", why=why)

    def _cancelReloadTimeout(self) -> None:
        if self.reloadTimeout is not None and self.reloadTimeout.active():
            self.reloadTimeout.cancel()
        self.reloadTimeout = None

    def stopService(self) -> Deferred[object]:
        """SIGTERM every worker; wait for them (SIGKILL after a timeout)."""
        Service.stopService(self)
        self.stopping = True
        self._cancelReloadTimeout()
        for call in self.replacements.values():
            call.cancel()
        self.replacements.clear()
        self._closeSockets()
        running = list(self.alive)
        for worker in running:
            worker.stop()
        waits = [worker.ended for worker in running]
        killer = self.clock.callLater(self.stopTimeout, self._kill) if waits else None

        def stopped(result: object) -> None:
            if killer is not None and killer.active():
                killer.cancel()

        return DeferredList(waits, consumeErrors=True).addCallback(stopped)

    def _kill(self) -> None:
        for worker in list(self.alive):
            worker.stop("KILL")


def exitReason(reason: Failure) -> str:
    """How a process ended, in a few words: C{killed by SIGKILL}, C{exit status 1}."""
    error = reason.value
    if isinstance(error, ProcessDone | ProcessTerminated):
        if error.signal is not None:
            try:
                name = signal.Signals(error.signal).name
            except ValueError:
                name = f"signal {error.signal}"
            return f"killed by {name}"
        return f"exit status {error.exitCode}"
    return reason.getErrorMessage()


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
