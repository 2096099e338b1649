"""The echo client: C{python -m echotwist.client [options] host word [port]}.

By default it is one-shot: it connects, sends the word, reads until
exactly as many bytes have come back (an echo may arrive in pieces),
prints C{Received: <word>} and stops the reactor, as the seed's
C{TCPEchoClient4} does.  With C{--count N} it is a ping: N timed and
verified probes and a C{ping}-style summary (see L{echotwist.client.ping}).
C{--tls} and C{--udp} choose the transport in both modes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO, TypeVar, cast

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import (
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
    TCPTimedOutError,
    UnknownHostError,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

from echotwist.client.ping import (
    DatagramProber,
    EchoError,
    StreamProber,
    endedEarly,
    runPing,
    streamEndpoint,
)
from echotwist.client.pingstats import PingStats, summaryLines

ECHO_PORT = 7

N = TypeVar("N", int, float)
DEFAULT_TIMEOUT = 10.0


class EchoClient(Protocol):
    """Send one message and collect exactly as many bytes back."""

    factory: EchoClientFactory

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.count = 0

    def connectionMade(self) -> None:
        """Send the message; an empty one is already fully echoed."""
        assert self.transport is not None
        message = self.factory.message
        if message:
            self.transport.write(message)
        else:
            self._finish()

    def dataReceived(self, data: bytes) -> None:
        """Collect echoed bytes until as many as were sent are back."""
        self.received.append(data)
        self.count += len(data)
        if self.count >= len(self.factory.message):
            self._finish()

    def _finish(self) -> None:
        echoed = b"".join(self.received)
        assert self.transport is not None
        self.transport.loseConnection()
        expected = self.factory.message
        if echoed != expected:
            self.factory.echoFailed(
                EchoError(
                    f"the echo differs from what was sent ({len(echoed)} bytes"
                    f" back for {len(expected)} sent)"
                )
            )
        else:
            self.factory.echoDone(echoed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Report a connection that ended before the whole echo came back."""
        why = endedEarly(reason, self.count, len(self.factory.message))
        self.factory.echoFailed(EchoError(why))


class EchoClientFactory(ClientFactory[EchoClient]):
    """Make one L{EchoClient} for C{message}; C{deferred} fires with the echo.

    C{deferred} fires once: with the echoed bytes, or with an
    L{EchoError} (or the connection failure) when the echo fails.
    """

    protocol = EchoClient
    noisy = False

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.deferred: Deferred[bytes] = Deferred()
        self.connected: EchoClient | None = None

    def buildProtocol(self, addr: IAddress | None) -> EchoClient | None:
        """Build the one L{EchoClient} and remember it."""
        self.connected = super().buildProtocol(addr)
        return self.connected

    def echoDone(self, echoed: bytes) -> None:
        """Fire C{deferred} with the echo, unless it already fired."""
        if not self.deferred.called:
            self.deferred.callback(echoed)

    def echoFailed(self, error: Exception | Failure) -> None:
        """Fire C{deferred} with C{error}, unless it already fired."""
        if not self.deferred.called:
            self.deferred.errback(error)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """The connection could not be made (C{connectTCP} users)."""
        self.echoFailed(reason)


def describeFailure(failure: Failure, host: str, port: int, timeout: float) -> str:
    """Turn why an echo failed into one line for the user."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if failure.check(EchoError):
        return str(failure.value)
    if failure.check(ConnectionRefusedError):
        return f"connection refused by {where}"
    if failure.check(DNSLookupError, UnknownHostError):
        return f"unknown host {host!r}"
    if failure.check(TimeoutError, TCPTimedOutError, ConnectTimeoutError):
        return f"no echo from {where} within {timeout:g} s"
    if failure.check(NoRouteError):
        return f"no route to {where}"
    return f"cannot echo with {where}: {failure.getErrorMessage()}"


def echo(
    reactor: IReactorTime,
    host: str,
    port: int,
    message: bytes,
    timeout: float,
    *,
    endpoint: IStreamClientEndpoint | None = None,
) -> Deferred[bytes]:
    """Connect to C{host}:C{port}, echo C{message}, return the echoed bytes.

    Host names and IPv4/IPv6 literals are accepted (L{HostnameEndpoint}).
    The whole exchange, connecting included, must finish within C{timeout}
    seconds, or the result fails with L{TimeoutError}.  C{endpoint}, when
    given, is how to connect (a TLS endpoint, say); by default plain TCP.
    """
    if endpoint is None:
        endpoint = streamEndpoint(cast(IReactorTCP, reactor), host, port, timeout)
    return echoOver(reactor, endpoint, message, timeout)


def echoOver(
    clock: IReactorTime,
    endpoint: IStreamClientEndpoint,
    message: bytes,
    timeout: float,
) -> Deferred[bytes]:
    """Echo C{message} over a connection from C{endpoint}, within C{timeout} s.

    On timeout the connection attempt is cancelled, or the connection
    aborted, and the result fails with L{TimeoutError}.
    """
    factory = EchoClientFactory(message)
    connecting = endpoint.connect(factory)
    connecting.addErrback(factory.echoFailed)

    def cancel(d: Deferred[bytes]) -> None:
        # Fail with CancelledError first, so that addTimeout turns it into
        # TimeoutError; the connection attempt's own cancellation error
        # that follows is then ignored.
        factory.echoFailed(CancelledError())
        connecting.cancel()
        protocol = factory.connected
        if protocol is not None and protocol.transport is not None:
            cast(ITCPTransport, protocol.transport).abortConnection()

    result: Deferred[bytes] = Deferred(cancel)
    factory.deferred.chainDeferred(result)
    return result.addTimeout(timeout, clock)


def _numberArgument(
    convert: Callable[[str], N],
    what: str,
    accept: Callable[[N], bool],
    requirement: str,
) -> Callable[[str], N]:
    """An argparse C{type=} that converts with C{convert} and checks C{accept}.

    A bad value is reported as C{invalid WHAT 'TEXT'[: REQUIREMENT]}.
    """

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: must be {requirement}"
            )
        return value

    parse.__name__ = what
    return parse


def _decimal(text: str) -> int:
    return int(text, 10)


_INFINITY = float("inf")

#: A server port: a number from 1 to 65535.
parsePort = _numberArgument(_decimal, "port", lambda p: 1 <= p <= 65535, "1 to 65535")
#: A timeout: a positive, finite number of seconds.
parseTimeout = _numberArgument(float, "timeout", lambda t: 0 < t < _INFINITY, "> 0")
#: A probe count: a positive whole number.
parseCount = _numberArgument(_decimal, "count", lambda c: c >= 1, ">= 1")
#: A probe interval: zero or more seconds.
parseInterval = _numberArgument(float, "interval", lambda i: 0 <= i < _INFINITY, ">= 0")


def buildParser() -> argparse.ArgumentParser:
    """The command line of C{python -m echotwist.client}."""
    parser = argparse.ArgumentParser(
        prog="python -m echotwist.client",
        # One usage line, as the seed prints, however many options there are.
        usage="%(prog)s [options] host word [port]",
        description=(
            "Send a word to an RFC 862 echo server and print what comes back,"
            " as TCPEchoClient4 does; with --count, measure round trips"
            " like ping."
        ),
    )
    parser.add_argument("host", help="server name or address (IPv4 or IPv6)")
    parser.add_argument("word", help="the text to send (UTF-8)")
    parser.add_argument(
        "port",
        nargs="?",
        type=parsePort,
        default=ECHO_PORT,
        help=f"server port (default {ECHO_PORT}, the echo service)",
    )
    parser.add_argument(
        "--timeout",
        type=parseTimeout,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=(
            "give up after this long, connecting included"
            f" (default {DEFAULT_TIMEOUT:g}); with --count, for each probe"
        ),
    )
    parser.add_argument(
        "--count",
        type=parseCount,
        default=None,
        metavar="N",
        help="ping mode: send N timed, verified probes and print statistics",
    )
    parser.add_argument(
        "--interval",
        type=parseInterval,
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
            echoed = await udpEcho(reactor, args.host, args.port, message, args.timeout)
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


async def udpEcho(
    reactor: IReactorTime, host: str, port: int, message: bytes, timeout: float
) -> bytes:
    """Echo C{message} as one datagram; the reply must match within C{timeout}."""
    prober = DatagramProber(cast(IReactorUDP, reactor), host, port)
    try:
        await prober.ready().addTimeout(timeout, reactor)
        echoed = await prober.probe(message).addTimeout(timeout, reactor)
    finally:
        prober.close()
    if echoed != message:
        raise EchoError(
            f"the echo differs from what was sent ({len(echoed)} bytes"
            f" back for {len(message)} sent)"
        )
    return echoed


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
    """Ping mode: probes, one line each, then the summary; exit 1 if none came back."""
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
        )
    except CancelledError:
        for line in summaryLines(args.host, stats):
            output(line)
        interrupted()
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
