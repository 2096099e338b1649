"""Misbehaving echo servers for end-to-end tests of the client and bench.

Each double listens on 127.0.0.1 port 0 in daemon threads of the test
process, serves real clients started as subprocesses, and is stopped (its
sockets closed, its threads joined with a bound) at test cleanup.  What
it sends back is decided by a plain function of what it received, so a
test says exactly how the echo goes wrong.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.trial.unittest import SynchronousTestCase

# How often a double's threads look up from a blocking call to check for stop.
_POLL = 0.1


@dataclass
class StreamState:
    """What one connection of a stream double has seen so far."""

    chunks: int = 0
    received: int = 0
    extra: dict[str, int] = field(default_factory=dict)


# Given the connection's state and the bytes just read, what to send back.
Transform = Callable[[StreamState, bytes], bytes]


def faithful(state: StreamState, data: bytes) -> bytes:
    """Echo correctly."""
    return data


def corruptAfter(offset: int) -> Transform:
    """Echo correctly, except flip the byte at stream offset C{offset}."""

    def transform(state: StreamState, data: bytes) -> bytes:
        start = state.received - len(data)
        if start <= offset < state.received:
            i = offset - start
            return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        return data

    return transform


def duplicateAfter(offset: int) -> Transform:
    """Echo correctly, but send the chunk holding stream offset C{offset} twice."""

    def transform(state: StreamState, data: bytes) -> bytes:
        start = state.received - len(data)
        if start <= offset < state.received:
            return data + data
        return data

    return transform


def stallAt(offset: int, seconds: float) -> Transform:
    """Echo correctly, but hold the chunk with stream offset C{offset} back.

    The double's thread blocks for C{seconds} (a server that stalls, as
    a garbage collection pause would make it), then echoes the chunk.
    """

    def transform(state: StreamState, data: bytes) -> bytes:
        start = state.received - len(data)
        if start <= offset < state.received:
            time.sleep(seconds)
        return data

    return transform


def swallowAfter(offset: int) -> Transform:
    """Echo the first C{offset} bytes of the stream and nothing after."""

    def transform(state: StreamState, data: bytes) -> bytes:
        start = state.received - len(data)
        return data[: max(0, offset - start)]

    return transform


class StreamDouble:
    """A TCP server on 127.0.0.1 that answers through a L{Transform}."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(_POLL)
        self.port: int = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.connections = 0
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._start(self._serve, connection)

    def _serve(self, connection: socket.socket) -> None:
        state = StreamState()
        connection.settimeout(_POLL)
        with connection:
            while not self.stopping.is_set():
                try:
                    data = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                state.chunks += 1
                state.received += len(data)
                reply = self.transform(state, data)
                try:
                    if reply:
                        connection.sendall(reply)
                except OSError:
                    return

    def stop(self) -> None:
        """Close the listener and every connection; join the threads."""
        self.stopping.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(5 * _POLL + 5)


class DatagramDouble:
    """A UDP echo on 127.0.0.1 that answers only the datagrams C{keep} allows.

    C{keep} is called with the datagram's number (0, 1, ...).
    """

    def __init__(self, keep: Callable[[int], bool]) -> None:
        self.keep = keep
        self.stopping = threading.Event()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(_POLL)
        self.port: int = self.socket.getsockname()[1]
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, address = self.socket.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            number = self.received
            self.received += 1
            if self.keep(number):
                self.socket.sendto(data, address)

    def stop(self) -> None:
        """Close the socket and join the thread."""
        self.stopping.set()
        self.thread.join(5 * _POLL + 5)
        self.socket.close()


def startStreamDouble(test: SynchronousTestCase, transform: Transform) -> StreamDouble:
    """Start a L{StreamDouble}, stopped at C{test}'s cleanup."""
    double = StreamDouble(transform)
    test.addCleanup(double.stop)
    return double


def startDatagramDouble(
    test: SynchronousTestCase, keep: Callable[[int], bool]
) -> DatagramDouble:
    """Start a L{DatagramDouble}, stopped at C{test}'s cleanup."""
    double = DatagramDouble(keep)
    test.addCleanup(double.stop)
    return double
