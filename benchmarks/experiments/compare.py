"""Run the experimental echo servers side by side, and count their system calls.

Usage, from the repository root (after C{make build/loadgen})::

    .venv/bin/python -m benchmarks.experiments.compare --rounds 5
    .venv/bin/python -m benchmarks.experiments.compare --strace

The first runs every server in L{SERVERS} through the benchmark's three
ping-pong loads in interleaved rounds (A B C ... A B C ..., order reversed
in alternate rounds, a fresh server process per round and load), the
server pinned to CPU 0 and the load generator to CPU 1, and prints the
medians: echoes/s and server CPU µs per echo (user + system from
C{/proc/PID/stat} over the load generator's measured window; the user
part in brackets).  The second
attaches C{strace -c -f} to each server for one 50x512B load and prints its
system calls per echo, and echoes per turn (per C{epoll_wait} or
C{io_uring_enter}).  Both append their table to C{--output}.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.catalogue import WORKLOADS, Server
from benchmarks.control import WAIT, Running, loadAverage, machine, pinned
from benchmarks.loads import pingpongTogether

PYTHON = sys.executable
LOADGEN = "build/loadgen"
SERVER_CPU, LOAD_CPU = 0, 1


def _module(name: str, *options: str) -> tuple[str, ...]:
    return (PYTHON, "-m", f"benchmarks.experiments.{name}", *options)


SERVERS = (
    Server(
        "epoll-recv",
        _module("epoll_echo", "--read", "recv"),
        "(a) control: epoll, recv + send",
    ),
    Server(
        "epoll-recv_into",
        _module("epoll_echo", "--read", "recv_into"),
        "(b) recv_into a reused buffer",
    ),
    Server(
        "epoll-busypoll",
        _module("epoll_echo", "--busy-poll", "50"),
        "(d) SO_BUSY_POLL 50 µs",
    ),
    Server(
        "uring-rearm",
        _module("uring_echo", "--recv", "rearm", "--defer"),
        "(c) io_uring, one recv re-armed per echo, defer taskrun",
    ),
    Server(
        "uring-multishot",
        _module("uring_echo", "--recv", "multishot", "--defer"),
        "(c) io_uring, multishot recv, defer taskrun",
    ),
    Server(
        "uring-multishot-plain",
        _module("uring_echo", "--recv", "multishot"),
        "(c) io_uring, multishot recv, default task work",
    ),
    Server(
        "uring-sqpoll",
        _module("uring_echo", "--recv", "multishot", "--sqpoll"),
        "(d) io_uring, multishot recv, SQPOLL thread on CPU 0",
    ),
    Server(
        "echotwist",
        (
            str(Path(PYTHON).parent / "twistd"),
            "-n",
            "--pidfile=",
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ),
        "reference: the default twistd -n echo (fastepoll reactor)",
    ),
)


def compare(servers: list[Server], rounds: int, seconds: float, warmup: float) -> str:
    """Interleaved rounds of every load on every server; the medians as a table."""
    loadgen = pinned([LOADGEN, "-m", "pingpong"], LOAD_CPU)
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    user: dict[tuple[str, str], list[float]] = {}
    loadBefore = loadAverage()
    with tempfile.TemporaryDirectory() as logs:
        for index in range(rounds):
            order = servers if index % 2 == 0 else servers[::-1]
            for server in order:
                for workload in WORKLOADS:
                    running = Running(server, SERVER_CPU, Path(logs))
                    try:
                        result, meter = pingpongTogether(
                            [loadgen], running, workload, seconds, warmup
                        )
                    finally:
                        running.stop()
                    key = (server.name, workload.name)
                    rates.setdefault(key, []).append(result["echoes_per_s"])
                    cpu.setdefault(key, []).append(
                        meter.cpuMicrosPerEcho(result["echoes"])
                    )
                    user.setdefault(key, []).append(
                        meter.cpuMicrosPerEcho(result["echoes"], kind="user")
                    )
                    print(
                        f"round {index + 1} {server.name} {workload.name}: "
                        f"{result['echoes_per_s']:.0f}/s "
                        f"{cpu[key][-1]:.1f} µs/echo",
                        flush=True,
                    )
    header = "| server | " + " | ".join(
        f"{w.name} echoes/s | {w.name} CPU µs/echo (user)" for w in WORKLOADS
    )
    lines = [
        f"Interleaved rounds: {rounds}, {seconds:g} s measured after {warmup:g} s"
        f" warm-up; medians. {machine()}. Load average (1, 5, 15 min) before"
        f" {loadBefore}, after {loadAverage()}.",
        "",
        header + " |",
        "|---|" + "---:|" * (2 * len(WORKLOADS)),
    ]
    for server in servers:
        cells = []
        for workload in WORKLOADS:
            key = (server.name, workload.name)
            cells.append(f"{statistics.median(rates[key]):,.0f}")
            cells.append(
                f"{statistics.median(cpu[key]):.1f}"
                f" ({statistics.median(user[key]):.1f})"
            )
        lines.append(f"| {server.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def straceCounts(server: Server, seconds: float) -> tuple[dict[str, int], int]:
    """System calls by name, and echoes, over one 50x512B load under strace."""
    with tempfile.TemporaryDirectory() as logs:
        running = Running(server, SERVER_CPU, Path(logs))
        output = Path(logs) / "strace.txt"
        strace = subprocess.Popen(
            [
                "strace",
                "-c",
                "-f",
                "-o",
                str(output),
                "-p",
                str(running.process.pid),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            completed = subprocess.run(
                [
                    *pinned([LOADGEN, "-m", "pingpong"], LOAD_CPU),
                    *("-p", str(running.port), "-c", "50", "-s", "512"),
                    *("-d", str(seconds), "-w", "0"),
                ],
                capture_output=True,
                text=True,
                timeout=seconds + WAIT,
                check=True,
            )
        finally:
            strace.send_signal(signal.SIGINT)
            try:
                strace.wait(WAIT)
            except subprocess.TimeoutExpired:
                strace.kill()
                strace.wait(WAIT)
            running.stop()
        echoes = next(
            json.loads(line)["echoes"]
            for line in completed.stdout.splitlines()
            if line.startswith("{")
        )
        return parseStrace(output.read_text()), echoes


def parseStrace(summary: str) -> dict[str, int]:
    """The calls column of C{strace -c}'s summary, by system call."""
    counts: dict[str, int] = {}
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    return counts


TURNS = ("epoll_wait", "io_uring_enter")


def syscallTable(servers: list[Server], seconds: float) -> str:
    """Every server's system calls per echo at 50x512B, as a table."""
    lines = [
        f"`strace -c -f -p PID` over one 50x512B load of {seconds:g} s"
        f" (`loadgen -c 50 -s 512 -d {seconds:g} -w 0`); load average before"
        f" {loadAverage()}.",
        "",
        "| server | echoes | syscalls/echo | echoes/turn | calls/echo by name |",
        "|---|---:|---:|---:|---|",
    ]
    for server in servers:
        counts, echoes = straceCounts(server, seconds)
        turns = sum(counts.get(name, 0) for name in TURNS)
        named = ", ".join(
            f"{name} {calls / echoes:.3f}"
            for name, calls in sorted(counts.items(), key=lambda item: -item[1])
            if calls / echoes >= 0.001
        )
        lines.append(
            f"| {server.name} | {echoes:,} | {sum(counts.values()) / echoes:.3f}"
            f" | {echoes / turns if turns else float('inf'):.1f} | {named} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the options, run, print and append the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--servers", help="comma-separated names (default: all)")
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    servers = list(SERVERS)
    if options.servers:
        wanted = options.servers.split(",")
        servers = [server for server in SERVERS if server.name in wanted]
    if options.strace:
        table = syscallTable(servers, options.seconds)
    else:
        table = compare(servers, options.rounds, options.seconds, options.warmup)
    print(table)
    if options.output:
        with options.output.open("a") as output:
            output.write(table + "\n")


if __name__ == "__main__":
    main()
