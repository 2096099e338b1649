"""The processes of a fault scenario: the server, the bench and the prober.

Each runs from the source tree (C{PYTHONPATH} is the repository root,
as in the end-to-end tests' harness), optionally inside a network
namespace (C{ip netns exec}, which execs the command in place, so the
pid is the command's own), in a session of its own so that its whole
process group (a supervisor and its workers) can be killed.
L{Children} remembers every process started and kills what is left of
them at the end, whatever happened.  Every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from benchmarks.control import TWISTD
from benchmarks.procstat import readStatusKiB
from benchmarks.supervisorlog import LogLine, listeningPort, workerIndex

ROOT = Path(__file__).resolve().parent.parent
# Longest a server may take to announce that it listens, or to stop.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
# Lines of server output kept in memory; the log file has all of them.
MAX_LINES = 500_000


def environment() -> dict[str, str]:
    """The children's environment: this source tree first, unbuffered output."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def inNamespace(namespace: str | None, command: Sequence[str]) -> list[str]:
    """C{command}, run inside C{namespace} if one is given."""
    if namespace is None:
        return list(command)
    return ["ip", "netns", "exec", namespace, *command]


class Children:
    """Every process started for the scenarios; L{killAll} ends what is left."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []

    def start(
        self, command: Sequence[str], stdout: int | IO[str], stderr: int | IO[str]
    ) -> subprocess.Popen[str]:
        """Start C{command} in a session of its own, from the repository root."""
        process = subprocess.Popen(
            list(command),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            cwd=ROOT,
            env=environment(),
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def killAll(self) -> None:
        """SIGKILL the process group of every child still running, and reap it."""
        for process in self.processes:
            if process.poll() is None:
                # The group is the child's own (start_new_session): its
                # pid is the group id, and it holds only what it started.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT)
        self.processes = []


class EchoServer:
    """C{twistd -n echo --workers N} in the background, its output timed."""

    def __init__(
        self,
        children: Children,
        logPath: Path,
        workers: int,
        *,
        interface: str = "127.0.0.1",
        namespace: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.workers = workers
        self.lines: list[LogLine] = []
        self.dropped = 0
        self._lock = threading.Lock()
        self._log = logPath.open("w", encoding="utf-8")
        command = [
            *TWISTD,
            "-n",
            "--pidfile=",
            "echo",
            "--workers",
            str(workers),
            "--port",
            f"tcp:0:interface={interface}",
            *options,
        ]
        self.process = children.start(
            inNamespace(namespace, command), subprocess.PIPE, subprocess.STDOUT
        )
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = self._waitPort()

    @property
    def pid(self) -> int:
        """The supervisor's pid."""
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for text in iter(self.process.stdout.readline, ""):
            at = time.monotonic()
            line = LogLine(at, text.rstrip("\n"))
            self._log.write(f"{at - self.started:10.4f} {line.text}\n")
            with self._lock:
                if len(self.lines) < MAX_LINES:
                    self.lines.append(line)
                else:
                    self.dropped += 1
        self._log.flush()

    def snapshot(self) -> list[LogLine]:
        """The lines read so far."""
        with self._lock:
            return list(self.lines)

    def _waitPort(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.05)):
            if time.monotonic() >= deadline:
                break
            port = listeningPort(self.snapshot())
            if port is not None:
                return port
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        tail = "\n".join(line.text for line in self.snapshot()[-15:])
        raise RuntimeError(f"the server did not start listening:\n{tail}")

    def alive(self) -> bool:
        """Whether the supervisor is still running."""
        return self.process.poll() is None

    def workerPids(self) -> list[int]:
        """The supervisor's children (its workers) now, by pid."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def rssKiB(self) -> dict[int, int]:
        """Resident memory (C{VmRSS}, KiB) of the supervisor and each worker."""
        sizes = {}
        for pid in [self.pid, *self.workerPids()]:
            with contextlib.suppress(OSError, ValueError):
                sizes[pid] = readStatusKiB(pid, "VmRSS")
        return sizes

    def signal(self, number: int) -> None:
        """Send C{number} to the supervisor, if it runs."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def stop(self) -> int | None:
        """SIGTERM the supervisor, wait, then SIGKILL its group; return its status."""
        self.signal(signal.SIGTERM)
        try:
            status: int | None = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
        # Whatever is left of the group (a worker that outlived the
        # supervisor) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        self._log.close()
        return status


def startTime(pid: int) -> int:
    """When process C{pid} started, in clock ticks since boot (C{/proc/PID/stat})."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # Field 22 counted from the start; the 20th after the command name.
    return int(text.rsplit(")", 1)[1].split()[19])


def commandLine(pid: int) -> list[str]:
    """Process C{pid}'s arguments."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def oldestWorker(pids: Sequence[int]) -> tuple[int, int | None] | None:
    """The worker among C{pids} that has run longest, and its index; None if none."""
    known = []
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            known.append((startTime(pid), pid, workerIndex(commandLine(pid))))
    if not known:
        return None
    _, pid, index = min(known)
    return pid, index


class Job:
    """A bench or prober run in the background; L{result} reads its JSON."""

    def __init__(
        self, children: Children, command: Sequence[str], timeout: float
    ) -> None:
        self.command = list(command)
        self.timeout = timeout
        self.process = children.start(command, subprocess.PIPE, subprocess.PIPE)
        self.started = time.monotonic()

    def result(self) -> tuple[dict[str, Any] | None, str]:
        """Wait (up to the timeout) and return its JSON report and its stderr.

        A job still running at its timeout is killed; its report is then
        None, as is that of a job that printed no JSON.
        """
        left = max(1.0, self.started + self.timeout - time.monotonic())
        try:
            out, err = self.process.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            out, err = self.process.communicate(timeout=STOP_TIMEOUT)
            err += f"\nkilled after {self.timeout:g} s"
        report = None
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    report = json.loads(line)
                break
        return report, err.strip()

    def done(self) -> bool:
        """Whether it has ended."""
        return self.process.poll() is not None


def startBench(
    children: Children,
    host: str,
    port: int,
    *,
    connections: int,
    rate: float,
    seconds: float,
    warmup: float,
    namespace: str | None = None,
) -> Job:
    """C{python -m echotwist.bench} open loop at C{rate}, JSON report."""
    command = [
        sys.executable,
        "-m",
        "echotwist.bench",
        "-c",
        str(connections),
        "--rate",
        f"{rate:g}",
        "-d",
        f"{seconds:g}",
        "-w",
        f"{warmup:g}",
        "--timeout",
        "3",
        "--json",
        host,
        str(port),
    ]
    return Job(children, inNamespace(namespace, command), seconds + warmup + 60)


def startProber(
    children: Children,
    host: str,
    port: int,
    *,
    seconds: float,
    timeout: float = 1.0,
    hold: int = 0,
    namespace: str | None = None,
) -> Job:
    """C{benchmarks/prober.py}: a connection every 20 ms for C{seconds}."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "prober.py"),
        host,
        str(port),
        "--seconds",
        f"{seconds:g}",
        "--timeout",
        f"{timeout:g}",
        "--hold",
        str(hold),
    ]
    return Job(children, inNamespace(namespace, command), seconds + timeout + 30)
