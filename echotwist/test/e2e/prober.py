"""A prober for end-to-end tests: a connection every 20 ms, refusals counted.

While a server's workers are killed, replaced or reloaded, the prober
connects to its port every C{interval} seconds, echoes one byte and
closes, and counts what went wrong: refused connections (nothing
listening), and failed exchanges (reset, closed or timed out).  It runs
in a thread, for at most C{limit} attempts, and every step has a timeout.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from echotwist.test.e2e.harness import WAIT


class Prober:
    """Probe C{127.0.0.1:port} every C{interval} seconds, in a thread."""

    def __init__(
        self,
        port: int,
        interval: float = 0.02,
        timeout: float = 5.0,
        limit: int = 10000,
    ) -> None:
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.limit = limit
        self.attempts = 0
        self.echoed = 0
        self.refused = 0
        # Exchanges that failed after connecting: (attempt, error).
        self.failed: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop probing and wait for the thread (bounded)."""
        self._stop.set()
        self._thread.join(WAIT)
        if self._thread.is_alive():
            raise AssertionError("the prober did not stop")

    def _run(self) -> None:
        # The wait paces the probes; it synchronises nothing.
        while self.attempts < self.limit and not self._stop.wait(self.interval):
            self.attempts += 1
            self._probe()

    def _probe(self) -> None:
        byte = bytes([self.attempts % 256])
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        except ConnectionRefusedError:
            self.refused += 1
            return
        except OSError as e:
            self.failed.append((self.attempts, f"connect: {e}"))
            return
        with sock:
            try:
                sock.sendall(byte)
                echoed = sock.recv(1)
            except OSError as e:
                self.failed.append((self.attempts, str(e)))
                return
        if echoed == byte:
            self.echoed += 1
        else:
            self.failed.append((self.attempts, f"echoed {echoed!r}"))

    def summary(self) -> str:
        """The counts, for assertion messages."""
        return (
            f"{self.attempts} probes: {self.echoed} echoed, {self.refused} refused,"
            f" failed {self.failed[:5]}"
        )
