"""A minimal epoll echo loop: the control for the system-call experiments.

One C{epoll.poll()} a turn; for every ready socket one read and one send
(what the C epoll server and echotwist's fast epoll reactor pay per echo).
What a send leaves over is kept and the socket stops being read until it
is written (flow control); a closed or failed socket is closed.

Usage: C{python -m benchmarks.experiments.epoll_echo [--read recv|recv_into]
[--busy-poll USEC]}, from the repository root.

  - C{--read recv} (the control): C{sock.recv(65536)} returns a new bytes
    object, which C{sock.send} sends.
  - C{--read recv_into}: C{sock.recv_into} a reused 64 KiB bytearray and
    send from a memoryview of it; only a remainder that the send leaves is
    copied.
  - C{--busy-poll USEC}: set C{SO_BUSY_POLL} on every accepted socket, so
    a read that finds nothing spins on the device queue first.
"""

from __future__ import annotations

import argparse
import select
import socket
from collections.abc import Callable

from benchmarks.experiments.common import listen, prepare

SO_BUSY_POLL = 46
READ_SIZE = 65536

# A read returns what arrived (b"" at end of stream); it may raise
# BlockingIOError (nothing yet) or OSError (the connection failed).
Reader = Callable[[socket.socket], "bytes | memoryview"]


def recvReader() -> Reader:
    """The control: a new bytes object per read."""

    def read(sock: socket.socket) -> bytes:
        return sock.recv(READ_SIZE)

    return read


def recvIntoReader() -> Reader:
    """Read into one reused buffer; the result is a view valid until the next read."""
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)

    def read(sock: socket.socket) -> memoryview:
        return view[: sock.recv_into(buffer)]

    return read


class EpollEcho:
    """The loop's state: its poller, its sockets and what sends left over."""

    def __init__(self, read: Reader, busyPollMicros: int) -> None:
        self.read = read
        self.busyPollMicros = busyPollMicros
        self.listener = listen()
        self.poller = select.epoll()
        self.poller.register(self.listener.fileno(), select.EPOLLIN)
        self.sockets: dict[int, socket.socket] = {}
        # What a send left over, per socket; such a socket waits for
        # EPOLLOUT only, so nothing more is read from it meanwhile.
        self.pending: dict[int, bytes] = {}

    def accept(self) -> None:
        """Accept every waiting connection."""
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            prepare(sock)
            if self.busyPollMicros:
                sock.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL, self.busyPollMicros)
            self.sockets[sock.fileno()] = sock
            self.poller.register(sock.fileno(), select.EPOLLIN)

    def close(self, fd: int) -> None:
        """Forget and close socket C{fd}."""
        self.poller.unregister(fd)
        self.sockets.pop(fd).close()
        self.pending.pop(fd, None)

    def flush(self, fd: int) -> None:
        """Send what a send left over; read again once it is all sent."""
        left = self.pending.pop(fd)
        sent = self.sockets[fd].send(left)
        if sent < len(left):
            self.pending[fd] = left[sent:]
        else:
            self.poller.modify(fd, select.EPOLLIN)

    def run(self) -> None:
        """Echo until a signal ends the process."""
        listening = self.listener.fileno()
        sockets = self.sockets
        pending = self.pending
        read = self.read
        poll = self.poller.poll
        while True:
            for fd, _ in poll():
                if fd == listening:
                    self.accept()
                    continue
                try:
                    if fd in pending:
                        self.flush(fd)
                        continue
                    sock = sockets[fd]
                    data = read(sock)
                    if not data:
                        self.close(fd)
                        continue
                    try:
                        sent = sock.send(data)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(data):
                        pending[fd] = bytes(data[sent:])
                        self.poller.modify(fd, select.EPOLLOUT)
                except BlockingIOError:
                    continue
                except OSError:
                    self.close(fd)


def main() -> None:
    """Parse the options and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read", choices=("recv", "recv_into"), default="recv")
    parser.add_argument("--busy-poll", type=int, default=0, metavar="USEC")
    options = parser.parse_args()
    reader = recvReader() if options.read == "recv" else recvIntoReader()
    EpollEcho(reader, options.busy_poll).run()


if __name__ == "__main__":
    main()
