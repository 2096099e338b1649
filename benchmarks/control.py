"""Starting, pinning and stopping the processes the benchmark measures.

Servers run under C{taskset -c CPU} when there are CPUs to pin to; their
port is read from their output; every wait is bounded by L{WAIT} seconds.
Also the machine's description for the tables, and this process's
open-file limit (its children inherit it).
"""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.catalogue import Server

# Every wait on a child process is bounded by this many seconds.
WAIT = 60.0

# The start of a command line running twistd with this interpreter, so
# the echo plugin is found as this environment (and PYTHONPATH) has it.
TWISTD = (sys.executable, "-c", "from twisted.scripts.twistd import run; run()")

_PORT_LINES = (
    re.compile(r"^PORT (?P<port>\d+)$", re.MULTILINE),
    re.compile(r"Listening on tcp:127\.0\.0\.1:(?P<port>\d+)"),
)


@dataclass(frozen=True)
class Pinning:
    """Where the server and the load generator run."""

    serverCpu: int | None
    loadCpu: int | None
    # For --workers: one load generator pinned to each of these cores, and
    # (--pin-workers) worker I on the I-th of them; one worker (N = 1) is
    # pinned to the first by the benchmark.
    cores: tuple[int, ...] = ()

    def describe(self) -> str:
        """The pinning in words, for the tables' notes."""
        if self.cores:
            return (
                "one worker and one load generator pinned to each of CPUs "
                + ", ".join(map(str, self.cores))
            )
        if self.serverCpu is None:
            return "nothing pinned"
        return (
            f"server pinned to CPU {self.serverCpu}, load generator to CPU "
            f"{self.loadCpu}"
        )


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """Prefix C{command} with C{taskset -c cpu} when pinning is possible."""
    if cpu is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


def cpusAvailable() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def pinProcess(pid: int, cpu: int) -> None:
    """Pin every thread of process C{pid} to C{cpu}."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


class Running:
    """A started server process, its log file and its port."""

    def __init__(self, server: Server, cpu: int | None, logDir: Path) -> None:
        self.server = server
        self.log = logDir / f"{server.name}.log"
        self.process = subprocess.Popen(
            pinned(server.command, cpu),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **dict(server.environment)},
        )
        self.port = self._waitPort()

    def _waitPort(self) -> int:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            for regex in _PORT_LINES:
                match = regex.search(text)
                if match:
                    return int(match.group("port"))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.server.name} did not start listening:\n"
            + self.log.read_text(errors="replace")[-2000:]
        )

    def stop(self) -> None:
        """Terminate the server; kill it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT)


def raiseFileLimit(needed: int) -> None:
    """Raise this process's (and so its children's) open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        sys.exit(f"bench: need {needed} open files, the hard limit is {hard}")


def machine() -> str:
    """One line describing the machine the figures come from."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model or platform.processor()}, {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def loadAverage() -> str:
    """The system's 1, 5 and 15 minute load averages, as text."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
