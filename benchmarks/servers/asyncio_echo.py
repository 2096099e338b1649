"""The asyncio (and uvloop) peer echo servers of the benchmark.

An C{asyncio.Protocol} whose C{data_received} calls C{transport.write}, as
in the asyncio documentation's echo server.  Usage:
C{python asyncio_echo.py [--uvloop | --rloop] [PORT]}; it prints C{PORT n}
once listening on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import cast


class Echo(asyncio.Protocol):
    """Write back whatever arrives."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        # uvloop's transports are not subclasses of asyncio.Transport, but
        # provide its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Echo C{data}."""
        self.transport.write(data)


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:C{port} until killed."""
    loop = asyncio.get_running_loop()
    # Bound here, so the port is read before the loop takes the socket:
    # rloop's Server.sockets wraps the descriptor in a socket object that
    # closes it when collected.  Not serving until serve_forever: rloop
    # 0.5 closes the socket when asked to start serving twice.
    sock = socket.create_server(("127.0.0.1", port), backlog=socket.SOMAXCONN)
    chosen = sock.getsockname()[1]
    server = await loop.create_server(
        Echo, sock=sock, backlog=socket.SOMAXCONN, start_serving=False
    )
    print(f"PORT {chosen}", flush=True)
    await server.serve_forever()


def main(argv: list[str]) -> None:
    """Run the stdlib loop, uvloop's with C{--uvloop}, rloop's with C{--rloop}."""
    rest = [a for a in argv if a not in ("--uvloop", "--rloop")]
    port = int(rest[0]) if rest else 0
    if "--uvloop" in argv:
        import uvloop

        uvloop.run(serve(port))
    elif "--rloop" in argv:
        # rloop: an asyncio event loop written in Rust (pip install rloop).
        import rloop

        with asyncio.Runner(loop_factory=rloop.new_event_loop) as runner:
            runner.run(serve(port))
    else:
        asyncio.run(serve(port))


if __name__ == "__main__":
    main(sys.argv[1:])
