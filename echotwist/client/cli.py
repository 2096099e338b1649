"""The echo client: C{python -m echotwist.client [options] host word [port]}.

By default it is one-shot: it connects, sends the word, reads until
exactly as many bytes have come back (an echo may arrive in pieces),
prints C{Received: <word>} and stops the reactor, as the seed's
C{TCPEchoClient4} does.  With C{-c/--count N} it is a ping: a header
line, N timed and verified probes and a C{ping}-style summary (see
L{echotwist.client.ping}); C{--count 0} pings until interrupted, and
Ctrl-C (or SIGTERM) ends a ping with its summary, exit 0 if any echo came
back.  C{--tls} and C{--udp} choose the transport in both modes.

Arguments and output only: the echo itself is L{echotwist.client.oneshot},
the probes L{echotwist.client.ping}, and connecting and the wording of
failures L{echotwist.client.connect}.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO, cast

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure

import echotwist
from echotwist.client.connect import describeFailure, streamEndpoint
from echotwist.client.oneshot import echoOver, udpEcho
from echotwist.client.ping import DatagramProber, StreamProber, runPing
from echotwist.client.pingstats import PingStats, headerLine, summaryLines
from echotwist.endpoints import parseHost
from echotwist.parsing import argumentType, parseCount, parsePort, parseSeconds

ECHO_PORT = 7
DEFAULT_TIMEOUT = 10.0


def buildParser() -> argparse.ArgumentParser:
    """The command line of C{python -m echotwist.client}."""
    parser = argparse.ArgumentParser(
        prog="python -m echotwist.client",
        # One usage line, as the seed prints, however many options there are.
        usage="%(prog)s [options] host word [port]",
        description=(
            "Send a word to an RFC 862 echo server and print what comes back,"
            " as TCPEchoClient4 does; with -c/--count, measure round trips"
            " like ping (-c 0: until Ctrl-C, which prints the summary)."
        ),
    )
    parser.add_argument("--version", action="version", version=echotwist.versionText())
    parser.add_argument(
        "host",
        type=argumentType(parseHost, "host"),
        help="server name or address (IPv4, or IPv6 with or without brackets)",
    )
    parser.add_argument("word", help="the text to send (UTF-8)")
    parser.add_argument(
        "port",
        nargs="?",
        type=argumentType(parsePort, "port"),
        default=ECHO_PORT,
        help=f"server port (default {ECHO_PORT}, the echo service)",
    )
    parser.add_argument(
        "-W",
        "--timeout",
        type=argumentType(
            lambda text: parseSeconds(text, "timeout", positive=True), "timeout"
        ),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=(
            "give up after this long, connecting included"
            f" (default {DEFAULT_TIMEOUT:g}); with --count, for each probe"
        ),
    )
    parser.add_argument(
        "-c",
        "--count",
        type=argumentType(lambda text: parseCount(text, "count", 0), "count"),
        default=None,
        metavar="N",
        help=(
            "ping mode: send N timed, verified probes and print statistics;"
            " 0: until interrupted (Ctrl-C prints the statistics)"
        ),
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=argumentType(lambda text: parseSeconds(text, "interval"), "interval"),
        default=None,
        metavar="SECONDS",
        help="ping mode: time from one probe to the next (default 1)",
    )
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument(
        "--udp", action="store_true", help="send datagrams instead of a TCP stream"
    )
    transport.add_argument("--tls", action="store_true", help="connect over TLS")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="with --tls, do not verify the server's certificate",
    )
    return parser


async def main(
    reactor: IReactorTime,
    argv: Sequence[str],
    connect: Callable[..., IStreamClientEndpoint] = streamEndpoint,
) -> None:
    """Run the client with C{argv} (without the program name).

    C{connect} makes the stream endpoint, as L{streamEndpoint} does.
    """
    parser = buildParser()
    args = parser.parse_args(list(argv))
    message = args.word.encode("utf-8", "surrogateescape")
    if args.insecure and not args.tls:
        parser.error("--insecure needs --tls")
    if args.interval is not None and args.count is None:
        parser.error("--interval needs --count")
    if args.interval is None:
        args.interval = 1.0
    if args.count is not None:
        if not message:
            parser.error("ping mode needs a non-empty word")
        await ping(reactor, args, message, connect)
        return
    try:
        if args.udp:
            prober = DatagramProber(cast(IReactorUDP, reactor), args.host, args.port)
            echoed = await udpEcho(reactor, prober, message, args.timeout)
        else:
            endpoint = _streamEndpoint(reactor, args, connect)
            echoed = await echoOver(reactor, endpoint, message, args.timeout)
    except CancelledError:
        interrupted()
    except Exception:
        fail(describeFailure(Failure(), args.host, args.port, args.timeout))
    writeText(sys.stdout, f"Received: {echoed.decode('utf-8', 'surrogateescape')}\n")


def writeText(stream: TextIO, text: str) -> None:
    """Write C{text}, escaping what the encoding of C{stream} cannot hold.

    A non-ASCII word on an ASCII-only output, or an argument byte that was
    not UTF-8, is shown as a backslash escape (as Python's standard error
    does) instead of ending the program with a traceback.
    """
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def _streamEndpoint(
    reactor: IReactorTime,
    args: argparse.Namespace,
    connect: Callable[..., IStreamClientEndpoint],
) -> IStreamClientEndpoint:
    """The TCP or TLS endpoint the parsed command line asks for."""
    return connect(
        cast(IReactorTCP, reactor),
        args.host,
        args.port,
        args.timeout,
        tls=args.tls,
        insecure=args.insecure,
    )


async def ping(
    reactor: IReactorTime,
    args: argparse.Namespace,
    message: bytes,
    connect: Callable[..., IStreamClientEndpoint] = streamEndpoint,
) -> None:
    """Ping mode: a header, probes, one line each, then the summary.

    Ended early (Ctrl-C or SIGTERM cancel it), it still prints the
    summary; either way it exits 1 if no echo came back, 0 otherwise.
    """
    if args.udp:
        prober: StreamProber | DatagramProber = DatagramProber(
            cast(IReactorUDP, reactor), args.host, args.port
        )
    else:
        prober = StreamProber(_streamEndpoint(reactor, args, connect))

    def output(line: str) -> None:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away (ping ... | head): stop quietly, as
            # Python's documentation advises, without a traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None

    stats = PingStats()
    transport = "udp" if args.udp else "tls" if args.tls else "tcp"
    try:
        await runPing(
            reactor,
            prober,
            host=args.host,
            message=message,
            count=args.count,
            interval=args.interval,
            timeout=args.timeout,
            output=output,
            stats=stats,
            header=headerLine(args.host, args.port, transport, len(message)),
        )
    except CancelledError:
        # ping's way: an interrupt ends the run, not the report.
        pass
    except Exception:
        fail(describeFailure(Failure(), args.host, args.port, args.timeout))
    for line in summaryLines(args.host, stats):
        output(line)
    if not stats.received:
        fail(f"no echo from {args.host} in {stats.sent} probes")


def interrupted() -> NoReturn:
    """The user interrupted (SIGINT) or the program was told to stop: exit 130."""
    sys.stderr.write("echotwist.client: interrupted\n")
    raise SystemExit(130)


def fail(message: str) -> NoReturn:
    """Print C{message} as one error line on standard error and exit 1."""
    sys.stderr.write(f"echotwist.client: error: {message}\n")
    raise SystemExit(1)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: start the reactor with L{task.react}."""
    arguments = sys.argv[1:] if argv is None else argv

    def start(reactor: IReactorCore) -> Deferred[None]:
        running = Deferred.fromCoroutine(main(cast(IReactorTime, reactor), arguments))

        def stopping() -> None:
            # A signal (Ctrl-C) stops the reactor before main finishes;
            # cancelling main lets it report what it has and exit 130,
            # where task.react alone would exit 0.
            if not running.called:
                running.cancel()

        reactor.addSystemEventTrigger("before", "shutdown", stopping)
        return running

    task.react(start)
    raise SystemExit(0)  # task.react always exits; this satisfies NoReturn.
