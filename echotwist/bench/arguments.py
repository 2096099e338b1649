"""The bench's command lines, and the checks its options need beyond parsing.

C{python -m echotwist.bench [options] host [port]} and C{python -m
echotwist.bench merge [--json] [--plot FILE] LOG...}.  Every number goes
through L{echotwist.parsing}, so a bad one is reported as everywhere else
in echotwist (C{invalid count '0': must be 1 or more}).  Also the plain
decisions made from the options: which source addresses to bind, how
connections are shared among load processes, and which options a load
process is given.  Decisions only, no I/O beyond checking that a
directory can take a file.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Sequence
from functools import partial

import echotwist
from echotwist.endpoints import parseHost
from echotwist.parsing import (
    argumentType,
    parseCount,
    parsePort,
    parseReal,
)

ECHO_PORT = 7
MODES = ("pingpong", "connect", "hold", "stream")
# The open loop wakes this long before a send is due and spins the rest
# on the reactor: a timer's wake-up is late by the kernel's scheduling,
# which would otherwise count in every corrected latency.  On the 2-CPU
# VM this was measured on, wake-ups after a 0.5 ms sleep came 50 us late
# at the median and 150 us at p90, with a tail past 0.5 ms; at 2,000
# sends/s a spin of 100 us left a send-delay p99 of 87 us, 300 us one
# of 28 us.
SPIN = 300e-6
# Stream mode's defaults: chunks of 16 KiB, 64 of them (1 MiB) in flight
# per connection, enough to keep a loopback or LAN path full.
STREAM_SIZE = 16384
STREAM_PIPELINE = 64
# UDP: a datagram whose echo is not back after this long is lost.
UDP_TIMEOUT = 1.0
TCP_TIMEOUT = 5.0
# Each source address gets at most this many held connections.  Linux
# gives one address ~28,000 ephemeral ports (32768-60999), but bind() to
# port 0, which a bound connect does, looks first among the ports of one
# parity, half of them; once those are taken every further bind scans all
# of them before trying the rest, and set-up slows to a crawl (measured:
# about 90 connections/s at 16,000 per address).  So stay well within half.
PER_SOURCE = 12500
# Connect mode rotates over this many source addresses so that the
# TIME_WAIT sockets its closes leave behind do not use up one address.
CONNECT_SOURCES = 8
MAX_SIZE = 1 << 20
# The largest UDP payload over IPv4.
UDP_MAX_SIZE = 65507

# A duration: seconds, or a number with a unit as wrk and tcpkali take it.
_DURATION = re.compile(r"\s*([0-9.eE+-]+?)\s*(us|ms|s|m|h)?\s*")
_UNITS = {None: 1.0, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parseDuration(text: str, what: str, positive: bool = False) -> float:
    """C{text} as seconds: C{1.5}, C{500ms}, C{1s}, C{2m}, C{1h}, C{250us}.

    @raise ValueError: C{invalid WHAT 'TEXT': ...}, in the words of
        L{echotwist.parsing}.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid {what} {text!r}: not a number of seconds"
            " or a duration such as 500ms, 10s, 2m"
        )
    number, unit = match.groups()
    value = parseReal(number, what, 0.0, above=positive) * _UNITS[unit]
    if not math.isfinite(value):
        raise ValueError(f"invalid {what} {text!r}: too large")
    return value


def parseTarget(text: str) -> tuple[str, int | None]:
    """A target as C{HOST}, C{HOST:PORT}, C{[IPv6]} or C{[IPv6]:PORT}.

    A bare IPv6 address (more than one colon) has no port in it.

    @raise ValueError: a bad host or port, in L{echotwist.parsing}'s words.
    """
    if text.startswith("[") and "]:" in text:
        host, _, port = text.rpartition(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        return parseHost(text), None
    return parseHost(host), parsePort(port)


_port = argumentType(parsePort, "port")
_atLeastOne = argumentType(partial(parseCount, lowest=1), "count")
_size = argumentType(partial(parseCount, what="size", lowest=1), "size")
_pipeline = argumentType(partial(parseCount, what="pipeline", lowest=1), "pipeline")
_firstSource = argumentType(parseCount, "count")
_duration = argumentType(
    partial(parseDuration, what="duration", positive=True), "duration"
)
_warmup = argumentType(partial(parseDuration, what="warmup"), "warmup")
_timeout = argumentType(
    partial(parseDuration, what="timeout", positive=True), "timeout"
)
_interval = argumentType(
    partial(parseDuration, what="interval", positive=True), "interval"
)
_spin = argumentType(partial(parseDuration, what="spin"), "spin")
# Not parseRate: its 0 means "no limit", and the bench has no such rate (a
# run without --rate is closed-loop).
_rate = argumentType(partial(parseReal, what="rate", above=True), "rate")


class UsageError(Exception):
    """Options that parse but do not fit together."""


class _TargetParser(argparse.ArgumentParser):
    """A parser whose C{host} may carry the port (C{HOST:PORT})."""

    def parse_known_args(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, then take the port out of C{HOST:PORT} (given once only)."""
        parsed, rest = super().parse_known_args(args, namespace)
        target = getattr(parsed, "host", None)
        if isinstance(target, tuple):
            host, port = target
            if port is not None and parsed.port is not None:
                self.error("the port is given twice (HOST:PORT and PORT)")
            parsed.host = host
            parsed.port = port if port is not None else parsed.port
        if getattr(parsed, "port", ECHO_PORT) is None:
            parsed.port = ECHO_PORT
        if hasattr(parsed, "mode"):
            stream = parsed.mode == "stream"
            if parsed.size is None:
                parsed.size = STREAM_SIZE if stream else 512
            if parsed.pipeline is None:
                parsed.pipeline = STREAM_PIPELINE if stream else 1
            if parsed.timeout is None:
                parsed.timeout = UDP_TIMEOUT if parsed.udp else TCP_TIMEOUT
        return parsed, rest


def buildParser() -> argparse.ArgumentParser:
    """The command line of C{python -m echotwist.bench}."""
    parser = _TargetParser(
        prog="python -m echotwist.bench",
        # Abbreviations would slip past the parent's filtering of the
        # options it handles itself (--proc, --hl) into every child.
        allow_abbrev=False,
        description=(
            "Load an RFC 862 echo server and report verified echoes/s and"
            " latency percentiles (one line a second when the output is not a"
            " terminal).  'python -m echotwist.bench merge --help' for merging"
            " interval logs, 'python -m echotwist.bench compare --help' for"
            " comparing two JSON reports."
        ),
    )
    parser.add_argument("--version", action="version", version=echotwist.versionText())
    parser.add_argument(
        "host",
        type=argumentType(parseTarget, "host"),
        metavar="host[:port]",
        help="server name or address (an IPv6 one with or without brackets),"
        " with the port or without (127.0.0.1:5000, [::1]:5000)",
    )
    parser.add_argument("port", nargs="?", type=_port, default=None, help="default 7")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="pingpong",
        help="pingpong (default): echo on open connections; connect:"
        " connect/echo/close per transaction (--rate: new connections per"
        " second); hold: open and hold connections; stream: keep 1 MiB in"
        " flight per connection and report the bandwidth",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS (pip install 'echotwist[tls]'); the certificate"
        " is verified for the host unless --insecure",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="with --tls, do not verify the server's certificate",
    )
    parser.add_argument(
        "--udp",
        action="store_true",
        help="pingpong over UDP: one socket per connection, each datagram"
        " verified; a datagram not echoed within --timeout (default 1 s) is"
        " counted lost",
    )
    parser.add_argument(
        "-c", "--connections", type=_atLeastOne, default=50,
        help="connections (slots in connect mode; default 50)",
    )  # fmt: skip
    parser.add_argument(
        "-s", "--size", type=_size, default=None,
        help="bytes per message (default 512; stream: 16384)",
    )  # fmt: skip
    parser.add_argument(
        "-d", "--duration", type=_duration, default=5.0,
        help="time measured, in seconds or with a unit: 1.5, 500ms, 10s, 2m"
        " (hold: time held; default 5)",
    )  # fmt: skip
    parser.add_argument(
        "-w", "--warmup", type=_warmup, default=1.0,
        help="load before measuring, in seconds or with a unit (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "-P", "--pipeline", type=_pipeline, default=None,
        help="messages in flight per connection (default 1; stream: 64)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=_rate, default=None,
        help="open loop: echoes/s in all (connect mode: new connections/s),"
        " sent on schedule; latency is measured from when each was due",
    )  # fmt: skip
    parser.add_argument(
        "--spin", type=_spin, default=SPIN,
        help="open loop: wake this long before each send and busy-wait the"
        " rest, for send times precise to microseconds (default 300us; 0:"
        " sleep to the send time, sparing the CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=_atLeastOne, default=1,
        help="run K load processes and merge their histograms",
    )  # fmt: skip
    parser.add_argument(
        "--sources", type=_atLeastOne, default=None,
        help="source addresses to spread over (127.0.0.1 up; loopback"
        " targets only; default: enough for the mode)",
    )  # fmt: skip
    # Internal: a --processes child in hold mode starts at this source
    # address (127.0.0.1 + N), so that the children's sources differ.
    parser.add_argument(
        "--first-source", type=_firstSource, default=0, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--timeout", type=_timeout, default=None,
        help="connect timeout, in seconds or with a unit (default 5);"
        " with --udp, how long an echo may take before it is lost (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--interval", type=_interval, default=1.0, help=argparse.SUPPRESS
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (with target, parameters and start time)",
    )
    output.add_argument(
        "--csv", action="store_true", help="print a CSV header line and one row"
    )
    parser.add_argument(
        "-L",
        "--latency",
        action="store_true",
        help="also print the detailed percentile spectrum (as wrk2 -L)",
    )
    parser.add_argument("--hlog", metavar="FILE", help="write an HDR interval log")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the latency distribution and latency over time",
    )
    # Internal: a --processes child prints JSON with its histograms.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def buildMergeParser() -> argparse.ArgumentParser:
    """The command line of C{python -m echotwist.bench merge}."""
    parser = argparse.ArgumentParser(
        prog="python -m echotwist.bench merge",
        allow_abbrev=False,
        description="Merge HDR interval logs of runs made at the same time.",
    )
    parser.add_argument("logs", nargs="+", metavar="FILE")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument(
        "--csv", action="store_true", help="print a CSV header line and one row"
    )
    parser.add_argument(
        "-L",
        "--latency",
        action="store_true",
        help="also print the detailed percentile spectrum (as wrk2 -L)",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw the latency distribution"
    )
    return parser


def buildCompareParser() -> argparse.ArgumentParser:
    """The command line of C{python -m echotwist.bench compare}."""
    parser = argparse.ArgumentParser(
        prog="python -m echotwist.bench compare",
        allow_abbrev=False,
        description=(
            "Compare two results written with --json: rates, percentiles,"
            " mean, errors, side by side with B's change from A."
        ),
    )
    parser.add_argument("before", metavar="A.json")
    parser.add_argument("after", metavar="B.json")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def parametersOf(args: argparse.Namespace) -> dict[str, object]:
    """The options a run was made with, for its JSON report."""
    return {
        "mode": args.mode,
        "connections": args.connections,
        "size": args.size,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "pipeline": args.pipeline,
        "rate": args.rate,
        "processes": args.processes,
        "sources": args.sources,
        "timeout_s": args.timeout,
        "spin_s": args.spin,
        "tls": args.tls,
        "udp": args.udp,
    }


def rejectUnknownOptions(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Name an unknown long option (C{--proc}) as the usage error.

    Without this, argparse takes the unknown option's value for the host
    and reports a confusing error about the port instead.
    """
    # argparse has no public list of its option strings.
    known = {name for action in parser._actions for name in action.option_strings}
    for argument in argv:
        if argument == "--":
            return
        name = argument.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            parser.error(f"unrecognized option {name}")


def checkOptions(args: argparse.Namespace) -> None:
    """Reject option combinations that make no sense.

    @raise UsageError: saying which option and why.
    """
    if args.rate is not None and args.mode not in ("pingpong", "connect"):
        raise UsageError("--rate applies to --mode pingpong and connect only")
    if args.udp and args.mode != "pingpong":
        raise UsageError("--udp applies to --mode pingpong only")
    if args.udp and args.tls:
        raise UsageError("--udp and --tls do not go together")
    if args.insecure and not args.tls:
        raise UsageError("--insecure needs --tls")
    if args.udp and args.size > UDP_MAX_SIZE:
        raise UsageError(f"--size: at most {UDP_MAX_SIZE} with --udp")
    if args.size > MAX_SIZE:
        raise UsageError(f"--size: at most {MAX_SIZE}")
    if args.processes > args.connections:
        raise UsageError("--processes: at most one process per connection")
    checkPlot(args.plot)
    if args.hlog is not None:
        checkDirectory(args.hlog, "--hlog")


def checkPlot(path: str | None) -> None:
    """Reject a C{--plot} file that is not a .png or cannot be written."""
    if path is None:
        return
    if not path.lower().endswith(".png"):
        raise UsageError("--plot: the file name must end in .png")
    checkDirectory(path, "--plot")


def checkDirectory(path: str, option: str) -> None:
    """Reject C{path} before the run if its directory cannot take a new file.

    A run can last long; finding out only when it is written would lose it.
    """
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise UsageError(f"{option}: no directory {directory!r}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: cannot write in {directory!r}")


def sourceAddresses(
    address: str, mode: str, connections: int, requested: int | None, first: int = 0
) -> tuple[str | None, ...]:
    """The local addresses to spread connections over.

    Only for IPv4 loopback targets, where every 127.0.0.0/8 address is
    local: hold mode needs one per L{PER_SOURCE} connections, connect
    mode spreads over L{CONNECT_SOURCES}, pingpong needs no binding.
    The addresses start at 127.0.0.1 + C{first}.  C{None} means "let the
    kernel choose".

    @raise UsageError: C{--sources} for a target that is not IPv4
        loopback, or more addresses than 127.0.0.1 + 65535.
    """
    try:
        loopback = ipaddress.IPv4Address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        if requested is not None:
            raise UsageError("--sources needs an IPv4 loopback target (127.x.x.x)")
        return (None,)
    if requested is None:
        if mode == "hold":
            requested = math.ceil(connections / PER_SOURCE)
        elif mode == "connect":
            requested = CONNECT_SOURCES
        else:
            return (None,)
    if first + requested > 1 << 16:
        raise UsageError("--sources: at most 65536")
    start = ipaddress.IPv4Address("127.0.0.1") + first
    return tuple(str(start + i) for i in range(requested))


def splitEvenly(total: int, parts: int) -> list[int]:
    """C{total} split into C{parts} whole shares differing by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def holdSources(shares: Sequence[int], requested: int | None) -> list[tuple[int, int]]:
    """Hold mode with C{--processes}: each child's first source and count.

    Ephemeral ports are allotted per source address, so children that
    shared one would together run out of its ~28,000 ports: each child
    gets sources of its own (one per L{PER_SOURCE} of its share, or its
    part of C{--sources}).  Only when C{--sources} names fewer addresses
    than there are children do children share them, one each in turn.
    """
    if requested is not None and requested < len(shares):
        return [(i % requested, 1) for i in range(len(shares))]
    if requested is None:
        counts = [math.ceil(share / PER_SOURCE) for share in shares]
    else:
        counts = splitEvenly(requested, len(shares))
    firsts = [sum(counts[:i]) for i in range(len(counts))]
    return list(zip(firsts, counts, strict=True))


def childArguments(argv: Sequence[str], drop: Sequence[str] = ()) -> list[str]:
    """C{argv} without the options the parent handles itself (and C{drop})."""
    dropValue = {"--processes", "--connections", "-c", "--rate", "--hlog", "--plot"}
    dropValue.update(drop)
    dropFlag = {"--json", "--csv", "--latency", "-L"}
    result: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in dropValue:
            skip = "=" not in argument
            continue
        if name in dropFlag:
            continue
        result.append(argument)
    return result
