"""End-to-end tests of the errors the README promises as one line.

Each runs the real command: the error is one line on standard error that
says what to do, the exit status is the documented one, and no traceback
or usage text comes before it.  A missing extra is simulated with
L{withoutModules} (its import fails as if it were not installed).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.client.connect import TLS_MISSING
from echotwist.internals.uvloopreactor import MISSING_UVLOOP
from echotwist.test.e2e.harness import (
    TWISTD,
    WAIT,
    childEnvironment,
    closedPort,
    makeCertificate,
    moduleCode,
    runClient,
    runCommand,
    startServer,
    twistdCommand,
    withoutModules,
)


def assertOneLine(
    test: SynchronousTestCase,
    result: subprocess.CompletedProcess[str],
    status: int,
    line: str,
    stdout: str = "",
) -> None:
    """C{result} exited with C{status}, printing exactly C{line} on stderr."""
    test.assertEqual(
        (result.returncode, result.stderr, result.stdout),
        (status, line + "\n", stdout),
    )


class MissingReactorTests(SynchronousTestCase):
    """C{twistd -r uvloop} without uvloop installed."""

    def test_uvloop(self) -> None:
        """One line naming the extra and exit status 2, not twistd's usage text."""
        result = runCommand(
            withoutModules(
                ["uvloop"],
                TWISTD,
                "-n",
                "--pidfile=",
                "-r",
                "uvloop",
                "echo",
                "--port",
                "tcp:0:interface=127.0.0.1",
            )
        )
        assertOneLine(self, result, 2, MISSING_UVLOOP)


# What the pid file error line ends with.
PID_HINT = (
    " (start it in a directory you can write, or give twistd --pidfile=PATH"
    " before echo, or --pidfile= for none)"
)


class PidFileTests(SynchronousTestCase):
    """twistd's pid file cannot be written: one line and exit 1, no traceback."""

    def test_missingDirectory(self) -> None:
        """C{--pidfile} in a directory that is not there."""
        missing = Path(self.mktemp()).resolve() / "twistd.pid"
        result = runCommand(
            twistdCommand("-n", f"--pidfile={missing}", "echo", "--port", "tcp:0")
        )
        assertOneLine(
            self,
            result,
            1,
            f"twistd echo: cannot write twistd's pid file {missing}: there is no"
            f" directory {missing.parent}" + PID_HINT,
        )

    def test_unwritableDirectory(self) -> None:
        """C{twistd -n echo} started in a directory the user cannot write."""
        if os.geteuid() == 0:
            raise SkipTest("root may write in any directory")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(mode=0o555)
        self.addCleanup(directory.chmod, 0o755)
        result = subprocess.run(
            [*twistdCommand("-n", "echo", "--port", "tcp:0")],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=directory,
            env=childEnvironment(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assertOneLine(
            self,
            result,
            1,
            f"twistd echo: cannot write twistd's pid file {directory}/twistd.pid:"
            f" {directory} is not writable" + PID_HINT,
        )


class ClientTLSTests(SynchronousTestCase):
    """C{python -m echotwist.client --tls}: a missing extra, a bad certificate."""

    def test_missingExtra(self) -> None:
        """Without pyOpenSSL, one-shot and ping say to install the tls extra."""
        port = str(closedPort())
        for mode in ([], ["--count", "2"]):
            result = runCommand(
                withoutModules(
                    ["OpenSSL"],
                    moduleCode("echotwist.client"),
                    *mode,
                    "--tls",
                    "127.0.0.1",
                    "hello",
                    port,
                )
            )
            assertOneLine(self, result, 1, f"echotwist.client: error: {TLS_MISSING}")

    def serveWithoutSubjectAltName(self) -> tuple[str, Path]:
        """A TLS server whose certificate names localhost only as commonName.

        Return its port and its certificate.
        """
        key, cert = makeCertificate(Path(self.mktemp()).resolve(), subjectAltName=False)
        server = startServer(
            self,
            listen=[f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
        )
        return str(server.port), cert

    def test_noSubjectAltName(self) -> None:
        """A trusted certificate without subjectAltName is refused in one line.

        (Twisted's own check logged a traceback and let it through.)
        """
        port, cert = self.serveWithoutSubjectAltName()
        trusting = childEnvironment(SSL_CERT_FILE=str(cert))
        result = runClient("--tls", "localhost", "hello", port, env=trusting)
        assertOneLine(
            self,
            result,
            1,
            "echotwist.client: error: the connection failed after 0 of 5 bytes:"
            " TLS certificate verification failed: the server's certificate has"
            " no subjectAltName, which must name localhost (--insecure skips it)",
        )
        ping = runClient(
            "--count", "1", "--tls", "localhost", "hello", port, env=trusting
        )
        self.assertEqual(ping.returncode, 1)
        self.assertIn("has no subjectAltName", ping.stdout)
        self.assertNotIn("Traceback", ping.stdout + ping.stderr)
        self.assertEqual(ping.stderr.count("\n"), 1)

    def test_untrustedWithoutSubjectAltName(self) -> None:
        """An untrusted certificate without subjectAltName: one line, no traceback."""
        port, _ = self.serveWithoutSubjectAltName()
        result = runClient("--tls", "localhost", "hello", port)
        assertOneLine(
            self,
            result,
            1,
            "echotwist.client: error: the connection failed after 0 of 5 bytes:"
            " TLS certificate verification failed (--insecure skips it)",
        )
