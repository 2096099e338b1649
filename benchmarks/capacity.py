r"""Capacity run: C{twistd echo --workers N} holding many idle connections.

Starts the server, reads its memory, drives it with C{python -m
echotwist.bench --mode hold --processes K} (one verified echo per
connection, held for C{--hold} seconds, then one more verified echo on
every held connection), and, while the connections are held, reads the
memory again and counts each worker's connections.  Prints one JSON
object: the bench's report, the server's RSS and USS (summed over the
supervisor and its workers) before and while holding, per connection,
and the spread over the workers.  The server is stopped (SIGTERM) at the
end, and every process started is gone when the script returns.

The 100,000-connection recipe of docs/performance.md, from the
repository root (run nothing else heavy meanwhile)::

    .venv/bin/python benchmarks/capacity.py \\
        --connections 100000 --workers 8 --max-connections 15000 --processes 6

Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

if not __package__:
    # Run as a script: import the source tree's benchmarks package, as the
    # tests run from the tree's root do.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.procstat import readStatusKiB

# Every wait on the server (start-up, stop) is bounded by this many seconds.
WAIT = 60.0
# Connections held are counted once their number has not changed for this
# many seconds (or once all are in).
SETTLED = 5.0


def ussKiB(pid: int) -> int:
    """The unique set size of C{pid} in KiB: the pages no other process
    maps, so that a sum over processes counts no page twice.  (PSS would
    split the interpreter's shared pages with the bench's own Python
    processes, and change as they come and go.)
    """
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def openFiles(pid: int) -> int:
    """How many descriptors C{pid} has open (cheap: no look at each one)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Server:
    """The C{twistd echo --workers} under test, its log in a file."""

    def __init__(self, arguments: Sequence[str], log: IO[bytes]) -> None:
        twistd = str(Path(sys.executable).with_name("twistd"))
        self.command = [twistd, "-n", "--pidfile=", "echo", *arguments]
        self.log = log
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT
        )
        self.workers: dict[int, int] = {}
        self.port = 0

    def text(self) -> str:
        """The log so far."""
        return Path(self.log.name).read_text(errors="replace")

    def waitListening(self, count: int) -> None:
        """Wait until every worker and the supervisor say they listen."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            text = self.text()
            listening = re.search(r"Listening on tcp:127\.0\.0\.1:(\d+)", text)
            workers = re.findall(r"Worker (\d+) \(pid (\d+)\) listening", text)
            if listening and len(workers) == count:
                self.port = int(listening.group(1))
                self.workers = {int(i): int(pid) for i, pid in workers}
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{text}")
            time.sleep(0.1)
        raise RuntimeError(f"the server did not listen in {WAIT:g} s:\n{self.text()}")

    def pids(self) -> list[int]:
        """The supervisor's and the workers' process ids."""
        return [self.process.pid, *self.workers.values()]

    def memory(self) -> dict[str, int]:
        """RSS and USS in KiB, summed over the supervisor and the workers."""
        return {
            "rss_kib": sum(readStatusKiB(pid, "VmRSS") for pid in self.pids()),
            "uss_kib": sum(ussKiB(pid) for pid in self.pids()),
        }

    def connections(self, baseline: dict[int, int]) -> dict[int, int]:
        """Each worker's descriptors beyond its idle C{baseline}: its
        connections (a worker opens no other files as it serves).
        """
        return {
            index: openFiles(pid) - baseline[index]
            for index, pid in self.workers.items()
        }

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not end in time; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(WAIT)


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """The script's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=100000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--max-connections", type=int, default=15000)
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument(
        "--hold", type=float, default=60.0, help="seconds held (default 60)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="the bench's --timeout"
    )
    parser.add_argument(
        "--reactor", default=None, help="twistd -r REACTOR (default: Twisted's)"
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    """Run the capacity measurement; print its JSON; 0 if all answered."""
    args = parseArguments(argv)
    serverArguments = [
        "--workers",
        str(args.workers),
        "--max-connections",
        str(args.max_connections),
        "--port",
        "tcp:0:interface=127.0.0.1",
    ]
    if args.reactor is not None:
        serverArguments = ["-r", args.reactor, *serverArguments]
    with tempfile.NamedTemporaryFile(prefix="capacity-", suffix=".log") as log:
        server = Server(serverArguments, log)
        try:
            return measure(args, server)
        finally:
            status = server.stop()
            print(f"server stopped: exit status {status}", file=sys.stderr)


def measure(args: argparse.Namespace, server: Server) -> int:
    """Hold the connections against C{server} and report."""
    server.waitListening(args.workers)
    # Let start-up garbage settle before the "before" figures.
    time.sleep(1.0)
    baseline = {i: openFiles(pid) for i, pid in server.workers.items()}
    before = server.memory()
    benchCommand = [
        sys.executable,
        "-m",
        "echotwist.bench",
        "--json",
        "--mode",
        "hold",
        "--processes",
        str(args.processes),
        "--connections",
        str(args.connections),
        "--duration",
        str(args.hold),
        "--timeout",
        str(args.timeout),
        "127.0.0.1",
        str(server.port),
    ]
    started = time.monotonic()
    bench = subprocess.Popen(benchCommand, stdout=subprocess.PIPE, text=True)
    held: dict[str, Any] = {}
    try:
        # Until every connection is in, or the count has not moved for
        # SETTLED seconds (some failed to connect: the bench counts them),
        # or the bench ends (it has failed then, or held too short a time
        # to be seen).
        last, changed = -1, time.monotonic()
        while bench.poll() is None:
            counts = server.connections(baseline)
            total = sum(counts.values())
            if total != last:
                last, changed = total, time.monotonic()
            if total >= args.connections or (
                total > 0 and time.monotonic() - changed >= SETTLED
            ):
                held = {
                    "seen_after_s": round(time.monotonic() - started, 1),
                    "memory": server.memory(),
                    "per_worker": counts,
                }
                break
            time.sleep(1.0)
        out, _ = bench.communicate(timeout=args.hold + 10 * args.timeout + WAIT)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    text = server.text()
    report: dict[str, Any] = {
        "server": server.command[1:],
        # What the server said about its limits: a raised open-file limit
        # (once per worker), clients turned away, descriptors run out.
        "server_log": {
            "file_limit": dict(
                Counter(re.findall(r"Raised the open-file limit.*|needs about.*", text))
            ),
            "rejected": len(re.findall(r"Rejected client", text)),
            "emfile": len(re.findall(r"Out of file descriptors", text)),
        },
        "bench": benchCommand[1:],
        "bench_exit": bench.returncode,
        "bench_report": json.loads(out) if out.strip() else None,
        "before": before,
        "holding": held,
    }
    if held:
        total = sum(held["per_worker"].values())
        report["per_connection_bytes"] = {
            kind: round((held["memory"][kind] - before[kind]) * 1024 / total)
            for kind in ("rss_kib", "uss_kib")
        }
        report["peak_rss_kib"] = sum(
            readStatusKiB(pid, "VmHWM") for pid in server.pids()
        )
    print(json.dumps(report, indent=2))
    return 0 if bench.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
