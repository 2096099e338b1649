"""Measure UDP echo loops started by forged datagrams (issue 12), by hand.

Starts real C{twistd -n echo} servers on 127.0.0.1 (UDP port 0), sends
datagrams forged with a raw socket (root only: C{IPPROTO_RAW} writes the
IP header, source address and port included), waits, and reads how many
datagrams each server echoed from its C{/metrics} (bytes echoed over UDP
divided by the payload's length), with the drops by reason:

  sudo .venv/bin/python benchmarks/udploops.py [--tree DIR] [--seconds 2]

C{--tree} runs the servers from another source tree (a git worktree of an
older commit, say), whose C{twisted/plugins} and C{echotwist} come first
on C{PYTHONPATH}.  Scenarios: a datagram forged with the server's own
address; two servers set on each other (source B, destination A) with one
datagram, then with two different ones; one server set on a plain,
unguarded reflector (a thread here).  Needs the C{metrics} extra.
"""

from __future__ import annotations

import argparse
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TextIO, cast

if not __package__:
    # Run as a script: import the source tree's benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.netfaults import CommandFailed
from benchmarks.processoutput import OutputReader

WAIT = 30.0
LOOPBACK = "127.0.0.1"


class Server:
    """One C{twistd -n echo} with a UDP port and metrics on 127.0.0.1."""

    def __init__(self, tree: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "echo",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--udp",
                "udp:0:interface=127.0.0.1",
                "--metrics",
                "tcp:0:interface=127.0.0.1",
            ],
            cwd=tree,
            env={"PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1", "PATH": ""},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        output = OutputReader(cast(TextIO, self.process.stdout))
        try:
            self.udpPort = int(
                output.waitFor(r"Listening on udp:127\.0\.0\.1:(\d+)", WAIT).group(1)
            )
            self.metrics = output.waitFor(r"Metrics on (tcp:\S+)", WAIT).group(1)
        except CommandFailed as e:
            self.stop()
            raise SystemExit(f"server did not start: {e}") from None

    @property
    def address(self) -> tuple[str, int]:
        """Where the server's UDP port listens."""
        return (LOOPBACK, self.udpPort)

    def samples(self) -> dict[str, float]:
        """The server's metrics: sample name (with labels) -> value."""
        _, host, port = self.metrics.rsplit(":", 2)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{host}:{port}/metrics", timeout=WAIT) as reply:
            text = reply.read().decode("utf-8")
        return {
            name: float(value)
            for name, value in (
                line.rsplit(" ", 1)
                for line in text.splitlines()
                if line and not line.startswith("#")
            )
        }

    def echoed(self, size: int) -> int:
        """How many datagrams of C{size} bytes the server has echoed over UDP."""
        return int(
            self.samples().get('echotwist_echoed_bytes_total{transport="udp"}', 0)
            // size
        )

    def dropped(self) -> dict[str, int]:
        """The server's UDP drops by reason, those above 0."""
        found = {}
        for name, value in self.samples().items():
            match = re.fullmatch(r'echotwist_udp_dropped_total\{reason="(.+)"\}', name)
            if match and value:
                found[match.group(1)] = int(value)
        return found

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(WAIT)


class Reflector:
    """A plain UDP echo with no guard at all, in a thread, counting replies."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.replies = 0
        self.running = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while self.running:
            try:
                datagram, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.sock.sendto(datagram, source)
            self.replies += 1

    def stop(self) -> None:
        """Stop answering."""
        self.running = False


def forge(source: tuple[str, int], destination: tuple[str, int], data: bytes) -> None:
    """Send one UDP datagram with a forged IPv4 source address and port."""
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(data), 0) + data
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(source[0]),
        socket.inet_aton(destination[0]),
    )
    # The kernel fills in the IP checksum (and an id); a UDP checksum of 0
    # means none over IPv4.
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (destination[0], 0))


@contextmanager
def servers(tree: Path, count: int) -> Iterator[list[Server]]:
    """C{count} servers from C{tree}, stopped afterwards."""
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            server = Server(tree)
            stack.callback(server.stop)
            started.append(server)
        yield started


def report(name: str, counts: str, dropped: str) -> None:
    """Print one scenario's line."""
    print(f"{name:<44} {counts:<34} {dropped}")


def main() -> None:
    """Run every scenario and print the replies counted after the wait."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).parents[1])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    tree: Path = args.tree.resolve()
    seconds: float = args.seconds
    size = 16
    one = b"forged datagram1"
    two = b"forged datagram2"
    print(f"tree {tree}, replies counted {seconds:g} s after the forged datagrams")

    with servers(tree, 1) as (a,):
        forge(a.address, a.address, one)
        time.sleep(seconds)
        report(
            "forged from A's own address to A", f"A {a.echoed(size)}", str(a.dropped())
        )

    for payloads in ([one], [one, two]):
        with servers(tree, 2) as (a, b):
            for payload in payloads:
                forge(b.address, a.address, payload)
            time.sleep(seconds)
            echoedA, echoedB = a.echoed(size), b.echoed(size)
            report(
                f"{len(payloads)} forged B -> A (two servers)",
                f"A {echoedA} + B {echoedB} = {echoedA + echoedB}",
                f"A {a.dropped()} B {b.dropped()}",
            )

    with servers(tree, 1) as (a,):
        reflector = Reflector()
        forge(reflector.address, a.address, one)
        time.sleep(seconds)
        reflector.stop()
        echoedA = a.echoed(size)
        report(
            "1 forged R -> A (R: an unguarded reflector)",
            f"A {echoedA} + R {reflector.replies} = {echoedA + reflector.replies}",
            f"A {a.dropped()}",
        )


if __name__ == "__main__":
    main()
