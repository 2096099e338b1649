"""Server transports that keep less per connection and send at once.

C{tcp.Server} stores three values per connection that follow from ones
it keeps anyway: the socket's bound C{fileno} method and the C{logstr}
and C{repstr} strings, about a quarter of what an idle connection costs
(docs/performance.md).  L{LeanServer} drops them and derives each when
asked: C{fileno()} from the socket, C{logPrefix()} and C{repr()} from the
protocol, session number and peer, with the same results.  Its C{write},
like that of L{SendingUNIXServer}, is L{writeAtOnce}
(L{echotwist.internals.writepath}), so an echo needs no second reactor
iteration.  L{useLeanServer} installs them on a listening port.

Twisted internals relied on (pinned by C{echotwist.test.test_leanserver}):
C{tcp.Port.transport} and C{unix.Port.transport} (the class a port builds
its connections with), C{tcp.Server}'s C{fileno}, C{logstr}, C{repstr},
C{sessionno}, C{hostname}, C{server} and C{_getLogPrefix}, and
C{Connection.connectionLost} deleting C{fileno}.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet import main, tcp, unix
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IListeningPort, IProtocol, IReactorFDSet
from twisted.python.failure import Failure

from echotwist.internals.writepath import writeAtOnce

# What recv raises when nothing is there (tcp.py's EWOULDBLOCK, by platform).
_WOULD_BLOCK = frozenset(
    {errno.EWOULDBLOCK, getattr(errno, "WSAEWOULDBLOCK", errno.EWOULDBLOCK)}
)


class LeanServer(tcp.Server):
    """A C{tcp.Server} that keeps less per connection, reads and sends at once.

    Its C{write} is L{writeAtOnce}: the same bytes in the same order as
    C{tcp.Server}'s, sent without a reactor round trip when nothing is
    buffered.  Its C{doRead} is C{tcp.Connection}'s in one call.

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

    # mypy reads a callable class attribute as already bound; writeAtOnce
    # (a function, or a C method descriptor) binds like a method.
    write = writeAtOnce  # type: ignore[assignment]

    # _AbortingMixin declares doRead as returning None; tcp.Connection's
    # returns the disconnection reason, as this one does.
    def doRead(self) -> ConnectionLost | ConnectionDone | None:  # type: ignore[override]
        """Read what the socket has and hand it to the protocol, as
        C{tcp.Connection.doRead} does, in one call rather than two.
        """
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as e:
            if e.args[0] in _WOULD_BLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None

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


class SendingUNIXServer(unix.Server):
    """A C{unix.Server} whose C{write} is L{writeAtOnce}."""

    # As LeanServer's.
    write = writeAtOnce  # type: ignore[assignment]


# The transport class each port class builds by default, and ours for it.
_OURS: dict[type, tuple[type, type]] = {
    unix.Port: (unix.Server, SendingUNIXServer),
    tcp.Port: (tcp.Server, LeanServer),
}


def useLeanServer(port: IListeningPort) -> bool:
    """Make C{port} serve its connections with our transport class, if it can.

    A C{tcp.Port} building plain C{tcp.Server} connections builds
    L{LeanServer} ones instead: TCP over IPv4 or IPv6, ports adopted from a
    descriptor, and C{ssl:}/C{tls:} ports (Twisted runs TLS as a protocol
    over a plain TCP port).  A C{unix.Port} building C{unix.Server}
    connections builds L{SendingUNIXServer} ones.  Ports with a transport
    class of their own and other listeners are left as they are.  Returns
    whether C{port} was changed.
    """
    # UNIX ports first: unix.Port is a tcp.Port too.
    for portClass, (theirs, ours) in _OURS.items():
        if isinstance(port, portClass):
            if getattr(port, "transport", None) is not theirs:
                return False
            port.transport = ours  # type: ignore[attr-defined]
            return True
    return False
