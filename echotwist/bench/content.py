"""What each load message holds, and what a wrong echo was.

Message C{seq} of connection C{cid} is the C{size} bytes at offset
C{mix(cid, seq)} of a fixed pseudo-random buffer of 1 MiB plus C{size}
bytes (the scheme of the reference C load generator), so two messages
almost never hold the same bytes: data swapped between connections,
replayed, reordered or duplicated by a server does not match what the
receiving connection expects.  Plain code, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

WINDOW = 1 << 20
_MASK = WINDOW - 1
# A fixed seed: every process (and every run) generates the same buffer.
_SEED = 862


def mix(cid: int, seq: int) -> int:
    """A well-spread offset into the buffer for message C{seq} of C{cid}."""
    value = (cid * 0x9E3779B1 + seq * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    value ^= value >> 15
    value = (value * 0x2C1B3C6D) & 0xFFFFFFFF
    value ^= value >> 12
    return value & _MASK


class Payload:
    """The messages of C{size} bytes for every connection and sequence number."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = random.Random(_SEED).randbytes(WINDOW + size)

    def message(self, cid: int, seq: int) -> bytes:
        """The bytes of message C{seq} on connection C{cid}."""
        offset = mix(cid, seq)
        return self.buffer[offset : offset + self.size]

    def numbered(self, cid: int, seq: int) -> bytes:
        """Message C{seq} of C{cid}, its first 8 bytes C{seq} itself.

        For datagrams: two offsets into the buffer collide now and then
        (about one message in 400 at 2,700 messages in flight per
        window), and a UDP echo server's loop guard drops a datagram that
        repeats one it echoed to the same port moments before (as
        echotwist's does for 0.1 s).  Numbered, no two of a socket's
        datagrams are alike.
        """
        message = self.message(cid, seq)
        if self.size < 8:
            return message
        return seq.to_bytes(8, "big") + message[8:]


def classifyMismatch(
    received: bytes, later: Sequence[bytes], previous: bytes | None
) -> str:
    """Name what went wrong when C{received} arrived instead of the echo due.

    C{received} is the start (or all) of what came back where the next
    expected message was due and differs from it.  If it starts the
    message echoed just before on this connection, the echo is
    C{"duplicated"}; if it starts a message sent later, C{"reordered"};
    anything else (bytes changed, or swapped in from another connection)
    is C{"corrupt"}.
    """
    if previous is not None and previous.startswith(received):
        return "duplicated"
    if any(message.startswith(received) for message in later):
        return "reordered"
    return "corrupt"


def classifyExcess(received: bytes, previous: bytes | None) -> str:
    """Name C{received}, bytes that came back beyond every message sent.

    If they start with (or are the start of) the message echoed just
    before on this connection, the echo is C{"duplicated"}, as it is when
    the repeat arrives after the next message has left; anything else is
    C{"excess"}.
    """
    if previous is not None and previous.startswith(received[: len(previous)]):
        return "duplicated"
    return "excess"
