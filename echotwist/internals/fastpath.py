"""Fast paths through Twisted: the write path and the reactor's dispatch.

Write: L{sendNow}. Twisted's socket transports buffer every C{write()} and
send it on the next reactor iteration: each echo registers the socket for
writability and unregisters it again (two C{epoll_ctl} calls) and costs a
second dispatch through the reactor (Twisted issue #5303). asyncio sends
at once when its buffer is empty. L{sendNow} does the same for Twisted's
own TCP and UNIX server transports and its TCP client transport (the
load generator in C{echotwist.bench} sends through it too), and hands
everything else to the
transport's ordinary C{write()}: the part the kernel did not take, every
write made while anything is still buffered, and every transport it does
not know (TLS, test transports). Buffering, flow control (pausing the
registered producer when the buffer fills), half-close, loseConnection and
error reporting therefore all stay Twisted's own; only the empty-buffer
case skips the round trip through the reactor.

Dispatch: L{FastEPollReactor} (C{twistd -r fastepoll}).  The epoll
reactor runs every read or write event inside C{log.callWithLogger}, which
builds a logging context (the selectable's log prefix as the legacy log's
C{system}) for each event: about a third of the remaining Python time per
echo.  The fast reactor calls the same C{_doReadOrWrite} directly and logs
anything it raises, as C{callWithLogger} would, only without the
C{system} prefix.  Code that logs with C{twisted.logger} (as echotwist
does) is unaffected; legacy C{log.msg} calls made inside event handlers
lose the connection's prefix.

Memory: L{LeanServer} (installed on a listening port by L{useLeanServer}).
C{tcp.Server} stores three values per connection that follow from ones it
keeps anyway: the socket's bound C{fileno} method and the C{logstr} and
C{repstr} strings, about a quarter of what an idle connection costs
(docs/performance.md).  L{LeanServer} drops them and derives each when
asked: C{fileno()} from the socket, C{logPrefix()} and C{repr()} from the
protocol, session number and peer, with the same results.

This module and C{echotwist.internals.emfile} (accepting under descriptor
exhaustion) are the only ones that rely on Twisted internals; here: the concrete
transport classes, their C{socket}, C{dataBuffer}, C{_tempDataLen},
C{connected}, C{disconnecting}, C{_writeDisconnecting}, C{_aborting} and
C{TLS} attributes, the invariant that both buffers are empty exactly when
nothing is waiting to be sent, the epoll reactor's C{_poller},
C{_selectables} and C{_doReadOrWrite}, C{tcp.Port.transport} (the class
a port builds its connections with), C{tcp.Server}'s C{fileno},
C{logstr}, C{repstr}, C{sessionno}, C{hostname}, C{server} and
C{_getLogPrefix}, and C{Connection.connectionLost} deleting C{fileno}.
C{echotwist.test.test_fastpath} pins each of them, so a Twisted upgrade
that changes them fails a test rather than reordering bytes.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import tcp, unix
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IReactorFDSet,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure


class LeanServer(tcp.Server):
    """A C{tcp.Server} that keeps less per connection; it behaves the same.

    C{tcp.Server.__init__} stores the socket's bound C{fileno} method and
    formats the C{logstr} and C{repstr} strings for every connection: about
    210 bytes on a connection that may sit idle for hours.  This drops
    them as soon as they are made and derives each one when asked.
    Deriving costs a little time where Twisted asks: C{fileno()} once per
    reactor event (about 0.04 us more), C{logPrefix()} once per event under
    the default reactor's logging context (about 0.15 us more; not asked
    under C{-r fastepoll}), C{repr()} only when something prints the
    transport.
    """

    # The six positional arguments are the ones tcp.Port passes.
    def __init__(  # noqa: PLR0917
        self,
        sock: socket.socket,
        protocol: IProtocol,
        client: tuple[object, ...],
        server: tcp.Port,
        sessionno: int,
        reactor: IReactorFDSet,
    ) -> None:
        tcp.Server.__init__(self, sock, protocol, client, server, sessionno, reactor)
        # Calling Twisted's __init__ (rather than copying it) keeps every
        # other attribute exactly as Twisted sets it; the three values
        # derived below are dropped right after it made them.
        del self.fileno, self.logstr, self.repstr
        # The default reactor asks for the log prefix on every event, so
        # its protocol part is kept: usually the protocol's class name,
        # one string shared by every connection.  Formatting the rest
        # then costs about 0.15 us per event instead of 0.45 us.
        self.protocolPrefix: str = self._getLogPrefix(protocol)

    def fileno(self) -> int:
        """The socket's descriptor; -1 once closed, as Twisted answers then."""
        try:
            return self.socket.fileno()
        except AttributeError:
            # Connection.connectionLost has deleted the socket.
            return -1

    def logPrefix(self) -> str:
        """C{PROTOCOL,SESSION,HOST}, as C{tcp.Server} formats its C{logstr}."""
        return f"{self.protocolPrefix},{self.sessionno},{self.hostname}"

    def __repr__(self) -> str:
        """C{<PROTOCOL #SESSION on PORT>}, as C{tcp.Server} formats its C{repstr}."""
        name = self._protocolOrNone().__class__.__name__
        return f"<{name} #{self.sessionno} on {self.server._realPortNumber}>"

    def _protocolOrNone(self) -> IProtocol | None:
        # Connection.connectionLost deletes the protocol: a closed
        # connection's repr names none.
        try:
            return self.protocol
        except AttributeError:
            return None

    def connectionLost(self, reason: Failure) -> None:
        """Close as C{tcp.Server} does."""
        if hasattr(self, "socket"):
            # Connection.connectionLost deletes the bound fileno it stored
            # per connection; this class stored none, so give it one to
            # delete (it is gone again before the protocol is told).
            self.fileno = self.socket.fileno  # type: ignore[method-assign]
        tcp.Server.connectionLost(self, reason)


def useLeanServer(port: IListeningPort) -> bool:
    """Make C{port} serve its connections with L{LeanServer}, if it can.

    Only a C{tcp.Port} building plain C{tcp.Server} connections is
    changed: TCP over IPv4 or IPv6, ports adopted from a descriptor, and
    C{ssl:}/C{tls:} ports (Twisted runs TLS as a protocol over a plain TCP
    port).  UNIX ports, ports with a transport class of their own and
    other listeners are left as they are.  Returns whether C{port} was
    changed.
    """
    if not isinstance(port, tcp.Port) or port.transport is not tcp.Server:
        return False
    port.transport = LeanServer
    return True


# Exactly these classes (not subclasses, which may override write()) are
# known to buffer as described above.
# tcp.Client shares tcp.Server's Connection write path (pinned by the tests);
# LeanServer changes nothing on the write path.
_DIRECT: frozenset[type] = frozenset({tcp.Server, LeanServer, unix.Server, tcp.Client})


def canSendNow(transport: object) -> bool:
    """Whether L{sendNow} may bypass C{transport}'s buffer at this moment."""
    return type(transport) in _DIRECT and _isIdleOpen(cast(tcp.Server, transport))


def _isIdleOpen(connection: tcp.Server) -> bool:
    # Connected, nothing buffered, not closing, not TLS: what canSendNow
    # asks of a transport of a _DIRECT class.
    return bool(
        connection.connected
        and not connection.dataBuffer
        and not connection._tempDataLen
        and not connection.disconnecting
        and not connection._writeDisconnecting
        and not connection._aborting
        and not connection.TLS
    )


def sendNow(transport: ITransport, data: bytes) -> None:
    """Write C{data} to C{transport}, sending it at once if nothing is buffered.

    Equivalent to C{transport.write(data)} in what reaches the peer and in
    what order; what the kernel does not take at once is buffered by
    C{transport.write}, with its flow control.
    """
    # The exact-type test comes first and inline: every write of a
    # transport we do not know (TLS, aiotcp:) goes straight to write().
    connection = cast(tcp.Server, transport)
    if type(transport) not in _DIRECT or not _isIdleOpen(connection):
        transport.write(data)
        return
    try:
        sent = connection.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        # A reset or similar: Twisted's own write path meets the same error
        # on its next attempt and reports the lost connection its usual way.
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


# How a protocol sends: C{function(target, data)}.  A pair rather than a
# bound method so that choosing it costs a connection no new object.
Writer = tuple[Callable[[Any, bytes], None], object]


def writeThrough(transport: ITransport, data: bytes) -> None:
    """Write C{data} with C{transport.write}: the writer of last resort."""
    transport.write(data)


def writerFor(transport: ITransport) -> Writer:
    """How to send on C{transport}: C{function(target, data)}.

    A protocol looks this up once per connection, so each echo calls the
    sending function with no detour:
      - Twisted's TCP and UNIX transports: L{sendNow} on the transport;
      - a transport with a C{directWriter()} method (the C{aiotcp:}
        connection of L{echotwist.internals.aiotcp}): what it returns, the loop's own
        C{write} on the loop's own transport;
      - a transport with a C{write} of its own (set on the instance):
        L{writeThrough};
      - any other: its class's C{write} on the transport.
    Each sends exactly what C{transport.write} would, in the same order.
    """
    if type(transport) in _DIRECT:
        return sendNow, transport
    # Looked up on the class: a wrapping transport (TLS over TCP) forwards
    # unknown attributes to the transport it wraps, whose direct writer
    # would bypass the wrapper.
    directWriter: Callable[[ITransport], Writer] | None = getattr(
        type(transport), "directWriter", None
    )
    if directWriter is not None:
        return directWriter(transport)
    write: Callable[[Any, bytes], None] | None = getattr(type(transport), "write", None)
    if write is None or "write" in getattr(transport, "__dict__", ()):
        return writeThrough, transport
    return write, transport


class FastEPollReactor(EPollReactor):
    """The epoll reactor, without a logging context built per event."""

    _log = Logger()

    def doPoll(self, timeout: float | None) -> None:
        """Poll once and dispatch each ready descriptor directly."""
        try:
            # As EPollReactor.doPoll: at most as many events as descriptors.
            events = self._poller.poll(
                -1 if timeout is None else timeout, len(self._selectables)
            )
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        for fd, event in events:
            # A descriptor removed by an earlier event of this batch is
            # skipped, as EPollReactor does.
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                self._doReadOrWrite(selectable, fd, event)
            except BaseException:
                self._log.failure("Unhandled error dispatching {fd}", fd=fd)

    doIteration = doPoll


def install() -> None:
    """Install L{FastEPollReactor} as the reactor (C{twistd -r fastepoll})."""
    from twisted.internet.main import installReactor

    installReactor(FastEPollReactor())
