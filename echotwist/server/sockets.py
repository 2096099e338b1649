"""What the kernel says about a connection's socket (Linux; None elsewhere)."""

from __future__ import annotations

import struct

from twisted.internet.interfaces import ITransport


def unsentBytes(transport: ITransport) -> int | None:
    """How many bytes the kernel still holds unsent on C{transport}'s socket.

    Linux's C{SIOCOUTQ} (the same number as C{TIOCOUTQ}) on the socket from
    C{getHandle()}; C{None} when the transport has no such socket (TLS in
    memory, test transports) or the system does not answer.  Only the idle
    check calls this, once per quiet interval, never per read.
    """
    getHandle = getattr(transport, "getHandle", None)
    try:
        fileno = getHandle().fileno() if getHandle is not None else -1
        if not isinstance(fileno, int) or fileno < 0:
            return None
        # Imported here: fcntl and termios exist on Unix only.
        import fcntl
        import termios

        answer = fcntl.ioctl(fileno, termios.TIOCOUTQ, b"\0\0\0\0")
    except Exception:
        # Any handle that cannot answer simply gives no drain information.
        return None
    count: int = struct.unpack("i", answer)[0]
    return count
