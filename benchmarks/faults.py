"""Fault injection under load: one table of what echotwist --workers survives.

Runs C{twistd -n --pidfile= echo --workers 2} under an open-loop load
(C{python -m echotwist.bench -c 20 --rate R}) with a prober beside it
(C{benchmarks/prober.py}: a new connection every 20 ms), and injects, one
scenario after another, each on a fresh server:

  - C{kill}: SIGKILL of the longest-running worker every 10 s for 60 s;
  - C{sighup}: SIGHUP to the supervisor every 10 s for 60 s;
  - C{net}: between two network namespaces made here (a veth pair,
    10.203.0.0/30): 1 % and 5 % packet loss, a 2 s blackout (with the
    default and with a 1 s C{--idle-timeout}), and a token-bucket
    bandwidth limit (C{tbf}), fitting and overloaded;
  - C{soak}: 10 minutes at a steady rate with the server's memory
    (supervisor plus workers, summed) sampled every 10 s.

It prints one table (a markdown pipe table) with notes, and writes it
with the details to C{build/faults.md} and C{build/faults.json}; the
servers' logs go to C{build/faults/}.  Exit status 0 when every scenario
passed, 1 when any failed, 2 when it cannot run here (not Linux, not
root, no C{ip}), 130 after Ctrl-C (the table of what ran is printed).

Run it as C{make faults} (C{make faults FAULTS_ARGS=--quick} for a short
run), or from the repository root::

    .venv/bin/python benchmarks/faults.py [--quick] [--scenarios kill,sighup,net,soak]

What it creates (namespaces, a veth pair, firewall rules and qdiscs
inside those namespaces, processes) is named after its pid, and removed
on the way out, also after an error, Ctrl-C or SIGTERM.  It installs
C{iptables} with apt-get when missing (the network scenarios need it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

if not __package__:
    # Run as a script (make faults): make the source tree's benchmarks
    # package importable, as it is for the tests run from the tree's root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.control import loadAverage, machine
from benchmarks.faultprocesses import ROOT, Children
from benchmarks.faultresults import Row, formatNotes, formatTable
from benchmarks.faultscenarios import (
    Settings,
    networkFaults,
    runKills,
    runNetwork,
    runReloads,
    runSoak,
)
from benchmarks.netfaults import CommandFailed, NamespacePair, ensureTools

SCENARIOS = ("kill", "sighup", "net", "soak")


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short durations for development (about 2 minutes)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--soak-seconds", type=float, help="length of the soak (default 600; quick 30)"
    )
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="echoes/s on loopback (2000)"
    )
    parser.add_argument(
        "--net-rate",
        type=float,
        default=500.0,
        help="echoes/s between the namespaces (500)",
    )
    parser.add_argument(
        "--max-slope",
        type=float,
        default=64.0,
        help="the soak fails if RSS grows faster, in KiB/min (64)",
    )
    parser.add_argument(
        "--output",
        default="build/faults.json",
        help="the JSON file; the table goes beside it as .md",
    )
    args = parser.parse_args(list(argv))
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown or not chosen:
        parser.error(f"--scenarios: choose from {','.join(SCENARIOS)}")
    args.scenarios = [name for name in SCENARIOS if name in chosen]
    return args


def refusal(platform: str, euid: int, hasIp: bool) -> str | None:
    """Why the script cannot run here, or None if it can."""
    if not platform.startswith("linux"):
        return f"needs Linux (network namespaces, /proc), not {platform}"
    if euid != 0:
        return "needs root (network namespaces, iptables, tc, apt-get)"
    if not hasIp:
        return "needs the ip command (iproute2)"
    return None


def settingsFrom(args: argparse.Namespace, logDir: Path) -> Settings:
    """The durations and rates: full, or short with C{--quick}."""
    quick: dict[str, Any] = {}
    if args.quick:
        quick = {
            "window": 15.0,
            "period": 5.0,
            "soakSeconds": 30.0,
            "soakInterval": 2.0,
            "soakWarmup": 6.0,
            "baselineSeconds": 3.0,
            "lossSeconds": 4.0,
            "blackoutRun": 8.0,
            "blackoutAt": 2.0,
            "bandwidthSeconds": 4.0,
        }
    if args.soak_seconds is not None:
        quick["soakSeconds"] = args.soak_seconds
        # Short soaks keep a fifth of their length as warm-up at most.
        quick["soakWarmup"] = min(120.0, args.soak_seconds / 5)
    return Settings(
        logDir=logDir,
        rate=args.rate,
        netRate=args.net_rate,
        maxSlope=args.max_slope,
        **quick,
    )


class Interrupted(BaseException):
    """SIGTERM or SIGHUP to this script: stop, clean up, report what ran."""


def raiseInterrupted(number: int, frame: FrameType | None) -> None:
    """A signal handler: turn the signal into L{Interrupted}."""
    raise Interrupted(number)


def runAll(
    scenarios: Sequence[str],
    settings: Settings,
    children: Children,
    rows: list[Row],
    pairs: list[NamespacePair],
) -> None:
    """Run the chosen scenarios in order, appending one row each to C{rows}.

    A scenario that fails to run (the server does not start, a command
    fails) becomes a row that says so; the next one runs anyway.
    """

    def attempt(name: str, scenario: Callable[[], Row]) -> None:
        try:
            rows.append(scenario())
        except (RuntimeError, OSError, CommandFailed, KeyError, ValueError) as e:
            rows.append(Row(name, problems=[f"did not run: {e}".splitlines()[0]]))
        finally:
            # Anything a scenario left running goes before the next starts.
            children.killAll()
        print(f"  {rows[-1].scenario}: {rows[-1].verdict}", flush=True)

    for scenario in scenarios:
        if scenario == "kill":
            attempt("kill -9", lambda: runKills(children, settings))
        elif scenario == "sighup":
            attempt("SIGHUP", lambda: runReloads(children, settings))
        elif scenario == "soak":
            attempt("soak", lambda: runSoak(children, settings))
        elif scenario == "net":
            runNetworkScenarios(settings, children, rows, pairs, attempt)


def runNetworkScenarios(
    settings: Settings,
    children: Children,
    rows: list[Row],
    pairs: list[NamespacePair],
    attempt: Callable[[str, Callable[[], Row]], None],
) -> None:
    """Make the namespaces, then run every network fault between them."""
    faults = networkFaults(settings)
    try:
        installed = ensureTools()
        pair = NamespacePair()
        pairs.append(pair)
        pair.create()
    except CommandFailed as e:
        for fault in faults:
            rows.append(Row(fault.name, problems=[f"did not run: {e}"]))
        return
    notes = [f"installed with apt-get: {', '.join(installed)}"] if installed else []
    # Without a usable iptables the loss and blackout rows cannot run; the
    # rate limits (tc) still can.
    firewall: str | None = None
    try:
        pair.chooseIptables()
        notes.append(f"firewall: {pair.iptables}")
    except CommandFailed as e:
        firewall = str(e)
    if not pair.hasNetem():
        notes.append(
            "no delay or reordering: this kernel has no netem qdisc (docs/faults.md)"
        )
    for index, fault in enumerate(faults):
        needsFirewall = fault.blackout or fault.lossProbability is not None
        if needsFirewall and firewall is not None:
            rows.append(Row(fault.name, problems=[f"did not run: {firewall}"]))
        else:
            attempt(fault.name, partial(runNetwork, children, settings, pair, fault))
        if index == 0:
            rows[-1].notes += notes


def codeState() -> str:
    """The commit the servers run from, and how many files differ from it.

    Read when the run starts: the servers run from the working tree, which
    may hold changes not yet committed.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "echotwist", "twisted"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=ROOT,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head}" + (
        f" with {len(changed)} files under echotwist/ or twisted/ uncommitted"
        if changed
        else ""
    )


def writeOutputs(
    rows: Sequence[Row],
    args: argparse.Namespace,
    argv: Sequence[str],
    started: str,
    code: str,
) -> list[str]:
    """Write the JSON and the markdown table; return the table and notes."""
    table = formatTable(rows)
    notes = formatNotes(rows)
    output = Path(args.output)
    if not output.is_absolute():
        output = ROOT / output
    output.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/faults.py" + "".join(f" {a}" for a in argv)
    header = [
        f"Run {started}: `{command}`; code: {code}.",
        f"Machine: {machine()}; load average at the end {loadAverage()}.",
    ]
    output.with_suffix(".md").write_text(
        "\n".join([*header, "", *table, "", *notes]) + "\n", encoding="utf-8"
    )
    output.write_text(
        json.dumps(
            {
                "started": started,
                "command": command,
                "machine": machine(),
                "code": code,
                "rows": [row.toJSON() for row in rows],
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    return [*header, "", *table, "", *notes]


def main(argv: Sequence[str]) -> int:
    """Check the machine, run the scenarios, clean up, print and write the table."""
    args = parseArguments(argv)
    reason = refusal(sys.platform, os.geteuid(), shutil.which("ip") is not None)
    if reason is not None:
        sys.stderr.write(f"faults.py: {reason}\n")
        return 2
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    code = codeState()
    logDir = ROOT / "build" / "faults"
    logDir.mkdir(parents=True, exist_ok=True)
    settings = settingsFrom(args, logDir)
    children = Children()
    pairs: list[NamespacePair] = []
    rows: list[Row] = []
    interrupted: str | None = None
    previous = {
        number: signal.signal(number, raiseInterrupted)
        for number in (signal.SIGTERM, signal.SIGHUP)
    }
    # Ctrl-C stops the run even where SIGINT came in ignored (a background
    # job of a shell script).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"faults: {', '.join(args.scenarios)}; servers' logs in {logDir}", flush=True)
    try:
        runAll(args.scenarios, settings, children, rows, pairs)
    except KeyboardInterrupt:
        interrupted = "SIGINT"
    except Interrupted as e:
        interrupted = signal.Signals(e.args[0]).name
    finally:
        # Teardown must finish: no signal may cut it short.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)
        children.killAll()
        for pair in pairs:
            for error in pair.destroy():
                sys.stderr.write(f"faults.py: cleanup: {error}\n")
        for number, handler in previous.items():
            signal.signal(number, handler)
    print("\n".join(writeOutputs(rows, args, argv, started, code)))
    if interrupted is not None:
        print(f"faults.py: interrupted by {interrupted}; the table shows what ran")
        return 130
    return 0 if all(not row.problems for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
