"""An io_uring echo loop: one C{io_uring_enter} a turn submits and waits.

Every receive and send goes through the ring (L{benchmarks.experiments.uring}):
a turn reads every completion, queues the sends and receives they call for,
and the next turn's one C{io_uring_enter} submits them all and waits for
the next completion.  Receives pick a buffer from a ring of provided
buffers; the echo is sent from that same buffer (no copy into Python
objects), which goes back to the kernel once sent.  Flow control is the
buffer ring: when it is empty a receive fails with ENOBUFS, and the
connection is read again once a send returns a buffer.

Usage: C{python -m benchmarks.experiments.uring_echo [--recv rearm|multishot]
[--defer] [--sqpoll]}, from the repository root.

  - C{--recv rearm}: one receive per connection at a time, re-armed in the
    batch that its completion starts.
  - C{--recv multishot}: one multishot receive per connection, which stays
    armed and posts a completion per arrival.
  - C{--defer}: C{IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN}:
    the kernel runs completion work only inside C{io_uring_enter}.
  - C{--sqpoll}: a kernel thread on CPU 0 (the server's) polls the
    submission queue: no call submits, and waiting calls only when the
    completion queue is empty.
"""

from __future__ import annotations

import argparse
import errno
import socket
from collections import deque
from dataclasses import dataclass, field

from benchmarks.experiments import uring
from benchmarks.experiments.common import listen, prepare

ACCEPT, RECV, SEND = 1, 2, 3
BUFFERS = 1024
BUFFER_SIZE = 65536
GROUP = 0


@dataclass
class Connection:
    """One connection: its socket and its echoes not yet sent, in order."""

    sock: socket.socket
    # (buffer id, bytes sent, length) of every echo not yet sent; the first
    # is in flight.
    sends: deque[list[int]] = field(default_factory=deque)
    ended: bool = False


class UringEcho:
    """The loop's state: the ring, its buffers and the connections."""

    def __init__(self, multishot: bool, ringFlags: int) -> None:
        self.listener = listen()
        self.ring = uring.Ring(
            4096,
            flags=ringFlags,
            sqThreadCpu=0,
            idleMs=50 if ringFlags & uring.IORING_SETUP_SQPOLL else 0,
        )
        self.buffers = uring.BufferRing(self.ring, GROUP, BUFFERS, BUFFER_SIZE)
        self.multishot = multishot
        self.connections: dict[int, Connection] = {}
        self.starved: list[int] = []
        self.nextId = 1
        self.armAccept()

    def armAccept(self) -> None:
        """Accept every connection with one multishot accept."""
        self.ring.prepare(
            uring.IORING_OP_ACCEPT,
            self.listener.fileno(),
            ACCEPT,
            ioprio=uring.IORING_ACCEPT_MULTISHOT,
        )

    def armRecv(self, cid: int) -> None:
        """Receive on connection C{cid} into a buffer the kernel picks."""
        self.ring.prepare(
            uring.IORING_OP_RECV,
            self.connections[cid].sock.fileno(),
            cid << 24 | RECV,
            sqeFlags=uring.IOSQE_BUFFER_SELECT,
            ioprio=uring.IORING_RECV_MULTISHOT if self.multishot else 0,
            bufGroup=GROUP,
        )

    def send(self, cid: int, echo: list[int]) -> None:
        """Send the rest of C{echo} (buffer id, sent, length) on C{cid}."""
        bid, sent, length = echo
        self.ring.prepare(
            uring.IORING_OP_SEND,
            self.connections[cid].sock.fileno(),
            cid << 24 | bid << 8 | SEND,
            addr=self.buffers.base + bid * BUFFER_SIZE + sent,
            length=length - sent,
        )

    def accepted(self, fd: int, flags: int) -> None:
        """A new connection (or, with C{fd} < 0, a failed accept)."""
        if not flags & uring.IORING_CQE_F_MORE:
            self.armAccept()
        if fd < 0:
            return
        sock = socket.socket(fileno=fd)
        prepare(sock)
        cid = self.nextId
        self.nextId += 1
        self.connections[cid] = Connection(sock)
        self.armRecv(cid)

    def received(self, cid: int, res: int, flags: int) -> None:
        """A receive completed: echo what it brought, or end the connection."""
        connection = self.connections.get(cid)
        if flags & uring.IORING_CQE_F_BUFFER:
            bid = flags >> uring.IORING_CQE_BUFFER_SHIFT
            if connection is None or res <= 0:
                self.buffers.give(bid)
            else:
                connection.sends.append([bid, 0, res])
                if len(connection.sends) == 1:
                    self.send(cid, connection.sends[0])
        if connection is None:
            return
        if res == -errno.ENOBUFS:
            self.starved.append(cid)
        elif res <= 0:
            connection.ended = True
            self.endIfSent(cid, connection)
        elif not self.multishot or not flags & uring.IORING_CQE_F_MORE:
            self.armRecv(cid)

    def sent(self, cid: int, bid: int, res: int) -> None:
        """A send completed: send its rest, or the next echo, or end."""
        connection = self.connections.get(cid)
        if connection is None:
            self.buffers.give(bid)
            return
        echo = connection.sends[0]
        if res > 0:
            echo[1] += res
            if echo[1] < echo[2]:
                self.send(cid, echo)
                return
        connection.sends.popleft()
        self.buffers.give(bid)
        if res < 0:
            connection.ended = True
            while connection.sends:
                self.buffers.give(connection.sends.popleft()[0])
        if connection.sends:
            self.send(cid, connection.sends[0])
        else:
            self.endIfSent(cid, connection)
        if self.starved:
            starved, self.starved = self.starved, []
            for other in starved:
                if other in self.connections:
                    self.armRecv(other)

    def endIfSent(self, cid: int, connection: Connection) -> None:
        """Close a connection that has ended once its echoes are all sent."""
        if connection.ended and not connection.sends:
            del self.connections[cid]
            connection.sock.close()

    def run(self) -> None:
        """Echo until a signal ends the process."""
        enter = self.ring.enter
        completions = self.ring.completions
        received, sent = self.received, self.sent
        while True:
            enter(1)
            for userData, res, flags in completions():
                kind = userData & 0xFF
                if kind == RECV:
                    received(userData >> 24, res, flags)
                elif kind == SEND:
                    sent(userData >> 24, (userData >> 8) & 0xFFFF, res)
                else:
                    self.accepted(res, flags)


def main() -> None:
    """Parse the options and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recv", choices=("rearm", "multishot"), default="rearm")
    parser.add_argument("--defer", action="store_true")
    parser.add_argument("--sqpoll", action="store_true")
    options = parser.parse_args()
    flags = 0
    if options.defer:
        flags |= uring.IORING_SETUP_SINGLE_ISSUER | uring.IORING_SETUP_DEFER_TASKRUN
    if options.sqpoll:
        flags |= uring.IORING_SETUP_SQPOLL | uring.IORING_SETUP_SQ_AFF
    UringEcho(options.recv == "multishot", flags).run()


if __name__ == "__main__":
    main()
