"""Support for end-to-end tests: real C{twistd} and client processes.

Servers listen on port 0 of 127.0.0.1; the bound port is read from the
log line C{Listening on tcp:127.0.0.1:PORT}.  Every wait has a timeout, and
every process started is killed at test cleanup.  Nothing here sleeps to
synchronise: waits block on the process's output or exit, with a bound.
"""

from __future__ import annotations

import contextlib
import datetime
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
PROJECT_ROOT = Path(__file__).resolve().parents[3]

# How long any single wait may take before the test fails.
WAIT = 30.0

_LISTENING = re.compile(r"Listening on (?P<address>\S+)")


def childEnvironment(**extra: str) -> dict[str, str]:
    """The environment for a child process that runs this source tree."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    # Children run in Python's UTF-8 mode whatever the locale (arguments
    # and output are UTF-8), so a test can compare non-ASCII text exactly.
    env["PYTHONUTF8"] = "1"
    env.update(extra)
    return env


# Python code that runs twistd with the command line's arguments.
TWISTD = "from twisted.scripts.twistd import run; run()"


def twistdCommand(*arguments: str) -> list[str]:
    """The command line that runs C{twistd} with this interpreter."""
    return [
        sys.executable,
        "-c",
        TWISTD,
        *arguments,
    ]


def withoutModules(modules: Sequence[str], code: str, *arguments: str) -> list[str]:
    """The command running C{code} with this interpreter as if C{modules}
    were not installed: importing any of them raises C{ModuleNotFoundError}.

    For the paths taken when an optional extra is missing, without a second
    environment: C{code} runs C{twistd} or C{runpy.run_module}.
    """
    hide = f"import sys; sys.modules.update(dict.fromkeys({list(modules)!r}))"
    return [sys.executable, "-c", f"{hide}\n{code}", *arguments]


def moduleCode(module: str) -> str:
    """The code of L{withoutModules} that runs C{python -m MODULE}."""
    return f"import runpy; runpy.run_module({module!r}, run_name='__main__')"


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

    def waitClosed(self, timeout: float = WAIT) -> str:
        """Wait for the end of the output; return all of it."""
        with self._condition:
            if not self._condition.wait_for(lambda: self.closed, timeout):
                raise AssertionError(f"output still open after {timeout} s")
            return "\n".join(self.lines)

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
        self.udpPorts: list[int] = []

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
        self.udpPorts = [
            int(address.rsplit(":", 1)[1])
            for address in self.addresses
            if address.startswith("udp:")
        ]

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
        return self._status("VmRSS")

    def peakRssKiB(self) -> int:
        """The largest resident set size the server has had, in KiB (Linux)."""
        return self._status("VmHWM")

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for the server")


def startServer(
    test: SynchronousTestCase,
    *arguments: str,
    listen: Sequence[str] = ("tcp:0:interface=127.0.0.1",),
    twistdOptions: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wait: bool = True,
    udp: Sequence[str] = (),
    launcher: Sequence[str] = (),
) -> ServerProcess:
    """Start C{twistd -n echo} listening on C{listen}, killed at cleanup.

    C{udp} values are passed as C{--udp} options.  With C{wait}, return
    once every listener (stream and UDP) has logged its address.
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
            *(a for endpoint in udp for a in ("--udp", endpoint)),
            *arguments,
        ),
    ]
    server = startProcess(test, command, env=env)
    if wait:
        server.waitListening(len(listen) + len(udp))
    return server


def startProcess(
    test: SynchronousTestCase,
    command: Sequence[str],
    env: dict[str, str] | None = None,
    passFds: Sequence[int] = (),
    newSession: bool = False,
) -> ServerProcess:
    """Start C{command} (a server), its output read as it comes, killed at cleanup.

    C{passFds} are file descriptors the child inherits (at their numbers).
    With C{newSession} the command runs in a process group of its own, and
    cleanup kills that whole group: for launchers (such as
    C{systemd-socket-activate}) that fork the server they run.
    """
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=str(PROJECT_ROOT),
        env=env if env is not None else childEnvironment(),
        pass_fds=tuple(passFds),
        start_new_session=newSession,
    )
    assert process.stdout is not None
    server = ServerProcess(process, OutputReader(cast(TextIO, process.stdout)))
    test.addCleanup(_kill, process)
    if newSession:
        # Cleanups run last-added first: the group goes before the wait.
        test.addCleanup(_killGroup, process.pid)
    return server


def _killGroup(groupId: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(groupId, signal.SIGKILL)


def makeCertificate(
    directory: Path, hostname: str = "localhost", subjectAltName: bool = True
) -> tuple[Path, Path]:
    """Write a fresh self-signed key and certificate for C{hostname}.

    Return the paths of the PEM key and certificate in C{directory}; the
    certificate is valid for C{hostname} and 127.0.0.1, for one day.
    Without C{subjectAltName} it names C{hostname} only as its commonName,
    which names no host for a client that checks (RFC 6125).
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    )
    if subjectAltName:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    certificate = builder.sign(key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    keyPath = directory / "key.pem"
    certPath = directory / "cert.pem"
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certPath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(WAIT)
    if process.stdout is not None:
        process.stdout.close()


def runCommand(
    command: Sequence[str], timeout: float = WAIT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run C{command} to completion from the project root; capture its output.

    A command still running after C{timeout} seconds is killed and the
    wait raises L{subprocess.TimeoutExpired}.
    """
    return subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        cwd=str(PROJECT_ROOT),
        env=env if env is not None else childEnvironment(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def runClient(
    *arguments: str, timeout: float = WAIT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run C{python -m echotwist.client ARGUMENTS} to completion."""
    return runModule("echotwist.client", *arguments, timeout=timeout, env=env)


def runServer(
    *arguments: str, timeout: float = WAIT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run C{twistd -n echo ARGUMENTS} to completion, its two outputs apart.

    For a server that is expected to refuse to start.
    """
    return runCommand(
        twistdCommand("-n", "--pidfile=", "echo", *arguments), timeout, env
    )


def listeningSocket(
    test: SynchronousTestCase, host: str = "127.0.0.1", backlog: int = 8
) -> socket.socket:
    """A TCP socket listening on port 0 of C{host} that never accepts.

    The kernel still completes connections to it (up to C{backlog}), so a
    client connects and sends, and nothing ever answers.  Closed at cleanup.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    test.addCleanup(sock.close)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


def closedPort(host: str = "127.0.0.1") -> int:
    """A port on C{host} that was free a moment ago and has no listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def receiveExactly(sock: socket.socket, count: int, timeout: float = WAIT) -> bytes:
    """Read from C{sock} until C{count} bytes have come or the peer closes.

    Return what arrived (short only if the peer closed first); fail if
    C{timeout} seconds pass first.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    while len(received) < count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(count - len(received))
        except TimeoutError:
            raise AssertionError(
                f"{len(received)} of {count} bytes within {timeout} s"
            ) from None
        if not chunk:
            break
        received += chunk
    return bytes(received)


class OneConnectionServer:
    """A TCP server on 127.0.0.1 that handles one connection in a thread.

    C{handler} gets the accepted socket (blocking, with a timeout of
    L{WAIT} seconds) and decides what the peer sees; the socket is closed
    when it returns.  It stands in for a misbehaving echo server.  At
    cleanup the thread is joined and any exception from it is raised.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        handler: Callable[[socket.socket], object],
        timeout: float = WAIT,
    ) -> None:
        self._listening = listeningSocket(test, backlog=1)
        self._listening.settimeout(timeout)
        self.port: int = self._listening.getsockname()[1]
        self._handler = handler
        self._timeout = timeout
        self._errors: list[BaseException] = []
        self._finishing = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        test.addCleanup(self._finish)

    def _serve(self) -> None:
        try:
            connection, _ = self._listening.accept()
        except OSError as e:
            # Woken by _finish when no client came: the test has failed
            # already, or never connected on purpose.
            if not self._finishing:
                self._errors.append(e)
            return
        try:
            with connection:
                connection.settimeout(self._timeout)
                self._handler(connection)
        except BaseException as e:  # Reported by _finish, in the test thread.
            self._errors.append(e)

    def _finish(self) -> None:
        # Shutting the listening socket down wakes a thread still waiting
        # in accept(), so a client that never came costs no timeout.
        self._finishing = True
        with contextlib.suppress(OSError):
            self._listening.shutdown(socket.SHUT_RDWR)
        self._thread.join(self._timeout)
        if self._thread.is_alive():
            raise AssertionError("the one-connection server did not finish")
        if self._errors:
            raise self._errors[0]


def pushWithoutReading(
    sock: socket.socket, limit: int, stall: float = 1.0, timeout: float = WAIT
) -> int:
    """Send up to C{limit} bytes on C{sock}, never reading; return the count.

    Sending stops once C{sock} has not been writable for C{stall} seconds
    (the peer stopped reading and every buffer on the way is full), after
    C{limit} bytes, or after C{timeout} seconds in all.  The socket is left
    non-blocking and open.
    """
    chunk = memoryview(bytes(range(256)) * 4096)
    sent = 0
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        while sent < limit and time.monotonic() < deadline:
            if not selector.select(stall):
                break
            try:
                sent += sock.send(chunk[: min(len(chunk), limit - sent)])
            except BlockingIOError:
                continue
    return sent


class _Exchange:
    """The state of one socket in L{RawClients.exchange}."""

    def __init__(self, sock: socket.socket, payload: bytes) -> None:
        self.sock = sock
        self.payload = payload
        self.offset = 0
        self.received = bytearray()
        self.shut = False
        self.ended = False


class RawClients:
    """Plain sockets connected to one server, driven together by a selector.

    All of them are connected before an L{exchange} starts; one that keeps
    them open (no half-close) cannot finish against a server that serves
    one client at a time.  Closed at cleanup.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        address: tuple[str, int],
        count: int = 0,
        timeout: float = WAIT,
    ) -> None:
        self._test = test
        self._address = address
        self._timeout = timeout
        self.sockets: list[socket.socket] = []
        self.connect(count)

    def connect(self, count: int) -> None:
        """Connect C{count} more sockets, one after the other.

        Connections the server has not accepted yet wait in its listen
        queue (50 deep for Twisted); past that the kernel drops the
        handshake and the client retries a second later.  To connect
        many quickly, connect them in batches smaller than the queue and
        wait for the server to report each batch in between.
        """
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            self._test.addCleanup(sock.close)
            sock.settimeout(self._timeout)
            sock.connect(self._address)
            sock.setblocking(False)
            self.sockets.append(sock)

    def exchange(
        self, payloads: Sequence[bytes], halfClose: bool, timeout: float = WAIT
    ) -> list[bytes]:
        """Send C{payloads[i]} on socket C{i}, all at once; return what came back.

        A socket reads whenever it cannot send, so flow control on the
        server cannot deadlock the exchange.  Without C{halfClose} a
        socket reads until as many bytes as it sent are back, and stays
        open.  With C{halfClose} it shuts its sending side once its payload
        is out and reads until the server closes.  A socket the server
        closes early ends with what it had.  Raise L{AssertionError} when
        the exchange is not over within C{timeout} seconds.
        """
        states = [_Exchange(s, p) for s, p in zip(self.sockets, payloads, strict=True)]
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            pending = 0
            for state in states:
                if self._progress(state, selector, halfClose, registered=False):
                    pending += 1
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{pending} of {len(states)} sockets unfinished after"
                        f" {timeout} s"
                    )
                for key, events in selector.select(remaining):
                    state = cast(_Exchange, key.data)
                    # Sending comes first; reading waits until the socket
                    # cannot take more.  So when a socket shuts its sending
                    # side, every buffer between it and the server is full
                    # and the server still holds unsent echo: the case where
                    # a server that closes on end-of-input loses data.
                    if events & selectors.EVENT_WRITE:
                        self._send(state)
                    elif events & selectors.EVENT_READ:
                        self._receive(state)
                    if not self._progress(state, selector, halfClose, registered=True):
                        pending -= 1
        return [bytes(state.received) for state in states]

    @staticmethod
    def _send(state: _Exchange) -> None:
        view = memoryview(state.payload)[state.offset : state.offset + 2**20]
        # A selector can report a socket writable that then is not.
        with contextlib.suppress(BlockingIOError):
            state.offset += state.sock.send(view)

    @staticmethod
    def _receive(state: _Exchange) -> None:
        try:
            data = state.sock.recv(2**20)
        except BlockingIOError:
            return
        if data:
            state.received += data
        else:
            state.ended = True

    @staticmethod
    def _progress(
        state: _Exchange,
        selector: selectors.BaseSelector,
        halfClose: bool,
        registered: bool,
    ) -> bool:
        """Update what C{state} waits for; return whether it is still going."""
        sending = state.offset < len(state.payload)
        if halfClose and not sending and not state.shut:
            state.sock.shutdown(socket.SHUT_WR)
            state.shut = True
        done = state.ended or (
            not halfClose and len(state.received) >= len(state.payload)
        )
        if done:
            if registered:
                selector.unregister(state.sock)
            return False
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sending else 0)
        if registered:
            selector.modify(state.sock, events, state)
        else:
            selector.register(state.sock, events, state)
        return True


def writeSelfSignedPEM(directory: Path, name: str = "localhost") -> Path:
    """Write a key and a self-signed certificate for C{name} into C{directory}.

    C{directory/NAME.pem} holds both, as Twisted's C{tls:PATH} server
    endpoint reads them (it reads only C{.pem} files); the certificate alone
    goes to C{NAME.crt}, for a client to trust.  Return the C{.crt} path.
    """
    key, certificate = makeCertificate(directory / "parts", name)
    (directory / f"{name}.pem").write_bytes(key.read_bytes() + certificate.read_bytes())
    trusted = directory / f"{name}.crt"
    trusted.write_bytes(certificate.read_bytes())
    return trusted


def withFileLimit(count: int, hard: int | None = None) -> list[str]:
    """A launcher prefix that runs its command with C{RLIMIT_NOFILE} = C{count}
    (soft), and C{hard} (or C{count}) as the hard limit.

    A small Python program sets the limit on itself and execs the command,
    so the limit is inherited without C{preexec_fn}.
    """
    return [
        sys.executable,
        "-c",
        "import os, resource, sys; n, h = int(sys.argv[1]), int(sys.argv[2]);"
        " resource.setrlimit(resource.RLIMIT_NOFILE, (n, h));"
        " os.execv(sys.argv[3], sys.argv[3:])",
        str(count),
        str(count if hard is None else hard),
    ]


def connect(port: int, timeout: float = WAIT, source: str = "") -> socket.socket:
    """A TCP connection to 127.0.0.1:C{port}, from C{source} if given."""
    return socket.create_connection(
        ("127.0.0.1", port), timeout, (source, 0) if source else None
    )


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


def checkDrainDuringTransfer(
    test: SynchronousTestCase, server: ServerProcess, port: int, pids: Sequence[int]
) -> None:
    """SIGTERM a C{--workers 2 --shutdown-timeout=20} server mid-transfer.

    Check that a worker drains the 4 MiB transfer intact while both stop
    accepting, that every process exits 0 with no traceback and no worker
    exit reported, and that no worker (C{pids}) is left.
    """
    payload = bytes(range(256)) * 16384

    def terminate() -> None:
        server.signal(signal.SIGTERM)
        server.output.waitFor(r"\[worker\d\] Draining 1 connections for up to 20 s")
        # Both workers stop accepting while the transfer goes on.
        server.output.waitForAll(
            rf"\[worker\d\] Stopped listening on tcp:127\.0\.0\.1:{port}", 2
        )
        with test.assertRaises(ConnectionRefusedError):
            connect(port).close()

    echoed = transfer(port, payload, midway=terminate)
    test.assertEqual(len(echoed), len(payload))
    test.assertTrue(echoed == payload, "echoed bytes differ")
    test.assertEqual(server.wait(), 0)
    output = server.output.waitClosed()
    test.assertNotIn("Traceback", output)
    test.assertNotIn("exited", output)
    for pid in pids:
        test.assertFalse(Path(f"/proc/{pid}").exists(), f"worker {pid} left")


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


def runModule(
    module: str,
    *arguments: str,
    timeout: float = WAIT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run C{python -m MODULE ARGUMENTS} to completion (e.g. the bench)."""
    return runCommand([sys.executable, "-m", module, *arguments], timeout, env)
