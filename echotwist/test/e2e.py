"""Support for end-to-end tests: real C{twistd} and client processes.

Servers listen on port 0 of 127.0.0.1; the bound port is read from the
log line C{Listening on tcp:127.0.0.1:PORT}.  Every wait has a timeout, and
every process started is killed at test cleanup.  Nothing here sleeps to
synchronise: waits block on the process's output or exit, with a bound.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
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
) -> ServerProcess:
    """Start C{twistd -n echo} listening on C{listen}, killed at cleanup.

    With C{wait}, return once every listener has logged its address.
    """
    command = twistdCommand(
        "-n",
        "--pidfile=",
        *twistdOptions,
        "echo",
        *(a for endpoint in listen for a in ("--listen", endpoint)),
        *arguments,
    )
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


def runModule(
    module: str,
    *arguments: str,
    timeout: float = WAIT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run C{python -m MODULE ARGUMENTS} to completion (e.g. the bench)."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(PROJECT_ROOT),
        env=env if env is not None else childEnvironment(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def makeSelfSignedCertificate(directory: Path, name: str = "localhost") -> Path:
    """Write a self-signed key and certificate for C{name} to one PEM file.

    Return its path, usable as both C{privateKey=} and C{certKey=} of an
    C{ssl:} server endpoint.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "server.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + certificate.public_bytes(serialization.Encoding.PEM)
    )
    return path
