"""Twisted's real connection classes over a fake socket, for unit tests.

No system calls: the socket records what is sent, and a memory reactor
stands in for the real one, so Twisted's own buffering code runs.
"""

from __future__ import annotations

import errno
import socket as socket_
from typing import cast

from twisted.internet import tcp
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock


def takeIncoming(incoming: list[bytes | OSError], size: int) -> bytes:
    """What a fake socket's receive gives: the next of C{incoming} (at most
    C{size} bytes), or its error; EAGAIN when there is nothing.
    """
    if not incoming:
        raise BlockingIOError(errno.EAGAIN, "nothing to read")
    what = incoming.pop(0)
    if isinstance(what, OSError):
        raise what
    return what[:size]


class FakeSocket:
    """A socket that records what is sent and takes at most C{room} bytes."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.sent = b""
        self.sends = 0
        self.error: OSError | None = None
        self.shutdowns: list[int] = []
        # What recv returns (bytes) or raises (an error), in turn.
        self.incoming: list[bytes | OSError] = []

    def setblocking(self, flag: bool) -> None:
        """Accept the transport's non-blocking mode."""

    def fileno(self) -> int:
        """A plausible descriptor number; nothing uses it."""
        return 42

    def setsockopt(self, *arguments: object) -> None:
        """Accept TCP_NODELAY."""

    def send(self, data: bytes | memoryview) -> int:
        """Take as much of C{data} as there is room for, or fail."""
        self.sends += 1
        if self.error is not None:
            raise self.error
        chunk = bytes(data) if self.room is None else bytes(data[: self.room])
        if self.room is not None:
            self.room -= len(chunk)
        if not chunk and data:
            raise BlockingIOError(errno.EAGAIN, "full")
        self.sent += chunk
        return len(chunk)

    def recv(self, size: int) -> bytes:
        """Return (or raise) what is next in C{incoming}, at most C{size} bytes."""
        return takeIncoming(self.incoming, size)

    def shutdown(self, how: int) -> None:
        """Record a half-close."""
        self.shutdowns.append(how)

    def close(self) -> None:
        """Nothing to release."""


def server(
    socket: FakeSocket,
    protocol: IProtocol | None = None,
    kind: type[tcp.Server] = tcp.Server,
    peer: object = ("127.0.0.1", 40000),
) -> tuple[tcp.Server, MemoryReactor]:
    """A connected C{tcp.Server} (or C{kind}) over C{socket}, from C{peer}.

    C{peer} is what the port's C{accept()} would give: C{(host, port)} for
    TCP, a path (C{""} when unnamed) for UNIX.
    """
    reactor = MemoryReactorClock()
    # A port that never listens: Server only uses it for its repr.
    transport = kind(
        cast(socket_.socket, socket),
        protocol or Protocol(),
        # unix.Server takes a path where tcp.Server takes (host, port).
        cast(tuple[object, ...], peer),
        tcp.Port(0, Factory.forProtocol(Protocol), reactor=reactor),
        1,
        reactor,
    )
    return transport, reactor


def client(socket: FakeSocket, protocol: Protocol | None = None) -> tcp.Client:
    """A connected C{tcp.Client} over C{socket}, as the load generator has.

    C{tcp.Client} makes its own socket; C{createInternetSocket} is swapped
    for one returning C{socket} while it is built, so no socket is opened.
    The memory reactor never runs the connect attempt it schedules.
    """
    original = tcp.Client.createInternetSocket
    tcp.Client.createInternetSocket = (  # type: ignore[method-assign]
        # mypy: a method replaced on the class for the constructor's call.
        lambda self: cast(socket_.socket, socket)
    )
    try:
        transport = tcp.Client(
            "127.0.0.1", 7, None, cast(tcp.Connector, None), MemoryReactorClock()
        )
    finally:
        tcp.Client.createInternetSocket = original  # type: ignore[method-assign]
    # What BaseClient._connectDone sets once the connect succeeds.
    transport.protocol = protocol or Protocol()
    transport.connected = 1
    return transport


def flush(transport: tcp.Connection) -> None:
    """Let the transport write, as the reactor would when it is writable."""
    result = transport.doWrite()
    assert result is None, result
