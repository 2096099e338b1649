"""The write path: send at once when nothing is buffered, as asyncio does.

Twisted's socket transports buffer every C{write()} and send it on the
next reactor iteration: each echo registers the socket for writability
and unregisters it again (two C{epoll_ctl} calls) and costs a second
dispatch through the reactor (Twisted issue #5303).  asyncio sends at
once when its buffer is empty.  L{writeAtOnce} does the same for
Twisted's own TCP and UNIX connections: it is the C{write} of the server
transports of L{echotwist.internals.leanserver}, and L{sendNow} applies
it to the load generator's C{tcp.Client} (C{echotwist.bench}).  Everything
else goes to Twisted's own C{write}: the part the kernel did not take,
every write made while anything is still buffered or the connection is
closing, and every transport of another class (TLS, test transports).
Buffering, flow control (pausing the registered producer when the buffer
fills), half-close, C{loseConnection} and error reporting therefore all
stay Twisted's; only the empty-buffer case skips the round trip through
the reactor.

Twisted internals relied on (pinned by C{echotwist.test.test_writepath}):
the concrete transport classes and that their C{write} is
C{abstract.FileDescriptor.write}; their C{socket}, C{dataBuffer},
C{_tempDataLen}, C{connected}, C{disconnecting}, C{_writeDisconnecting},
C{_aborting} and C{TLS} attributes; and the invariant that both buffers
are empty exactly when nothing is waiting to be sent.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import abstract, tcp, unix
from twisted.internet.interfaces import ITransport

from echotwist.internals.speedups import builtSpeedups

# Twisted's buffered write, which every class below inherits unchanged.
_bufferedWrite = abstract.FileDescriptor.write

# Exactly these classes (not subclasses, which may override write()) are
# known to buffer as described above; tcp.Client shares tcp.Server's
# Connection write path.
_DIRECT: frozenset[type] = frozenset({tcp.Server, unix.Server, tcp.Client})


def canSendNow(transport: object) -> bool:
    """Whether a write to C{transport} now would be sent at once.

    True for a transport of Twisted's own classes or one whose C{write} is
    L{writeAtOnce}, while it is open with nothing buffered.
    """
    sends = type(transport) in _DIRECT or type(transport).write is writeAtOnce  # type: ignore[attr-defined]
    return sends and _isIdleOpen(transport)  # type: ignore[arg-type]


def _isIdleOpen(connection: tcp.Connection) -> bool:
    # Open, nothing buffered, not closing, not TLS: a send may go now.
    return bool(
        connection.connected
        and not connection.dataBuffer
        and not connection._tempDataLen
        and not connection.disconnecting
        and not connection._writeDisconnecting
        and not connection._aborting
        and not connection.TLS
    )


def pythonWriteAtOnce(connection: tcp.Connection, data: bytes) -> None:
    """Write C{data}, sending it at once if nothing is buffered.

    Equivalent to Twisted's C{write(data)} in what reaches the peer and in
    what order; what the kernel does not take at once is buffered by that
    C{write}, with its flow control.  A connection class uses it as its
    C{write} method.  L{writeAtOnce} is this function, or its copy in C
    (L{echotwist.internals.speedups}) where that is built.
    """
    # _isIdleOpen, inlined: this runs once per echo.
    if (
        connection.dataBuffer
        or connection._tempDataLen
        or not connection.connected
        or connection.disconnecting
        or connection._writeDisconnecting
        or connection._aborting
        or connection.TLS
    ):
        _bufferedWrite(connection, data)
        return
    try:
        sent = connection.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        # A reset or similar: Twisted's own write path meets the same error
        # on its next attempt and reports the lost connection its usual way.
        _bufferedWrite(connection, data)
        return
    if sent < len(data):
        _bufferedWrite(connection, data[sent:])


# The write in use: the C speedups' (the same statements) when built.
writeAtOnce: Callable[[tcp.Connection, bytes], None] = (
    pythonWriteAtOnce if builtSpeedups is None else builtSpeedups.writeAtOnce
)


def sendNow(transport: ITransport, data: bytes) -> None:
    """Write C{data} to C{transport}, at once if it is one of Twisted's own.

    For transports whose class this project does not choose (the load
    generator's C{tcp.Client}); any other transport gets its C{write}.
    """
    if type(transport) in _DIRECT:
        writeAtOnce(transport, data)  # type: ignore[arg-type]
    else:
        transport.write(data)
