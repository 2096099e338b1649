"""The shipped HAProxy configuration: valid, an echo health check, PROXY
protocol to the hosts, and limits that fit echotwist's.

(The e2e test C{echotwist.test.e2e.test_proxyprotocol} runs it in front of
three servers; C{make cluster} does so across network namespaces.)
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.server import limits
from echotwist.tap import Options
from echotwist.test.e2e.harness import PROJECT_ROOT, WAIT

CONFIG = PROJECT_ROOT / "contrib" / "haproxy" / "echotwist.cfg"


def seconds(text: str) -> float:
    """An HAProxy time (C{310s}, C{250ms}, C{1m}) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", text)
    assert match is not None, text
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match[2] or "ms"]
    return int(match[1]) * unit


class HAProxyConfigTests(SynchronousTestCase):
    """contrib/haproxy/echotwist.cfg."""

    def setUp(self) -> None:
        """Read the configuration's lines, comments apart."""
        if not CONFIG.exists():
            raise SkipTest(f"{CONFIG} not found: run the tests from a source tree")
        text = CONFIG.read_text()
        self.comments = [line for line in text.splitlines() if line.startswith("#")]
        self.lines = [
            line.split("#", 1)[0].split()
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]

    def directive(self, *words: str) -> list[list[str]]:
        """Every line that starts with C{words}."""
        return [line for line in self.lines if line[: len(words)] == list(words)]

    def test_valid(self) -> None:
        """HAProxy's own check (haproxy -c) accepts it; skipped without haproxy."""
        if shutil.which("haproxy") is None:
            raise SkipTest("haproxy is not installed (apt-get install haproxy)")
        done = subprocess.run(
            ["haproxy", "-c", "-f", str(CONFIG)],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_echoCheck(self) -> None:
        """The check connects as the servers do, sends a word and expects it back."""
        self.assertEqual(self.directive("mode"), [["mode", "tcp"]])
        self.assertEqual(
            self.directive("tcp-check", "connect"),
            [["tcp-check", "connect", "default", "linger"]],
        )
        [[*_, word]] = self.directive("tcp-check", "send")
        self.assertEqual(
            self.directive("tcp-check", "expect"),
            [["tcp-check", "expect", "string", word]],
        )

    def test_proxyProtocolToEveryServer(self) -> None:
        """Every server gets PROXY v2 headers, on its traffic and its checks."""
        [defaults] = self.directive("default-server")
        for word in ("check", "check-send-proxy", "send-proxy-v2"):
            self.assertIn(word, defaults)
        servers = self.directive("server")
        self.assertEqual(len(servers), 3)
        for line in servers:
            self.assertEqual(len(line), 3, line)

    def test_limitsFit(self) -> None:
        """The host command in the comments parses, leaves room for checks
        above the servers' maxconn, and HAProxy's timeouts outlast the
        default idle timeout.
        """
        [command] = [c for c in self.comments if "twistd" in c]
        arguments = shlex.split(command.lstrip("# "))
        options = Options(reactor=MemoryReactorClock())
        options.parseOptions(arguments[arguments.index("echo") + 1 :])
        self.assertTrue(options["endpoints"][0][0].startswith("haproxy:tcp:7008"))
        [defaults] = self.directive("default-server")
        perServer = int(defaults[defaults.index("maxconn") + 1])
        self.assertGreater(options["max-connections"], perServer)
        [[_, frontend]] = self.directive("maxconn")
        self.assertEqual(int(frontend), perServer * len(self.directive("server")))
        for side in ("client", "server"):
            [[*_, value]] = self.directive("timeout", side)
            self.assertGreater(seconds(value), limits.DEFAULT_IDLE_TIMEOUT)
