"""Unit tests for supervision under C{--workers}: replacement, crash loops, reload.

L{WorkerPool} runs against the fake process reactor and clock of
L{echotwist.test.test_workers}; L{RestartPolicy} is plain arithmetic.  The
end-to-end tests (real C{twistd}, real signals, a prober counting refused
connections) are in L{echotwist.test.e2e.test_supervision}.
"""

from __future__ import annotations

import io
import signal

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.test.test_workers import end, pool, ready
from echotwist.workers.restarts import GiveUp, RestartPolicy
from echotwist.workers.supervisor import RELOAD_TIMEOUT, exitReason


class RestartPolicyTests(SynchronousTestCase):
    """When to replace a worker, and when to give up."""

    def test_stableWorkerReplacedAtOnce(self) -> None:
        """A worker that served a while is replaced without delay."""
        policy = RestartPolicy(5, 60.0, stableAfter=10.0)
        self.assertEqual(policy.exited(0, startedAt=0.0, now=10.0), 0.0)
        self.assertEqual(policy.exited(0, startedAt=10.0, now=30.0), 0.0)

    def test_earlyDeathsBackOff(self) -> None:
        """Deaths soon after starting double the delay, up to the maximum."""
        policy = RestartPolicy(0, 60.0, stableAfter=10.0, firstDelay=0.5, maxDelay=2.0)
        delays = [policy.exited(0, startedAt=t, now=t + 1.0) for t in range(5)]
        self.assertEqual(delays, [0.5, 1.0, 2.0, 2.0, 2.0])

    def test_backOffPerWorker(self) -> None:
        """One worker's early deaths do not delay another's replacement."""
        policy = RestartPolicy(0, 60.0, stableAfter=10.0, firstDelay=0.5)
        policy.exited(0, startedAt=0.0, now=1.0)
        policy.exited(0, startedAt=1.0, now=2.0)
        self.assertEqual(policy.exited(1, startedAt=0.0, now=3.0), 0.5)

    def test_stableRunResetsBackOff(self) -> None:
        """After a worker served a while, its next early death starts over."""
        policy = RestartPolicy(0, 60.0, stableAfter=10.0, firstDelay=0.5)
        policy.exited(0, startedAt=0.0, now=1.0)
        policy.exited(0, startedAt=1.0, now=2.0)
        policy.exited(0, startedAt=2.0, now=30.0)
        self.assertEqual(policy.exited(0, startedAt=30.0, now=31.0), 0.5)

    def test_givesUpAfterLimit(self) -> None:
        """More than C{limit} exits within the window: give up."""
        policy = RestartPolicy(5, 60.0)
        for second in range(5):
            policy.exited(0, startedAt=-100.0, now=float(second * 10))
        with self.assertRaises(GiveUp) as caught:
            policy.exited(1, startedAt=-100.0, now=59.0)
        self.assertEqual((caught.exception.count, caught.exception.window), (6, 60.0))
        self.assertIn("6 unexpected worker exits within 60 s", str(caught.exception))

    def test_oldExitsForgotten(self) -> None:
        """Exits older than the window do not count."""
        policy = RestartPolicy(5, 60.0)
        for second in range(5):
            policy.exited(0, startedAt=-100.0, now=float(second * 10))
        # The first exit (at 0) is 60 s old at 60: five in the window.
        self.assertEqual(policy.exited(0, startedAt=-100.0, now=60.0), 0.0)

    def test_zeroNeverGivesUp(self) -> None:
        """A limit of 0 never gives up."""
        policy = RestartPolicy(0, 60.0)
        for _ in range(100):
            policy.exited(0, startedAt=-100.0, now=0.0)


class ExitReasonTests(SynchronousTestCase):
    """How a worker's end is worded."""

    def test_words(self) -> None:
        """A signal by name, else the exit status."""
        self.assertEqual(
            exitReason(Failure(ProcessTerminated(signal=signal.SIGKILL))),
            "killed by SIGKILL",
        )
        self.assertEqual(exitReason(Failure(ProcessTerminated(3))), "exit status 3")
        self.assertEqual(exitReason(Failure(ProcessDone(0))), "exit status 0")


class ReplacementTests(SynchronousTestCase):
    """A worker that exits unexpectedly is replaced on the same sockets."""

    def test_replacedOnSameSockets(self) -> None:
        """The replacement gets the dead worker's descriptors and its count."""
        _, reactor, sockets = pool(2)
        ready(reactor, 0)
        ready(reactor, 1)
        reactor.advance(30)
        with capturedLogs() as events:
            end(reactor, 1, status=9)
            self.assertEqual(len(reactor.spawned), 2)
            reactor.advance(0)
        self.assertEqual(len(reactor.spawned), 3)
        self.assertEqual(reactor.childFDs[2], reactor.childFDs[1])
        self.assertFalse(any(s.closed for s in sockets))
        arguments = list(reactor.spawned[2][1])
        self.assertEqual(arguments[3], "2")
        self.assertIn("restarts=1", arguments[: arguments.index("--")])
        # One line, an error, saying which worker, why and what happens.
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"].name, "error")
        self.assertEqual(
            formatEvent(events[0]),
            "Worker 2 (pid 1001) exited: exit status 9; replacing it in 0 s"
            " (restart 1)",
        )

    def test_replacementServes(self) -> None:
        """When the replacement serves, the time the worker was missing is logged."""
        _, reactor, _ = pool(1)
        ready(reactor, 0)
        reactor.advance(30)
        end(reactor, 0, status=9)
        reactor.advance(0)
        reactor.advance(0.4)
        with capturedLogs() as events:
            ready(reactor, 1)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["Worker 1 serves again after 0.40 s (pid 1001)"],
        )

    def test_replacedBeforeAnnounced(self) -> None:
        """A worker replaced before all were first ready is logged as such,
        and the pool is announced once every worker serves.
        """
        _, reactor, _ = pool(2)
        ready(reactor, 0)
        reactor.advance(30)
        end(reactor, 0, status=9)
        reactor.advance(0)
        with capturedLogs() as events:
            ready(reactor, 2)
            ready(reactor, 1)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "Worker 1 serves again after 0.00 s (pid 1002)",
                "Listening on tcp:127.0.0.1:5000 with 2 workers",
            ],
        )

    def test_earlyDeathDelayed(self) -> None:
        """A worker dying soon after it started is replaced after a delay."""
        _, reactor, _ = pool(1, policy=RestartPolicy(firstDelay=0.5))
        reactor.advance(1)
        end(reactor, 0, status=1)
        reactor.advance(0.49)
        self.assertEqual(len(reactor.spawned), 1)
        reactor.advance(0.01)
        self.assertEqual(len(reactor.spawned), 2)

    def test_stopCancelsReplacement(self) -> None:
        """Stopping while a replacement waits starts nothing more."""
        workers, reactor, _ = pool(2)
        reactor.advance(1)
        end(reactor, 0, status=1)
        stopped = workers.stopService()
        reactor.advance(10)
        self.assertEqual(len(reactor.spawned), 2)
        self.assertEqual(reactor.spawned[1][2].signals, ["TERM"])
        end(reactor, 1)
        self.successResultOf(stopped)

    def test_exitWhileStoppingNotReplaced(self) -> None:
        """Workers exiting on shutdown are not replaced."""
        workers, reactor, _ = pool(2)
        workers.stopService()
        end(reactor, 0, status=15)
        end(reactor, 1)
        reactor.advance(10)
        self.assertEqual(len(reactor.spawned), 2)


class CrashLoopTests(SynchronousTestCase):
    """Workers that keep dying make the supervisor give up, loudly."""

    def test_givesUp(self) -> None:
        """Past the limit: one line on standard error, then give up."""
        stream = io.StringIO()
        gaveUp: list[None] = []
        _, reactor, _ = pool(
            2,
            policy=RestartPolicy(2, 60.0),
            errorStream=stream,
            giveUp=lambda: gaveUp.append(None),
        )
        for _ in range(2):
            reactor.advance(30)
            end(reactor, len(reactor.spawned) - 1, status=1)
            reactor.advance(0)
        self.assertEqual((len(reactor.spawned), gaveUp), (4, []))
        with capturedLogs() as events:
            end(reactor, 0, status=1)
        self.assertEqual(gaveUp, [None])
        self.assertEqual(len(reactor.spawned), 4)
        self.assertEqual(
            stream.getvalue(),
            "twistd echo: giving up: 3 unexpected worker exits within 60 s"
            " (see --max-restarts, --restart-window)\n",
        )
        self.assertEqual(events[-1]["log_level"].name, "critical")


class ReloadTests(SynchronousTestCase):
    """SIGHUP: new workers take over, then the old ones drain."""

    def test_newWorkersBeforeOldStop(self) -> None:
        """New workers get the same sockets; the old ones get SIGTERM only
        once every new one serves.
        """
        workers, reactor, sockets = pool(2)
        ready(reactor, 0)
        ready(reactor, 1)
        workers.reload()
        self.assertEqual(len(reactor.spawned), 4)
        self.assertEqual(reactor.childFDs[2:], reactor.childFDs[:2])
        ready(reactor, 2)
        self.assertEqual([p.signals for _, _, p in reactor.spawned[:2]], [[], []])
        with capturedLogs() as events:
            ready(reactor, 3)
        self.assertEqual(
            [p.signals for _, _, p in reactor.spawned], [["TERM"], ["TERM"], [], []]
        )
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["Reloaded: 2 new workers serve (pids 1002 1003); the old ones drain"],
        )
        self.assertFalse(any(s.closed for s in sockets))
        # The old ones' exit after draining is expected: nothing replaced.
        end(reactor, 0)
        end(reactor, 1)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 4)

    def test_newWorkerDies(self) -> None:
        """A new worker exiting before it serves abandons the reload."""
        workers, reactor, _ = pool(2)
        ready(reactor, 0)
        ready(reactor, 1)
        workers.reload()
        ready(reactor, 2)
        with capturedLogs() as events:
            end(reactor, 3, status=1)
        self.assertEqual(
            [p.signals for _, _, p in reactor.spawned], [[], [], ["TERM"], []]
        )
        self.assertEqual(events[0]["log_level"].name, "error")
        self.assertIn("Reload failed: new worker 2 exited", formatEvent(events[0]))
        end(reactor, 2)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 4)
        # The old workers still count as current: their death is replaced.
        end(reactor, 0, status=9)
        reactor.advance(0)
        self.assertEqual(len(reactor.spawned), 5)

    def test_reloadTimesOut(self) -> None:
        """New workers not all serving in time are stopped; the old serve on."""
        workers, reactor, _ = pool(1)
        ready(reactor, 0)
        workers.reload()
        reactor.advance(RELOAD_TIMEOUT)
        self.assertEqual([p.signals for _, _, p in reactor.spawned], [[], ["TERM"]])

    def test_reloadWhileReloading(self) -> None:
        """A second SIGHUP during a reload starts nothing more."""
        workers, reactor, _ = pool(1)
        workers.reload()
        workers.reload()
        self.assertEqual(len(reactor.spawned), 2)

    def test_stopDuringReload(self) -> None:
        """Stopping during a reload stops old and new workers alike."""
        workers, reactor, _ = pool(1)
        workers.reload()
        stopped = workers.stopService()
        self.assertEqual([p.signals for _, _, p in reactor.spawned], [["TERM"]] * 2)
        end(reactor, 0)
        end(reactor, 1)
        self.successResultOf(stopped)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_loggerPassedOn(self) -> None:
        """Workers are told the supervisor's twistd --logger."""
        _, reactor, _ = pool(1, logger="echotwist.logging.jsonLogger")
        arguments = list(reactor.spawned[0][1])
        self.assertIn(
            "logger=echotwist.logging.jsonLogger", arguments[: arguments.index("--")]
        )
