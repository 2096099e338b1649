"""What every experimental echo server shares: its listening socket and its port line.

Each server listens on 127.0.0.1 on a port the system chooses, prints
C{PORT n} (the line L{benchmarks.control.Running} reads) and serves until
SIGTERM or SIGINT, which end it with C{SystemExit}.
"""

from __future__ import annotations

import signal
import socket
import sys
from types import FrameType


def listen(backlog: int = 1024) -> socket.socket:
    """A non-blocking listening socket on 127.0.0.1, its port printed."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    listener.setblocking(False)
    _exitOnSignals()
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    return listener


def prepare(sock: socket.socket) -> None:
    """Make an accepted socket what every server here serves: no Nagle delay."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _exitOnSignals() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
