"""The shipped systemd units agree with each other and with systemd."""

from __future__ import annotations

import configparser
import ipaddress
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.test.e2e.harness import PROJECT_ROOT, WAIT

UNITS = PROJECT_ROOT / "contrib" / "systemd"


def readUnit(name: str) -> configparser.ConfigParser:
    """Parse the unit file C{name} (keys keep their case; repeats allowed)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


class UnitTests(SynchronousTestCase):
    """C{contrib/systemd/echotwist.socket} and C{.service} fit together."""

    def setUp(self) -> None:
        """Skip when run from an installed copy, which has no contrib/."""
        if not UNITS.is_dir():
            raise SkipTest(f"{UNITS} not found: run the tests from a source tree")

    def test_serviceListensOnTheSocket(self) -> None:
        """The service runs twistd in the foreground on systemd socket 0."""
        command = shlex.split(readUnit("echotwist.service")["Service"]["ExecStart"])
        self.assertTrue(command[0].endswith("/twistd"), command)
        echo = command.index("echo")
        self.assertIn("-n", command[1:echo])
        self.assertIn("--pidfile=", command[1:echo])
        self.assertEqual(
            command[echo + 1 :], ["--listen", "systemd:domain=INET:index=0"]
        )

    def test_socketMatchesTheDomain(self) -> None:
        """The socket is one named IPv4 stream socket, as domain=INET expects."""
        socketSection = readUnit("echotwist.socket")["Socket"]
        host, port = socketSection["ListenStream"].rsplit(":", 1)
        self.assertIsInstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
        self.assertTrue(0 < int(port) < 65536)
        self.assertEqual(socketSection["Accept"], "no")
        self.assertTrue(socketSection["FileDescriptorName"])

    def test_hardened(self) -> None:
        """The service runs unprivileged, without capabilities, read-only."""
        service = readUnit("echotwist.service")["Service"]
        self.assertEqual(
            {k: service.get(k) for k in ("DynamicUser", "NoNewPrivileges")},
            {"DynamicUser": "yes", "NoNewPrivileges": "yes"},
        )
        self.assertEqual(service["CapabilityBoundingSet"], "")
        self.assertEqual(service["ProtectSystem"], "strict")

    def test_workersServiceReloads(self) -> None:
        """The workers' service runs --workers auto and reloads with SIGHUP."""
        service = readUnit("echotwist-workers.service")["Service"]
        command = shlex.split(service["ExecStart"])
        echo = command.index("echo")
        self.assertIn("-n", command[1:echo])
        self.assertIn("--pidfile=", command[1:echo])
        self.assertEqual(command[echo + 1 : echo + 3], ["--workers", "auto"])
        self.assertEqual(shlex.split(service["ExecReload"])[1:], ["-HUP", "$MAINPID"])
        self.assertEqual(service["Restart"], "on-failure")
        # The one capability: binding a port below 1024.
        self.assertEqual(service["CapabilityBoundingSet"], "CAP_NET_BIND_SERVICE")
        self.assertEqual(service["ProtectSystem"], "strict")

    def test_systemdAcceptsTheUnits(self) -> None:
        """C{systemd-analyze verify} reports nothing about any unit."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze not found (Debian package systemd)")
        twistd = Path(sys.executable).parent / "twistd"
        if not twistd.exists():
            raise SkipTest(f"no twistd next to {sys.executable} for ExecStart")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        # verify checks that ExecStart's program exists: point it at ours.
        services = ("echotwist.service", "echotwist-workers.service")
        for name in services:
            service = (UNITS / name).read_text()
            (directory / name).write_text(
                service.replace("/usr/local/bin/twistd", str(twistd))
            )
        shutil.copy(UNITS / "echotwist.socket", directory)
        result = subprocess.run(
            [analyze, "verify", "echotwist.socket", *services],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))
