"""make cluster: three echotwist hosts behind HAProxy, load from two more.

Builds six hosts as network namespaces on one bridge
(C{benchmarks/clusternet.py}, 10.204.0.0/24): three servers
(C{twistd -n echo --listen haproxy:tcp:7008 --listen tcp:7007}), one
HAProxy with the shipped C{contrib/haproxy/echotwist.cfg} (port 7, PROXY
protocol v2 to the servers, the echo health check) and two load hosts.
Then it:

  1. measures one server directly (C{python -m echotwist.bench} from
     C{c1} to C{s1}'s plain port);
  2. runs the bench from both load hosts through HAProxy at once for
     C{--duration} seconds, each with C{--hlog}, and SIGKILLs C{s3}'s
     twistd C{--kill-after} seconds into the run;
  3. notes when HAProxy marks C{s3} down, and when each failed session
     ended (HAProxy's session log, to the millisecond): before the
     kill, between the kill and the ejection, after the ejection;
  4. merges the two logs with C{python -m echotwist.bench merge} and
     checks the merge against the runs' own reports and the logs'
     histograms added up here;
  5. checks that every server logged the load hosts' own addresses (the
     PROXY header), not HAProxy's.

It prints a table and ends with the line
C{cluster: 3 servers, 2 load hosts, R echoes/s through haproxy, errors
after ejection N, ejected after S s, merge exact}, and writes it with
the details to C{build/cluster.md} and C{build/cluster.json} (the logs
to C{build/cluster/}).  Exit status 0 when there were no errors after
the ejection, the ejection came within 3 s, the merge was exact and the
servers saw the clients; 1 otherwise; 2 when it cannot run here (not
Linux, not root, a tool missing that apt-get could not install); 130
after Ctrl-C, 143 after SIGTERM.

It installs C{haproxy} and C{iproute2} with apt-get when missing.
Everything it makes (namespaces, their links and addresses, processes)
is named after its pid and removed on the way out, also after an error,
Ctrl-C or SIGTERM; every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, cast

if not __package__:
    # Run as a script (make cluster): make the source tree's packages
    # importable, as they are for the tests run from the tree's root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.clusternet import SUBNET, Cluster, Host, plan
from benchmarks.clusterresults import (
    Phases,
    Row,
    finalLine,
    formatTable,
    mergeProblems,
    parseSession,
    phases,
)
from benchmarks.control import TWISTD, loadAverage, machine
from benchmarks.netfaults import CommandFailed, aptInstall
from benchmarks.processoutput import OutputReader

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = ROOT / "contrib" / "haproxy" / "echotwist.cfg"
FRONT_PORT = 7
PROXIED_PORT = 7008
DIRECT_PORT = 7007
# The longest any one step may take (a start, a check, a stop).
WAIT = 30.0
# HAProxy must have taken the killed host out within this.
EJECTION_LIMIT = 3.0


class Interrupted(Exception):
    """A signal asked the script to stop; C{args[0]} is its number."""


def raiseInterrupted(number: int, frame: FrameType | None) -> None:
    """A signal handler: turn the signal into L{Interrupted}."""
    raise Interrupted(number)


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line (usage errors exit 2 with one line)."""
    parser = argparse.ArgumentParser(
        prog="cluster.py", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--duration", type=float, default=12.0, help="seconds of load through HAProxy"
    )
    parser.add_argument(
        "--kill-after",
        type=float,
        default=4.0,
        help="kill s3 this many seconds into that load",
    )
    parser.add_argument(
        "--connections", type=int, default=25, help="connections per load host"
    )
    parser.add_argument(
        "--direct", type=float, default=4.0, help="seconds of load on s1 directly"
    )
    parser.add_argument(
        "--output", default="build/cluster.json", help="the JSON; the table beside it"
    )
    args = parser.parse_args(list(argv))
    if args.connections < 1 or args.direct <= 0:
        parser.error("--connections and --direct must be positive")
    # After the kill: time for the ejection (up to 3 s) and for load
    # after it, which is what errors after the ejection are counted in.
    if not 1.0 <= args.kill_after <= args.duration - EJECTION_LIMIT - 2.0:
        parser.error(
            "--kill-after must be at least 1 and leave 5 s of --duration after it"
        )
    return args


def refusal(platform: str, euid: int) -> str | None:
    """Why the script cannot run here, or None if it can."""
    if not platform.startswith("linux"):
        return f"needs Linux (network namespaces), not {platform}"
    if euid != 0:
        return "needs root (ip netns, apt-get)"
    return None


def ensureTools() -> list[str]:
    """Install what is missing of C{ip} and C{haproxy}; return what was.

    @raise CommandFailed: apt-get is missing or failed.
    """
    missing = [
        package
        for command, package in (("ip", "iproute2"), ("haproxy", "haproxy"))
        if shutil.which(command) is None
    ]
    if missing:
        aptInstall(missing)
    return missing


class Child:
    """A process started inside a host, its output read as it comes."""

    def __init__(
        self, host: Host, command: Sequence[str], env: dict[str, str] | None = None
    ) -> None:
        self.host = host
        # A session of its own: Ctrl-C reaches only this script, which
        # stops everything in order.
        self.process = subprocess.Popen(
            host.command(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            cwd=str(ROOT),
            env=env,
            start_new_session=True,
        )
        self.output = OutputReader(cast(TextIO, self.process.stdout))

    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    def signal(self, number: int) -> None:
        """Send C{number} to the process if it still runs."""
        if self.running():
            self.process.send_signal(number)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the exit (SIGKILL after C{timeout} s); return its status."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def text(self) -> str:
        """The output read so far."""
        return self.output.text()


def environment(**extra: str) -> dict[str, str]:
    """The children's environment: this tree's code, unbuffered, UTC."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["TZ"] = "UTC"
    env.update(extra)
    return env


def startServer(host: Host) -> Child:
    """C{twistd echo} on C{host}: a PROXY listener and a plain one."""
    command = [
        *TWISTD,
        "-n",
        "--pidfile=",
        "echo",
        "--listen",
        f"haproxy:tcp:{PROXIED_PORT}:interface={host.address}",
        "--listen",
        f"tcp:{DIRECT_PORT}:interface={host.address}",
    ]
    return Child(host, command, environment())


def bench(host: Host, target: str, port: int, *arguments: str) -> Child:
    """C{python -m echotwist.bench --json ARGUMENTS TARGET PORT} on C{host}."""
    command = [sys.executable, "-m", "echotwist.bench", "--json", *arguments]
    return Child(host, [*command, target, str(port)], environment())


def benchReport(child: Child, timeout: float) -> dict[str, Any]:
    """The JSON report a bench child printed (its exit 1 for errors is fine).

    @raise CommandFailed: it printed none.
    """
    status = child.finish(timeout)
    for line in reversed(child.output.waitClosed(WAIT).splitlines()):
        if line.startswith("{"):
            report: dict[str, Any] = json.loads(line)
            return report
    raise CommandFailed(
        f"bench on {child.host.name} exited {status} without a report:"
        f" {child.text()[-300:]}"
    )


def summedHistogram(paths: Sequence[Path]) -> tuple[list[int], dict[str, int]]:
    """Each log's latency count and the percentiles of all of them added up,
    read here with hdrhistogram itself (not through the merge).
    """
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    total = HdrHistogram(1, 3_600_000_000, 3)
    counts = []
    for path in paths:
        reader = HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
        count = 0
        # One interval a second: bounded by the file's length.
        while (interval := reader.get_next_interval_histogram()) is not None:
            count += interval.get_total_count()
            total.add(interval)
        reader.close()
        counts.append(count)
    values = {
        f"{name}_us": total.get_value_at_percentile(p)
        for name, p in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
    }
    values["max_us"] = total.get_max_value()
    return counts, values


def runCluster(
    cluster: Cluster, args: argparse.Namespace, logs: Path, children: list[Child]
) -> dict[str, Any]:
    """Start everything, measure, kill, merge; return what was found."""
    servers = [h for h in cluster.hosts if h.name.startswith("s")]
    loaders = [h for h in cluster.hosts if h.name.startswith("c")]
    balancer = cluster.host("lb")
    for host in servers:
        child = startServer(host)
        children.append(child)
        child.output.waitForAll(r"Listening on ", 2, WAIT)
    serverChildren = children[: len(servers)]
    haproxyEnv = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "TZ": "UTC",
        "ECHOTWIST_BIND": f"{balancer.address}:{FRONT_PORT}",
        "ECHOTWIST_STATS": str(logs / "haproxy.sock"),
    }
    for number, host in enumerate(servers, 1):
        haproxyEnv[f"ECHOTWIST_SERVER{number}"] = f"{host.address}:{PROXIED_PORT}"
    haproxy = Child(balancer, ["haproxy", "-db", "-f", str(HAPROXY_CONFIG)], haproxyEnv)
    children.append(haproxy)
    # Every server has passed HAProxy's echo check once.
    for child in serverChildren:
        child.output.waitFor(
            rf"Closed client {balancer.address}/\d+: 22 bytes echoed", WAIT
        )
    client = loaders[0]
    # The direct figure: one server, no HAProxy.
    direct = bench(
        client,
        servers[0].address,
        DIRECT_PORT,
        "-c",
        str(args.connections),
        "-d",
        f"{args.direct:g}",
        "-w",
        "1",
    )
    children.append(direct)
    directReport = benchReport(direct, args.direct + WAIT)
    # The run through HAProxy, from both load hosts at once.
    hlogs = [logs / f"{host.name}.hlog" for host in loaders]
    runs = [
        bench(
            host,
            balancer.address,
            FRONT_PORT,
            "-c",
            str(args.connections),
            "-d",
            f"{args.duration:g}",
            "-w",
            "1",
            "--hlog",
            str(path),
        )
        for host, path in zip(loaders, hlogs, strict=True)
    ]
    children += runs
    # Setting up and the one-second warm-up come first; the kill falls
    # about --kill-after seconds into the measured window.
    time.sleep(1.5 + args.kill_after)
    victim = serverChildren[-1]
    killedAt = time.time()
    victim.signal(signal.SIGKILL)
    victimName = f"echo{len(servers)}"
    down = haproxy.output.waitFor(
        rf"Server echotwist/{victimName} is DOWN", EJECTION_LIMIT + WAIT
    )
    ejectedAt = time.time()
    reports = [benchReport(run, args.duration + WAIT) for run in runs]
    merge = subprocess.run(
        [sys.executable, "-m", "echotwist.bench", "merge", "--json", *map(str, hlogs)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=environment(),
        cwd=str(ROOT),
        check=False,
    )
    if merge.returncode not in (0, 1) or not merge.stdout.startswith("{"):
        raise CommandFailed(f"bench merge exited {merge.returncode}: {merge.stderr}")
    merged: dict[str, Any] = json.loads(merge.stdout)
    counts, summed = summedHistogram(hlogs)
    problems = mergeProblems(reports, counts, merged, summed)
    # Stop HAProxy (its session log is complete once it has exited) and
    # the servers still running, so their logs are whole.
    haproxy.signal(signal.SIGTERM)
    haproxy.finish()
    for child in serverChildren:
        child.signal(signal.SIGTERM)
        child.finish()
    sessions = [
        s
        for s in map(parseSession, haproxy.output.waitClosed(WAIT).splitlines())
        if s is not None
    ]
    found = phases(sessions, killedAt, ejectedAt)
    seen = {
        host.name: [
            loader.name
            for loader in loaders
            if f"Handling client {loader.address}/" in child.output.waitClosed(WAIT)
        ]
        for host, child in zip(servers, serverChildren, strict=True)
    }
    # HAProxy's own address may appear only for its health checks (their
    # LOCAL header names no client), each echoing the 22-byte word.
    asProxy = [
        f"{host.name}: {line}"
        for host, child in zip(servers, serverChildren, strict=True)
        for line in child.text().splitlines()
        if f"Closed client {balancer.address}/" in line and ": 22 bytes" not in line
    ]
    for host, child in zip(servers, serverChildren, strict=True):
        (logs / f"{host.name}.log").write_text(child.text() + "\n", encoding="utf-8")
    (logs / "haproxy.log").write_text(haproxy.text() + "\n", encoding="utf-8")
    return {
        "direct": directReport,
        "runs": reports,
        "merged": merged,
        "merge_problems": problems,
        "killed_at": killedAt,
        "ejected_after_s": ejectedAt - killedAt,
        "down_line": down.string,
        "phases": found,
        "sessions": len(sessions),
        "servers_saw": seen,
        "seen_as_proxy": asProxy,
        "loaders": [h.name for h in loaders],
    }


def summarize(
    found: dict[str, Any], args: argparse.Namespace
) -> tuple[list[str], bool]:
    """The table, the notes and the final line; and whether all is well."""
    runs = found["runs"]
    merged = found["merged"]
    phase: Phases = found["phases"]
    ejected: float = found["ejected_after_s"]
    loaders: list[str] = found["loaders"]
    rows = [
        Row(f"direct: {loaders[0]} -> s1 (tcp:{DIRECT_PORT})", found["direct"]),
        *(
            Row(f"through haproxy: {name}", run)
            for name, run in zip(loaders, runs, strict=True)
        ),
        Row("through haproxy: merged", merged),
    ]
    benchErrors = int(merged["errors"])
    saw = found["servers_saw"]
    blind = [name for name, seen in saw.items() if sorted(seen) != sorted(loaders)]
    problems = list(found["merge_problems"])
    exact = not problems
    last = (
        "none"
        if phase.lastAfterKill is None
        else f"the last {phase.lastAfterKill:.3f} s after the kill"
    )
    notes = [
        f"Kill: s3's twistd got SIGKILL about {args.kill_after:g} s into the"
        f" {args.duration:g} s run; HAProxy marked it DOWN {ejected:.2f} s later"
        f" ({found['down_line'].split('reason: ', 1)[-1].split(',', 1)[0]}).",
        f"Errors (sessions HAProxy ended under a client, by when they ended):"
        f" before the kill {phase.beforeKill}, from the kill to the ejection"
        f" {phase.untilEjection}, after the ejection {phase.afterEjection}"
        f" ({last}); the bench counted {benchErrors}.",
        "Merge: "
        + (
            "exact (echoes, errors and error kinds are the runs' sums; the"
            " percentiles and max are those of the two logs' histograms added"
            " up; each log holds its run's every echo)"
            if exact
            else "INEXACT: " + "; ".join(problems)
        )
        + ".",
        "PROXY protocol: "
        + ", ".join(
            f"{name} logged {', '.join(seen) or 'none'}" for name, seen in saw.items()
        )
        + " (the load hosts' own addresses); HAProxy's own address only for"
        f" its health checks ({len(found['seen_as_proxy'])} other connections).",
    ]
    problems += [f"seen as HAProxy: {line}" for line in found["seen_as_proxy"][:3]]
    if phase.total != benchErrors:
        problems.append(
            f"HAProxy ended {phase.total} sessions under clients, the bench"
            f" counted {benchErrors} errors"
        )
    ok = (
        exact
        and phase.afterEjection == 0
        and ejected <= EJECTION_LIMIT
        and not blind
        and not found["seen_as_proxy"]
        and phase.total == benchErrors
    )
    if not ok:
        notes.append(
            "FAILED: "
            + "; ".join(
                [*problems, *(f"{name} did not see every load host" for name in blind)]
                + (
                    [f"ejection after {ejected:.2f} s"]
                    if ejected > EJECTION_LIMIT
                    else []
                )
                + (
                    [f"{phase.afterEjection} errors after the ejection"]
                    if phase.afterEjection
                    else []
                )
            )
        )
    line = finalLine(
        servers=len(saw),
        loadHosts=len(loaders),
        rate=float(merged["echoes_per_s"]),
        after=phase.afterEjection,
        ejectedAfter=ejected,
        exact=exact,
    )
    return [*formatTable(rows), "", *notes, "", line], ok


def main(argv: Sequence[str]) -> int:
    """Check the machine, build the cluster, run, tear down, print the table."""
    args = parseArguments(argv)
    reason = refusal(sys.platform, os.geteuid())
    if reason is not None:
        sys.stderr.write(f"cluster: {reason}\n")
        return 2
    try:
        ensureTools()
    except CommandFailed as e:
        sys.stderr.write(f"cluster: cannot install haproxy or iproute2: {e}\n")
        return 2
    if importlib.util.find_spec("hdrh") is None:
        sys.stderr.write(
            "cluster: needs the bench extra: pip install '.[bench]'"
            " (make cluster does)\n"
        )
        return 2
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    logs = ROOT / "build" / "cluster"
    logs.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(plan(os.getpid()))
    children: list[Child] = []
    previous = {
        number: signal.signal(number, raiseInterrupted)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    found: dict[str, Any] | None = None
    failure: str | None = None
    status = 0
    try:
        cluster.create()
        found = runCluster(cluster, args, logs, children)
    except Interrupted as e:
        status = 128 + int(e.args[0])
        failure = f"interrupted by {signal.Signals(e.args[0]).name}"
    except (CommandFailed, OSError, ValueError) as e:
        status = 1
        failure = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    finally:
        # Teardown must finish: no signal may cut it short.
        for number in previous:
            signal.signal(number, signal.SIG_IGN)
        for child in children:
            child.signal(signal.SIGKILL)
            child.finish()
        errors = cluster.destroy()
        for number, handler in previous.items():
            signal.signal(number, handler)
    for error in errors:
        sys.stderr.write(f"cluster: teardown: {error}\n")
    if found is None:
        sys.stderr.write(f"cluster: {failure}\n")
        return status or 1
    lines, ok = summarize(found, args)
    header = [
        f"Run {started}: `make cluster` (python benchmarks/cluster.py"
        + "".join(f" {a}" for a in argv)
        + f"); hosts: network namespaces on one bridge, {SUBNET}.",
        f"Machine: {machine()}; load average at the end {loadAverage()}.",
        "",
    ]
    output = Path(args.output)
    if not output.is_absolute():
        output = ROOT / output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text("\n".join(header + lines) + "\n", "utf-8")
    phase: Phases = found["phases"]
    output.write_text(
        json.dumps(
            {
                **{k: v for k, v in found.items() if k != "phases"},
                "phases": {
                    "before_kill": phase.beforeKill,
                    "until_ejection": phase.untilEjection,
                    "after_ejection": phase.afterEjection,
                    "last_after_kill_s": phase.lastAfterKill,
                },
                "machine": machine(),
                "started": started,
            },
            indent=1,
        )
        + "\n",
        "utf-8",
    )
    print("\n".join(header + lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
