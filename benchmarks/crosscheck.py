"""Cross-check the bench against sockperf, a tool nobody here wrote.

  python benchmarks/crosscheck.py [--seconds 10] [--rounds 3] [--size 64]

sockperf cannot measure an RFC 862 server as it is: its client marks each
message as the client's (bit 0 of the 16-bit flags at byte 8 of its
14-byte header) and its server clears that bit in the reply; an echo
server sends the bit back set, and the client throws the reply away ("No
messages were received from the server").  So this script adapts sockperf
on its own side of the wire: a small C library, loaded into the sockperf
client with C{LD_PRELOAD}, clears that bit in every datagram the client
receives (C{recv}, C{recvfrom}, C{recvmsg}), and nothing else.  The server
and what travels between them are untouched: the same C{twistd -n echo
--udp} answers both tools, and neither tool knows of the other.

For each scenario both tools measure the round trip of one UDP datagram of
C{--size} bytes at a time (ping-pong), in turns, C{--rounds} times, each
for C{--seconds}; the server runs on the first CPU, the tools on the
second (C{taskset}).  sockperf runs twice a round: as it is by default
for one peer (C{-i}: it waits for each reply in a blocking C{recvfrom})
and with C{-F e} (a peers file, C{--timeout=-1}: it waits in
C{epoll_wait}, then receives), which is how the bench's reactor waits.
Scenarios:
  - idle: the server has nothing else to do;
  - busy: a C load generator (benchmarks/loadgen.c, 20 TCP connections
    in ping-pong), on the server's CPU, keeps the server busy, so each
    datagram waits its turn behind the load, as on a server in production.
The table gives each tool's median over the rounds of its p50, p90, p99
and mean, and the bench's difference from sockperf; JSON in
C{build/crosscheck.json}.

Everything it needs is installed here if missing: sockperf, gcc and make
with C{apt-get} (root, Debian or Ubuntu), the C{bench} extra with pip; the
C load generator is built by the Makefile's rule.  Linux, loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO, cast

from echotwist.bench.cpustat import readCpuTimes, stealPercent

if not __package__:
    # Run as a script: import the source tree's benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.netfaults import CommandFailed, aptInstall
from benchmarks.processoutput import OutputReader

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0
FIGURES = ("p50", "p90", "p99", "mean")
# The tools of each round, in the order they run.
TOOLS = ("sockperf", "sockperf-epoll", "bench")

# Clears sockperf's "from the client" flag in what its client receives:
# bit 0 of the big-endian 16-bit flags that follow the 8-byte sequence
# number of its 14-byte header.
SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

static void fromServer(void *buffer, ssize_t length) {
    if (length >= 14) ((uint8_t *)buffer)[9] &= (uint8_t)~1u;
}

ssize_t recv(int fd, void *buffer, size_t length, int flags) {
    static ssize_t (*real)(int, void *, size_t, int);
    if (!real) real = dlsym(RTLD_NEXT, "recv");
    ssize_t n = real(fd, buffer, length, flags);
    fromServer(buffer, n);
    return n;
}

ssize_t recvfrom(int fd, void *buffer, size_t length, int flags,
                 struct sockaddr *address, socklen_t *addressLength) {
    static ssize_t (*real)(int, void *, size_t, int, struct sockaddr *,
                           socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "recvfrom");
    ssize_t n = real(fd, buffer, length, flags, address, addressLength);
    fromServer(buffer, n);
    return n;
}

ssize_t recvmsg(int fd, struct msghdr *message, int flags) {
    static ssize_t (*real)(int, struct msghdr *, int);
    if (!real) real = dlsym(RTLD_NEXT, "recvmsg");
    ssize_t n = real(fd, message, flags);
    if (n > 0 && message->msg_iovlen > 0) {
        fromServer(message->msg_iov[0].iov_base, n);
    }
    return n;
}
"""


@dataclass
class Figures:
    """One tool's round trips in one run, in microseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    count: int


def parseSockperf(output: str) -> Figures:
    """The round-trip figures of a C{sockperf ping-pong --full-rtt} run.

    @raise ValueError: the output has no statistics (sockperf received
        nothing, say); the message quotes its last line.
    """
    found = {
        float(percent): float(value)
        for percent, value in re.findall(
            r"---> percentile\s+([\d.]+)\s*=\s*([\d.]+)", output
        )
    }
    mean = re.search(r"avg-rtt=([\d.]+)", output)
    count = re.search(r"Total (\d+) observations", output)
    if mean is None or count is None or not {50.0, 90.0, 99.0} <= set(found):
        last = output.strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"sockperf gave no statistics: {last[0]}")
    return Figures(
        found[50.0], found[90.0], found[99.0], float(mean.group(1)), int(count.group(1))
    )


def parseBench(output: str) -> Figures:
    """The round-trip figures of a C{python -m echotwist.bench --json} run."""
    report = json.loads(output)
    return Figures(
        float(report["p50_us"]),
        float(report["p90_us"]),
        float(report["p99_us"]),
        float(report["mean_us"]),
        int(report["echoes"]),
    )


def medianFigures(runs: Sequence[Figures]) -> Figures:
    """Each figure's median over C{runs} (the counts add up)."""
    p50, p90, p99, mean = (
        statistics.median(getattr(run, name) for run in runs) for name in FIGURES
    )
    return Figures(p50, p90, p99, mean, sum(run.count for run in runs))


def difference(bench: float, sockperf: float) -> float:
    """The bench's figure relative to sockperf's, in percent."""
    return 100.0 * (bench - sockperf) / sockperf


def tableLines(results: dict[str, dict[str, Figures]]) -> list[str]:
    """The scenarios as a table: the tools' medians, the bench's differences.

    The bench against sockperf as it is (C{recvfrom}) and against
    sockperf waiting in C{epoll_wait} as the bench does.
    """
    lines = [
        f"{'scenario':<8} {'figure':<6} {'sockperf us':>12} {'-F e us':>8}"
        f" {'bench us':>9} {'vs sockperf':>12} {'vs -F e':>8}"
    ]
    for scenario, tools in results.items():
        for name in FIGURES:
            theirs = getattr(tools["sockperf"], name)
            theirsEpoll = getattr(tools["sockperf-epoll"], name)
            ours = getattr(tools["bench"], name)
            lines.append(
                f"{scenario:<8} {name:<6} {theirs:>12.1f} {theirsEpoll:>8.1f}"
                f" {ours:>9.1f} {difference(ours, theirs):>+11.1f}%"
                f" {difference(ours, theirsEpoll):>+7.1f}%"
            )
    return lines


def ensureTools(*commands: str) -> None:
    """Install C{commands} (each its Debian package's name) and the bench
    extra where they are missing; exit with one line if that fails.
    """
    missing = [name for name in commands if shutil.which(name) is None]
    if missing:
        try:
            aptInstall(missing)
        except CommandFailed as e:
            raise SystemExit(f"needs {', '.join(missing)}: {e}") from None
    try:
        import hdrh  # noqa: F401
    except ImportError:
        run([sys.executable, "-m", "pip", "install", "--quiet", f"{ROOT}[bench]"])


def run(command: Sequence[str], **options: object) -> str:
    """Run C{command}; its standard output, or exit with its error output."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        **options,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return str(result.stdout)


def pinned(cpu: int) -> list[str]:
    """C{taskset -c CPU} where there are two CPUs and taskset, else nothing."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


class Server:
    """C{twistd -n echo} on the first CPU: TCP and UDP on 127.0.0.1, port 0."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [*pinned(0), sys.executable, "-c",
             "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "echo",
             "--listen", "tcp:0:interface=127.0.0.1",
             "--udp", "udp:0:interface=127.0.0.1", "--udp-rate", "0"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        output = OutputReader(cast(TextIO, self.process.stdout))
        try:
            self.tcpPort = int(
                output.waitFor(r"Listening on tcp:127\.0\.0\.1:(\d+)", WAIT).group(1)
            )
            self.udpPort = int(
                output.waitFor(r"Listening on udp:127\.0\.0\.1:(\d+)", WAIT).group(1)
            )
        except CommandFailed as e:
            self.stop()
            raise SystemExit(f"the server did not start: {e}") from None

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(WAIT)


def ensureLoadgen() -> Path:
    """C{build/loadgen}, (re)built by the Makefile's rule when out of date."""
    run(["make", "--silent", "build/loadgen"], cwd=ROOT)
    return ROOT / "build" / "loadgen"


@contextmanager
def background(port: int, seconds: float) -> Iterator[None]:
    """Keep the server busy: C{build/loadgen} with 20 TCP connections.

    On the server's CPU, so that the server has less of it, as on a busy
    host, while the tools on the other CPU have theirs to themselves.
    """
    process = subprocess.Popen(
        [*pinned(0), str(ensureLoadgen()), "-p", str(port), "-c", "20", "-s", "64",
         "-d", str(int(seconds) + 1), "-w", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    try:
        yield
    finally:
        process.terminate()
        process.wait(WAIT)


def sockperf(
    shim: Path, port: int, size: int, seconds: float, peers: Path | None = None
) -> Figures:
    """One sockperf ping-pong run through the shim: UDP, full round trips.

    With C{peers} (a file naming the server), sockperf waits for each
    reply in C{epoll_wait} (C{-F e}, no timeout) instead of a blocking
    C{recvfrom}.
    """
    target = (
        ["-i", "127.0.0.1", "-p", str(port)]
        if peers is None
        else ["-f", str(peers), "-F", "e", "--timeout=-1"]
    )
    output = run(
        [*pinned(1), "sockperf", "ping-pong", *target,
         "-m", str(size), "-t", str(int(seconds)), "--full-rtt"],
        env={**os.environ, "LD_PRELOAD": str(shim)},
    )  # fmt: skip
    return parseSockperf(output)


def bench(port: int, size: int, seconds: float) -> Figures:
    """One bench run: UDP, one datagram in flight, JSON."""
    output = run(
        [*pinned(1), sys.executable, "-m", "echotwist.bench", "--udp", "-c", "1",
         "-s", str(size), "-d", str(seconds), "-w", "1", "--json",
         f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return parseBench(output)


def main() -> None:
    """Install what is missing, run every scenario, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--output", type=Path, default=ROOT / "build/crosscheck.json")
    args = parser.parse_args()
    if args.size < 14:
        parser.error("--size: at least 14 (sockperf's header)")
    ensureTools("sockperf", "gcc", "make")
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "shim.c"
        source.write_text(SHIM_SOURCE)
        shim = Path(directory) / "shim.so"
        run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(shim), str(source), "-ldl"])
        server = Server()
        peers = Path(directory) / "peers"
        peers.write_text(f"U:127.0.0.1:{server.udpPort}\n")
        steal: dict[str, dict[str, list[float]]] = {}
        try:
            results = measure(server, shim, peers, args, steal)
        finally:
            server.stop()
    lines = tableLines(results)
    load = os.getloadavg()
    print("\n".join(lines))
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("\n".join(stealLines(steal)))
    saveJson(
        args.output,
        {
            "size": args.size,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "load_average": load,
            "steal_percent": steal,
            "results": {
                scenario: {tool: asdict(f) for tool, f in tools.items()}
                for scenario, tools in results.items()
            },
        },
    )


def saveJson(path: Path, data: object) -> None:
    """Write C{data} to C{path} as indented JSON, making its directory."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def measure(
    server: Server,
    shim: Path,
    peers: Path,
    args: argparse.Namespace,
    steal: dict[str, dict[str, list[float]]],
) -> dict[str, dict[str, Figures]]:
    """The tools in turns, C{rounds} times, idle and busy: their medians.

    The host's steal during each tool's run goes into C{steal}, by scenario
    and tool (where C{/proc/stat} can be read).
    """
    results: dict[str, dict[str, Figures]] = {}
    for scenario in ("idle", "busy"):
        runs: dict[str, list[Figures]] = {tool: [] for tool in TOOLS}
        stolen: dict[str, list[float]] = steal.setdefault(
            scenario, {tool: [] for tool in TOOLS}
        )
        total = args.rounds * len(TOOLS) * (args.seconds + 4) + 5
        with background(server.tcpPort, total) if scenario == "busy" else _nothing():
            for _ in range(args.rounds):
                for tool in TOOLS:
                    before = readCpuTimes()
                    runs[tool].append(
                        bench(server.udpPort, args.size, args.seconds)
                        if tool == "bench"
                        else sockperf(
                            shim,
                            server.udpPort,
                            args.size,
                            args.seconds,
                            peers if tool == "sockperf-epoll" else None,
                        )
                    )
                    share = stealPercent(before, readCpuTimes())
                    if share is not None:
                        stolen[tool].append(share)
        results[scenario] = {tool: medianFigures(r) for tool, r in runs.items()}
    return results


def stealLines(steal: dict[str, dict[str, list[float]]]) -> list[str]:
    """The host's steal during each tool's runs: median and most, per scenario."""
    lines = []
    for scenario, tools in steal.items():
        parts = [
            f"{tool} {statistics.median(shares):.1f} % (at most {max(shares):.1f} %)"
            for tool, shares in tools.items()
            if shares
        ]
        if parts:
            lines.append(f"host steal, {scenario}: " + ", ".join(parts))
    return lines


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
