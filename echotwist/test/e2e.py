"""Support for end-to-end tests: real C{twistd} and client processes.

Servers listen on port 0 of 127.0.0.1; the bound port is read from the
log line C{Listening on tcp:127.0.0.1:PORT}.  Every wait has a timeout, and
every process started is killed at test cleanup.  Nothing here sleeps to
synchronise: waits block on the process's output or exit, with a bound.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO, cast

from twisted.trial.unittest import SynchronousTestCase

# The source tree that holds this copy of echotwist (and its plugin).
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

# How long any single wait may take before the test fails.
WAIT = 30.0

_LISTENING = re.compile(r"Listening on (?P<address>\S+)")


def childEnvironment(**extra: str) -> dict[str, str]:
    """The environment for a child process that runs this source tree."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def twistdCommand(*arguments: str) -> list[str]:
    """The command line that runs C{twistd} with this interpreter."""
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        *arguments,
    ]


class OutputReader:
    """Collect a process's output lines in a thread; wait for patterns."""

    def __init__(self, stream: TextIO) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: TextIO) -> None:
        for line in iter(stream.readline, ""):
            with self._condition:
                self.lines.append(line.rstrip("\n"))
                self._condition.notify_all()
        with self._condition:
            self.closed = True
            self._condition.notify_all()

    def waitForAll(
        self,
        pattern: str | re.Pattern[str],
        count: int = 1,
        timeout: float = WAIT,
        after: int = 0,
    ) -> list[re.Match[str]]:
        """Wait until C{count} lines from line C{after} on match C{pattern}.

        Return the first C{count} matches; raise L{AssertionError} when the
        output ends or C{timeout} seconds pass first.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def matches() -> list[re.Match[str]]:
            found = (regex.search(line) for line in self.lines[after:])
            return [m for m in found if m is not None][:count]

        with self._condition:
            self._condition.wait_for(
                lambda: len(matches()) >= count or self.closed, timeout
            )
            result = matches()
            if len(result) < count:
                raise AssertionError(
                    f"{len(result)} of {count} lines matching {regex.pattern!r}"
                    f" within {timeout} s; output:\n" + "\n".join(self.lines[-40:])
                )
            return result

    def waitFor(
        self, pattern: str | re.Pattern[str], timeout: float = WAIT, after: int = 0
    ) -> re.Match[str]:
        """Wait for the first line (from line C{after} on) matching C{pattern}."""
        return self.waitForAll(pattern, 1, timeout, after)[0]

    def text(self) -> str:
        """Everything read so far."""
        with self._condition:
            return "\n".join(self.lines)


class ServerProcess:
    """A running C{twistd -n echo} and the addresses it listens on."""

    def __init__(self, process: subprocess.Popen[str], output: OutputReader) -> None:
        self.process = process
        self.output = output
        self.addresses: list[str] = []
        self.port = 0

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def waitListening(self, count: int = 1, timeout: float = WAIT) -> None:
        """Wait for C{count} C{Listening on ...} lines; record the TCP port."""
        matches = self.output.waitForAll(_LISTENING, count, timeout)
        self.addresses = [m.group("address") for m in matches]
        for address in self.addresses:
            if address.startswith(("tcp:", "tcp6:")):
                self.port = int(address.rsplit(":", 1)[1])
                break

    def signal(self, number: int = signal.SIGTERM) -> None:
        """Send C{number} to the server."""
        if self.process.poll() is None:
            self.process.send_signal(number)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for the server to exit and return its status."""
        return self.process.wait(timeout)

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM the server and wait for it to exit; SIGKILL if it will not."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def rssKiB(self) -> int:
        """The server's resident set size in KiB (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS for the server")


def startServer(
    test: SynchronousTestCase,
    *arguments: str,
    listen: Sequence[str] = ("tcp:0:interface=127.0.0.1",),
    twistdOptions: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wait: bool = True,
    launcher: Sequence[str] = (),
) -> ServerProcess:
    """Start C{twistd -n echo} listening on C{listen}, killed at cleanup.

    With C{wait}, return once every listener has logged its address.
    C{launcher} is a command prefix that execs the rest (see
    L{withFileLimit}).
    """
    command = [
        *launcher,
        *twistdCommand(
            "-n",
            "--pidfile=",
            *twistdOptions,
            "echo",
            *(a for endpoint in listen for a in ("--listen", endpoint)),
            *arguments,
        ),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=str(PROJECT_ROOT),
        env=env if env is not None else childEnvironment(),
    )
    assert process.stdout is not None
    server = ServerProcess(process, OutputReader(cast(TextIO, process.stdout)))
    test.addCleanup(_kill, process)
    if wait:
        server.waitListening(len(listen))
    return server


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(WAIT)
    if process.stdout is not None:
        process.stdout.close()


def runClient(
    *arguments: str, timeout: float = WAIT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run C{python -m echotwist.client ARGUMENTS} to completion."""
    return subprocess.run(
        [sys.executable, "-m", "echotwist.client", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(PROJECT_ROOT),
        env=env if env is not None else childEnvironment(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def withFileLimit(count: int) -> list[str]:
    """A launcher prefix that runs its command with C{RLIMIT_NOFILE} = C{count}.

    A small Python program sets the limit on itself and execs the command,
    so the limit is inherited without C{preexec_fn}.
    """
    return [
        sys.executable,
        "-c",
        "import os, resource, sys; n = int(sys.argv[1]);"
        " resource.setrlimit(resource.RLIMIT_NOFILE, (n, n));"
        " os.execv(sys.argv[2], sys.argv[2:])",
        str(count),
    ]


def connect(port: int, timeout: float = WAIT, source: str = "") -> socket.socket:
    """A TCP connection to 127.0.0.1:C{port}, from C{source} if given."""
    return socket.create_connection(
        ("127.0.0.1", port), timeout, (source, 0) if source else None
    )


def receiveExactly(sock: socket.socket, count: int, timeout: float = WAIT) -> bytes:
    """Read C{count} bytes, failing if the peer closes or C{timeout} passes."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    while len(received) < count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(count - len(received))
        if not chunk:
            raise AssertionError(f"closed after {len(received)} of {count} bytes")
        received += chunk
    return bytes(received)


def closedByPeer(sock: socket.socket, timeout: float = WAIT) -> bool:
    """Whether the peer closes (or resets) C{sock} within C{timeout} seconds.

    Anything the peer sent first is read and discarded.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def closedAtOnce(port: int, source: str = "", timeout: float = WAIT) -> bool:
    """Whether the server closes a new connection from C{source} unserved.

    A server that aborts at once may reset the connection before
    C{connect} even returns; that counts as closed too.
    """
    try:
        sock = connect(port, timeout, source)
    except ConnectionResetError:
        return True
    with sock:
        return closedByPeer(sock, timeout)


def transfer(
    port: int,
    payload: bytes,
    midway: Callable[[], object] | None = None,
    timeout: float = WAIT,
    chunk: int = 65536,
) -> bytes:
    """Echo C{payload} through the server, sending and reading interleaved.

    C{midway} is called once, when half the payload has been sent and
    some of the echo has come back (so the server has accepted the
    connection, not merely the kernel completed it in the backlog).  After
    sending everything the write side is shut (half-close) and the echo is
    read until the server closes.  Return everything received.
    """
    deadline = time.monotonic() + timeout
    sock = connect(port, timeout)
    sock.setblocking(False)
    received = bytearray()
    sent = 0
    called = midway is None
    shut = False
    with sock, selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"transfer timed out: sent {sent}, received {len(received)}"
                )
            for _, events in selector.select(min(left, 1.0)):
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(262144)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        return bytes(received)
                    if data:
                        received += data
                if events & selectors.EVENT_WRITE and sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(payload[sent : sent + chunk])
                    if sent == len(payload):
                        selector.modify(sock, selectors.EVENT_READ)
            if not called and sent >= len(payload) // 2 and received:
                called = True
                assert midway is not None
                midway()
            if sent == len(payload) and called and not shut:
                # Shut the write side only once midway has happened, so
                # that midway always falls inside the transfer.
                shut = True
                sock.shutdown(socket.SHUT_WR)


def scrapeMetrics(address: str, timeout: float = WAIT) -> dict[str, float]:
    """Fetch C{/metrics} from a C{tcp:HOST:PORT} address: sample -> value."""
    _, host, port = address.rsplit(":", 2)
    url = f"http://{host}:{port}/metrics"
    # No proxy, whatever the environment says: this must stay on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        text = response.read().decode("utf-8")
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples
