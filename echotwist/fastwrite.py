"""Send at once when nothing is buffered: a write fast path for Twisted TCP.

Twisted's socket transports buffer every C{write()} and send it on the next
reactor iteration: each echo registers the socket for writability and
unregisters it again (two C{epoll_ctl} calls) and costs a second dispatch
through the reactor (Twisted issue #5303).  asyncio sends at once when its
buffer is empty.  L{sendNow} does the same for Twisted's own TCP and UNIX
server transports, and hands everything else to the transport's ordinary
C{write()}: the part the kernel did not take, every write made while
anything is still buffered, and every transport it does not know (TLS, test
transports).  Buffering, flow control (pausing the registered producer when
the buffer fills), half-close, loseConnection and error reporting therefore
all stay Twisted's own; only the empty-buffer case skips the round trip
through the reactor.

This is the one module that relies on Twisted internals: the concrete
transport classes, their C{socket}, C{dataBuffer}, C{_tempDataLen},
C{connected}, C{disconnecting}, C{_writeDisconnecting}, C{_aborting} and
C{TLS} attributes, and the invariant that both buffers are empty exactly when
nothing is waiting to be sent.  C{echotwist.test.test_fastwrite} pins each
of them, so a Twisted upgrade that changes them fails a test rather than
reordering bytes.
"""

from __future__ import annotations

from typing import cast

from twisted.internet import tcp, unix
from twisted.internet.interfaces import ITransport

# Exactly these classes (not subclasses, which may override write()) are
# known to buffer as described above.
_DIRECT: frozenset[type] = frozenset({tcp.Server, unix.Server})


def canSendNow(transport: object) -> bool:
    """Whether L{sendNow} may bypass C{transport}'s buffer at this moment."""
    if type(transport) not in _DIRECT:
        return False
    connection = cast(tcp.Server, transport)
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
    if not canSendNow(transport):
        transport.write(data)
        return
    connection = cast(tcp.Server, transport)
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
