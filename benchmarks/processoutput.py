"""A child process's output, read as it comes, for the lab's scripts.

C{make cluster}, the sockperf cross-check and the UDP loop measurement
start servers whose log lines say where they listen; L{OutputReader}
reads those lines in a thread and waits for the ones asked for.
"""

from __future__ import annotations

import re
import threading
from typing import TextIO

from benchmarks.netfaults import CommandFailed


class OutputReader:
    """A process's output lines, read in a thread; waits for patterns.

    (The end-to-end tests' reader does the same, but C{echotwist.test}
    needs the test extra, which the lab's scripts do not install.)
    """

    def __init__(self, stream: TextIO) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._condition = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in iter(stream.readline, ""):
            with self._condition:
                self.lines.append(line.rstrip("\n"))
                self._condition.notify_all()
        with self._condition:
            self.closed = True
            self._condition.notify_all()

    def waitForAll(
        self, pattern: str, count: int, timeout: float
    ) -> list[re.Match[str]]:
        """The first C{count} lines matching C{pattern}, once there are that
        many; raise L{CommandFailed} when the output ends or C{timeout}
        seconds pass first.
        """
        regex = re.compile(pattern)

        def matches() -> list[re.Match[str]]:
            found = (regex.search(line) for line in self.lines)
            return [m for m in found if m is not None][:count]

        with self._condition:
            self._condition.wait_for(
                lambda: len(matches()) >= count or self.closed, timeout
            )
            result = matches()
        if len(result) < count:
            raise CommandFailed(
                f"no {count} lines matching {pattern!r} within {timeout:g} s;"
                f" last output: {' / '.join(self.lines[-3:])}"
            )
        return result

    def waitFor(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line matching C{pattern} (see L{waitForAll})."""
        return self.waitForAll(pattern, 1, timeout)[0]

    def waitClosed(self, timeout: float) -> str:
        """All the output, once it has ended (at most C{timeout} s from now)."""
        with self._condition:
            if not self._condition.wait_for(lambda: self.closed, timeout):
                raise CommandFailed(f"output still open after {timeout:g} s")
            return "\n".join(self.lines)

    def text(self) -> str:
        """Everything read so far."""
        with self._condition:
            return "\n".join(self.lines)
