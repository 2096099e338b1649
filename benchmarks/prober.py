"""Probe a TCP echo server: a new connection every 20 ms, each outcome counted.

Every C{interval} seconds the prober opens a new connection, sends a few
bytes and waits for their echo; each attempt ends in one outcome:
C{ok}, C{refused} (nothing listens: the kernel answered with a reset to
the SYN), C{reset} (the connection was reset or closed before the echo
was whole), C{timeout} (no connection within C{timeout} seconds),
C{unanswered} (connected, but no whole echo within C{timeout} seconds),
C{wrong} (the echo differs), C{skipped} (too many attempts still open to
start another) or C{error} (any other socket error).  With C{hold} it also
keeps that many connections open, each echoing one small message at a
time every C{interval}, and records for each the gaps between its echoes:
how long a fault stopped it, and whether it came back.  A held connection
that is closed or reset is counted and opened again.

Standard library only, so that end-to-end tests can use it as they use
their harness::

    python benchmarks/prober.py 127.0.0.1 7000 --seconds 60 [--hold 10]

prints one JSON object (L{ProbeReport.toJSON}) when the time is up, or
when SIGTERM or SIGINT ends it early.  Times in the report are
C{time.monotonic()} values (Linux's C{CLOCK_MONOTONIC}, the same in every
process and network namespace of the machine), so a caller can set them
against the moments it injected a fault.  Every wait is bounded: attempts
by C{timeout}, the run by C{seconds} plus C{timeout}.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import selectors
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

OUTCOMES = (
    "ok",
    "refused",
    "reset",
    "timeout",
    "unanswered",
    "wrong",
    "skipped",
    "error",
)

# Attempts open at once beyond which a new one is skipped (and counted):
# a server that neither accepts nor refuses must not make the prober hold
# thousands of sockets.
MAX_OPEN = 256
# Rounds of event handling between two ticks, at most.
MAX_ROUNDS = 100_000
# Failures kept with their times; the counts are always exact.
MAX_FAILURES = 10_000
# Gaps between a held connection's echoes longer than this many intervals
# are recorded, at most MAX_GAPS per connection.
GAP_INTERVALS = 5
MAX_GAPS = 200


@dataclass
class HeldReport:
    """One held connection slot: its echoes, closes and the gaps between echoes."""

    slot: int
    echoes: int = 0
    closed: int = 0
    wrong: int = 0
    # (last echo before, first echo after) for every gap longer than
    # GAP_INTERVALS intervals; a slot's first gap starts when it opened.
    gaps: list[tuple[float, float]] = field(default_factory=list)
    lastEcho: float | None = None

    def toJSON(self) -> dict[str, Any]:
        """The slot as a JSON-ready object."""
        return {
            "slot": self.slot,
            "echoes": self.echoes,
            "closed": self.closed,
            "wrong": self.wrong,
            "gaps": [[round(a, 4), round(b, 4)] for a, b in self.gaps],
            "last_echo": None if self.lastEcho is None else round(self.lastEcho, 4),
        }


@dataclass
class ProbeReport:
    """What a probe run saw: outcomes counted, failures timed, held slots."""

    host: str
    port: int
    interval: float
    timeout: float
    started: float = 0.0
    ended: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    # (time the attempt started, outcome) for every attempt not ok, at
    # most MAX_FAILURES of them; failuresDropped counts the rest.
    failures: list[tuple[float, str]] = field(default_factory=list)
    failuresDropped: int = 0
    held: list[HeldReport] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        """Attempts made (every outcome counted once)."""
        return sum(self.counts.values())

    def record(self, started: float, outcome: str) -> None:
        """Count one attempt's outcome; keep its time if it failed."""
        self.counts[outcome] += 1
        if outcome == "ok":
            return
        if len(self.failures) < MAX_FAILURES:
            self.failures.append((started, outcome))
        else:
            self.failuresDropped += 1

    def toJSON(self) -> dict[str, Any]:
        """The report as one JSON-ready object."""
        return {
            "host": self.host,
            "port": self.port,
            "interval": self.interval,
            "timeout": self.timeout,
            "started": round(self.started, 4),
            "ended": round(self.ended, 4),
            "attempts": self.attempts,
            "counts": {name: self.counts.get(name, 0) for name in OUTCOMES},
            "failures": [[round(t, 4), kind] for t, kind in self.failures],
            "failures_dropped": self.failuresDropped,
            "held": [slot.toJSON() for slot in self.held],
        }


class _Attempt:
    """One probing connection: connect, send, read the echo back."""

    def __init__(self, sock: socket.socket, started: float, message: bytes) -> None:
        self.sock = sock
        self.started = started
        self.deadline = started
        self.message = message
        self.received = b""
        self.connected = False


class _Held:
    """A held connection slot: one message in flight at a time."""

    def __init__(self, report: HeldReport) -> None:
        self.report = report
        self.sock: socket.socket | None = None
        self.connected = False
        self.seq = 0
        self.message = b""
        self.received = b""
        self.waiting = False
        # When the current gap began: the slot's start, or its last echo.
        self.since = 0.0


def _classify(error: int) -> str:
    if error == errno.ECONNREFUSED:
        return "refused"
    if error in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "reset"
    if error in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "timeout"
    return "error"


class Prober:
    """The probing loop; L{run} returns a L{ProbeReport}.

    C{stop} ends the run early when set (another thread, or a signal
    handler, sets it).
    """

    def __init__(
        self,
        host: str,
        port: int,
        seconds: float,
        *,
        interval: float = 0.02,
        timeout: float = 1.0,
        hold: int = 0,
        stop: threading.Event | None = None,
    ) -> None:
        if not seconds > 0 or not interval > 0 or not timeout > 0:
            raise ValueError("seconds, interval and timeout must be > 0")
        self.address = (host, port)
        self.seconds = seconds
        self.interval = interval
        self.timeout = timeout
        self.stop = stop if stop is not None else threading.Event()
        self.report = ProbeReport(host, port, interval, timeout)
        self.report.held = [HeldReport(slot) for slot in range(hold)]
        self.held = [_Held(slot) for slot in self.report.held]
        self.open: dict[socket.socket, _Attempt] = {}
        self.selector = selectors.DefaultSelector()
        self.counter = 0

    def run(self) -> ProbeReport:
        """Probe for C{seconds} (or until C{stop}), then finish what is open."""
        now = time.monotonic()
        self.report.started = now
        end = now + self.seconds
        # The loop makes one attempt per interval, so this bounds it even
        # if the clock misbehaved; the deadlines bound it in time.
        ticks = int(self.seconds / self.interval) + 2
        nextTick = now
        try:
            for _ in range(ticks):
                if self.stop.is_set() or nextTick >= end:
                    break
                self._tick(nextTick)
                nextTick += self.interval
                self._pump(nextTick)
            # Let the attempts still open finish, within their timeout.
            self._pump(time.monotonic() + self.timeout, untilIdle=True)
        finally:
            self._closeAll()
        self.report.ended = time.monotonic()
        return self.report

    def _tick(self, now: float) -> None:
        self._startAttempt(now)
        for held in self.held:
            self._tickHeld(held, now)

    def _message(self) -> bytes:
        self.counter += 1
        return b"probe %d\n" % self.counter

    def _newSocket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _startAttempt(self, now: float) -> None:
        if len(self.open) >= MAX_OPEN:
            self.report.record(now, "skipped")
            return
        sock = self._newSocket()
        attempt = _Attempt(sock, now, self._message())
        attempt.deadline = now + self.timeout
        error = sock.connect_ex(self.address)
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            self.report.record(now, _classify(error))
            return
        self.open[sock] = attempt
        self.selector.register(sock, selectors.EVENT_WRITE, attempt)

    def _finish(self, attempt: _Attempt, outcome: str) -> None:
        self.selector.unregister(attempt.sock)
        del self.open[attempt.sock]
        attempt.sock.close()
        self.report.record(attempt.started, outcome)

    def _attemptEvent(self, attempt: _Attempt) -> None:
        sock = attempt.sock
        if not attempt.connected:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._finish(attempt, _classify(error))
                return
            attempt.connected = True
            try:
                sock.send(attempt.message)
            except OSError as e:
                self._finish(attempt, _classify(e.errno or 0))
                return
            self.selector.modify(sock, selectors.EVENT_READ, attempt)
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as e:
            self._finish(attempt, _classify(e.errno or 0))
            return
        if not data:
            self._finish(attempt, "reset")
            return
        attempt.received += data
        if not attempt.message.startswith(attempt.received[: len(attempt.message)]):
            self._finish(attempt, "wrong")
        elif len(attempt.received) >= len(attempt.message):
            extra = len(attempt.received) > len(attempt.message)
            self._finish(attempt, "wrong" if extra else "ok")

    def _expire(self, now: float) -> None:
        for attempt in [a for a in self.open.values() if a.deadline <= now]:
            self._finish(attempt, "unanswered" if attempt.connected else "timeout")

    # Held connections.

    def _tickHeld(self, held: _Held, now: float) -> None:
        if held.sock is None:
            if held.report.lastEcho is None and held.since == 0.0:
                held.since = now
            sock = self._newSocket()
            error = sock.connect_ex(self.address)
            if error not in (0, errno.EINPROGRESS):
                # Nothing to connect to yet: try again next interval.
                sock.close()
                return
            held.sock, held.connected = sock, False
            self.selector.register(sock, selectors.EVENT_WRITE, held)
            return
        if held.connected and not held.waiting:
            held.seq += 1
            held.message = b"held %d %d\n" % (held.report.slot, held.seq)
            held.received = b""
            held.waiting = True
            try:
                held.sock.send(held.message)
            except BlockingIOError:
                # Sixteen bytes not taken: the send buffer is full of
                # retransmissions; the next interval tries again.
                held.waiting = False
            except OSError:
                self._dropHeld(held)

    def _dropHeld(self, held: _Held) -> None:
        if held.sock is not None:
            self.selector.unregister(held.sock)
            held.sock.close()
        if held.connected:
            held.report.closed += 1
        held.sock, held.connected, held.waiting = None, False, False

    def _heldEvent(self, held: _Held, now: float) -> None:
        assert held.sock is not None
        if not held.connected:
            if held.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                # Refused or unreachable: not counted as a close, the
                # connection never was; the next interval tries again.
                self._dropHeld(held)
                return
            held.connected = True
            self.selector.modify(held.sock, selectors.EVENT_READ, held)
            return
        try:
            data = held.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self._dropHeld(held)
            return
        if not data:
            self._dropHeld(held)
            return
        held.received += data
        if not held.message.startswith(held.received[: len(held.message)]):
            held.report.wrong += 1
            self._dropHeld(held)
        elif len(held.received) >= len(held.message):
            held.waiting = False
            report = held.report
            report.echoes += 1
            gap = now - held.since > GAP_INTERVALS * self.interval
            if gap and len(report.gaps) < MAX_GAPS:
                report.gaps.append((held.since, now))
            held.since = now
            report.lastEcho = now

    def _pump(self, until: float, untilIdle: bool = False) -> None:
        """Handle events until C{until} (with C{untilIdle}: or no attempt is open)."""
        # Each round handles the events ready or waits up to an interval;
        # the count only guards against a selector that keeps reporting
        # an event nothing consumes.
        for _ in range(MAX_ROUNDS):
            now = time.monotonic()
            self._expire(now)
            if now >= until or (untilIdle and not self.open):
                return
            for key, _ in self.selector.select(min(until - now, self.interval)):
                if isinstance(key.data, _Attempt):
                    if key.data.sock in self.open:
                        self._attemptEvent(key.data)
                else:
                    self._heldEvent(key.data, time.monotonic())

    def _closeAll(self) -> None:
        for attempt in list(self.open.values()):
            self._finish(attempt, "unanswered" if attempt.connected else "timeout")
        for held in self.held:
            if held.sock is not None:
                self.selector.unregister(held.sock)
                held.sock.close()
                held.sock = None
        self.selector.close()


def probe(
    host: str,
    port: int,
    seconds: float,
    *,
    interval: float = 0.02,
    timeout: float = 1.0,
    hold: int = 0,
    stop: threading.Event | None = None,
) -> ProbeReport:
    """Run a L{Prober} to its end and return what it saw."""
    return Prober(
        host, port, seconds, interval=interval, timeout=timeout, hold=hold, stop=stop
    ).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Probe as the command line says; print the JSON report; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--hold", type=int, default=0, help="connections to hold")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def stopping(number: int, frame: FrameType | None) -> None:
        stop.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stopping)
    try:
        report = probe(
            args.host,
            args.port,
            args.seconds,
            interval=args.interval,
            timeout=args.timeout,
            hold=args.hold,
            stop=stop,
        )
    except ValueError as e:
        parser.error(str(e))
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(json.dumps(report.toJSON()) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
