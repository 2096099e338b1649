"""End-to-end tests of the TLS, UNIX and systemd listeners of a real twistd."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.test.e2e.harness import (
    WAIT,
    childEnvironment,
    makeCertificate,
    runClient,
    startProcess,
    startServer,
    twistdCommand,
)

# Run as "python -c WRAPPER FD ARGV...": move the inherited listening
# socket FD to descriptor 3, where the systemd protocol puts the first
# one, name this process in LISTEN_PID (the exec keeps the pid, so twistd
# sees its own), and exec ARGV with this interpreter.  Twisted ignores
# inherited descriptors unless LISTEN_FDNAMES names each one, as systemd
# 227 and newer always do.
SYSTEMD_WRAPPER = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = "echotwist"
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def echoOver(sock: socket.socket, data: bytes) -> bytes:
    """Send C{data} on C{sock} while reading; return what came back.

    Sending happens in a thread so that a large C{data} cannot deadlock
    against the server's flow control; reading stops after C{len(data)}
    bytes or at end of stream.
    """
    sock.settimeout(WAIT)
    sender = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    sender.start()
    received = bytearray()
    while len(received) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    sender.join(WAIT)
    return bytes(received)


def shortTemporaryDirectory(test: SynchronousTestCase) -> Path:
    """A fresh directory with a short path (UNIX socket paths are short)."""
    directory = Path(tempfile.mkdtemp(prefix="echotwist-"))
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


def echoInSteps(sock: socket.socket, data: bytes, step: int = 16384) -> bytes:
    """Send C{data} on C{sock} C{step} bytes at a time, reading each echo back.

    For TLS sockets: one C{ssl.SSLSocket} must not be read and written from
    two threads at once (as L{echoOver} does), and C{step} bytes in flight
    always fit the socket buffers, so no thread is needed.
    """
    sock.settimeout(WAIT)
    received = bytearray()
    for start in range(0, len(data), step):
        chunk = data[start : start + step]
        sock.sendall(chunk)
        expected = start + len(chunk)
        while len(received) < expected:
            piece = sock.recv(65536)
            if not piece:
                return bytes(received)
            received += piece
    return bytes(received)


class TLSTests(SynchronousTestCase):
    """C{--listen ssl:...} serves TLS clients (C{tls:PATH} is in test_e2e)."""

    def echoOverTLS(self, kind: str) -> None:
        """Start a C{kind} listener with a fresh certificate and echo 256 KiB."""
        key, cert = makeCertificate(Path(self.mktemp()).resolve())
        server = startServer(
            self,
            listen=[f"{kind}:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
        )
        context = ssl.create_default_context(cafile=str(cert))
        data = os.urandom(256 * 1024)
        with (
            socket.create_connection(("127.0.0.1", server.port), WAIT) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            self.assertEqual(echoInSteps(tls, data), data)
            peer = tls.getpeercert()
        assert peer is not None
        self.assertIn((("commonName", "localhost"),), peer["subject"])
        server.output.waitFor(r"Handling client 127\.0\.0\.1/\d+")

    def test_ssl(self) -> None:
        """An C{ssl:} listener echoes over TLS with the certificate it was given."""
        self.echoOverTLS("ssl")

    def test_plainClientGetsNoEcho(self) -> None:
        """A client that does not speak TLS never gets its bytes back in clear."""
        key, cert = makeCertificate(Path(self.mktemp()).resolve())
        server = startServer(
            self,
            listen=[f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
        )
        with socket.create_connection(("127.0.0.1", server.port), WAIT) as sock:
            sock.settimeout(WAIT)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            received = bytearray()
            # The server answers garbage with a TLS alert and closes.
            while chunk := sock.recv(4096):
                received += chunk
        self.assertNotIn(b"GET /", bytes(received))


class UNIXTests(SynchronousTestCase):
    """C{--listen unix:/path} serves clients on a UNIX socket."""

    def test_echoAndHalfClose(self) -> None:
        """Bytes sent on the UNIX socket come back, then end-of-stream."""
        path = shortTemporaryDirectory(self) / "echo.sock"
        server = startServer(self, listen=[f"unix:{path}"])
        self.assertEqual(server.addresses, [f"unix:{path}"])
        data = os.urandom(300 * 1024)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            self.assertEqual(echoOver(sock, data), data)
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(sock.recv(1), b"")
        server.output.waitFor(r"Closed client .*: 307200 bytes echoed")

    def test_staleSocketReplaced(self) -> None:
        """A socket file left by a killed server does not stop the next one."""
        path = shortTemporaryDirectory(self) / "echo.sock"
        first = startServer(self, listen=[f"unix:{path}"])
        first.process.kill()
        first.wait()
        self.assertTrue(path.exists())
        second = startServer(self, listen=[f"unix:{path}"])
        self.assertEqual(second.addresses, [f"unix:{path}"])
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            self.assertEqual(echoOver(sock, b"again"), b"again")

    def test_pathInUse(self) -> None:
        """A second server on a running server's path exits 1 with one line."""
        path = shortTemporaryDirectory(self) / "echo.sock"
        startServer(self, listen=[f"unix:{path}"])
        second = startServer(self, listen=[f"unix:{path}"], wait=False)
        self.assertEqual(second.wait(), 1)
        text = second.output.waitClosed()
        self.assertIn(f"twistd echo: cannot listen on unix:{path}:", text)
        self.assertNotIn("Traceback", text)


class SystemdTests(SynchronousTestCase):
    """C{--listen systemd:domain=INET:index=0} serves an inherited socket."""

    def test_listenFds(self) -> None:
        """A socket passed as descriptor 3 with LISTEN_FDS/LISTEN_PID is served."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        command = [
            sys.executable,
            "-c",
            SYSTEMD_WRAPPER,
            str(listener.fileno()),
            *twistdCommand(
                "-n", "--pidfile=", "echo", "--listen", "systemd:domain=INET:index=0"
            )[1:],
        ]
        try:
            server = startProcess(self, command, passFds=[listener.fileno()])
        finally:
            # Only the server holds the socket now: the echo is its work.
            listener.close()
        server.waitListening()
        self.assertEqual(server.addresses, [f"tcp:127.0.0.1:{port}"])
        result = runClient("127.0.0.1", "activated", str(port))
        self.assertEqual(
            (result.returncode, result.stdout), (0, "Received: activated\n")
        )

    def test_noSocketPassed(self) -> None:
        """Without LISTEN_FDS the systemd listener is a one-line usage error."""
        server = startServer(
            self,
            listen=["systemd:domain=INET:index=0"],
            env=childEnvironment(LISTEN_FDS="", LISTEN_PID=""),
            wait=False,
        )
        self.assertEqual(server.wait(), 2)
        text = server.output.waitClosed()
        self.assertIn("no listening socket was passed by systemd", text)
        self.assertNotIn("Traceback", text)

    def test_systemdSocketActivate(self) -> None:
        """Under C{systemd-socket-activate}, the first client starts the server."""
        launcher = shutil.which("systemd-socket-activate")
        if launcher is None:
            raise SkipTest("systemd-socket-activate not found (Debian package systemd)")
        environment = childEnvironment()
        for _attempt in range(5):
            # The launcher cannot bind port 0, so ask the kernel for a free
            # port and hand it over; another process may take it in
            # between, hence the few attempts.
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            command = [
                launcher,
                "--listen",
                f"127.0.0.1:{port}",
                # Without a name the launcher sets no LISTEN_FDNAMES, and
                # Twisted then ignores the descriptor (systemd always names).
                "--fdname=echotwist",
                *(
                    f"--setenv={n}={environment[n]}"
                    for n in ("PYTHONPATH", "PYTHONUNBUFFERED")
                ),
                *twistdCommand(
                    "-n",
                    "--pidfile=",
                    "echo",
                    "--listen",
                    "systemd:domain=INET:index=0",
                ),
            ]
            launched = startProcess(self, command, env=environment, newSession=True)
            match = launched.output.waitFor(
                r"Listening on 127\.0\.0\.1:\d+ as 3|Failed"
            )
            if not match.group(0).startswith("Failed"):
                break
        else:
            self.fail(
                f"systemd-socket-activate could not listen:\n{launched.output.text()}"
            )
        # The connection starts twistd, so the client waits for its start-up
        # too: give it the tests' bound rather than its own 10 s default.
        result = runClient("127.0.0.1", "on demand", str(port), "--timeout", str(WAIT))
        self.assertEqual(
            (result.returncode, result.stdout), (0, "Received: on demand\n")
        )
        launched.output.waitFor(rf"Listening on tcp:127\.0\.0\.1:{port}\b")
