"""The servers the benchmark compares, and the loads it puts on them.

Each L{Server} is a name, a command that starts it listening on a port of
127.0.0.1 chosen by the system, and a note for the tables; the canonical
Twisted echo (L{BASELINE}) comes first, and every ratio is to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVERS_DIR = Path(__file__).resolve().parent / "servers"


@dataclass(frozen=True)
class Server:
    """A server under test: its table name, how to start it, and what its
    environment adds to the benchmark's own.
    """

    name: str
    command: tuple[str, ...]
    note: str
    environment: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Workload:
    """A ping-pong load: C{conns} connections each echoing C{size} bytes."""

    name: str
    conns: int
    size: int


WORKLOADS = (
    Workload("50x512B", 50, 512),
    Workload("1x64B", 1, 64),
    Workload("10x64KiB", 10, 65536),
)

BASELINE = "twisted"


def servers(python: str) -> list[Server]:
    """The servers compared, the canonical Twisted echo first."""
    # The real twistd script of this interpreter's environment, so the
    # server is found as the installed plugin, as a user runs it.
    twistd = (str(Path(python).parent / "twistd"),)
    listen = ("--listen", "tcp:0:interface=127.0.0.1")
    echotwist = ("-n", "--pidfile=")
    return [
        Server(
            "twisted",
            (python, str(SERVERS_DIR / "twisted_echo.py")),
            "canonical Twisted echo: dataReceived -> transport.write, default "
            "(epoll) reactor",
        ),
        Server(
            "asyncio",
            (python, str(SERVERS_DIR / "asyncio_echo.py")),
            "stdlib asyncio, Protocol echo",
        ),
        Server(
            "uvloop",
            (python, str(SERVERS_DIR / "asyncio_echo.py"), "--uvloop"),
            "asyncio Protocol echo on uvloop",
        ),
        Server(
            "rloop",
            (python, str(SERVERS_DIR / "asyncio_echo.py"), "--rloop"),
            "asyncio Protocol echo on rloop (an asyncio event loop in Rust)",
        ),
        Server(
            "echotwist",
            (*twistd, *echotwist, "echo", *listen),
            "the default command: twistd -n echo with no -r (the reactor the"
            " plugin chooses)",
        ),
        Server(
            "echotwist-python",
            (*twistd, *echotwist, "echo", *listen),
            "the default command with its C speedups turned off: the echo path"
            " in Python (echotwist.internals.speedups)",
            (("ECHOTWIST_PURE_PYTHON", "1"),),
        ),
        Server(
            "echotwist-poll",
            (*twistd, *echotwist, "-r", "poll", "echo", *listen),
            "twistd -r poll echo",
        ),
        Server(
            "echotwist-fastepoll",
            (*twistd, *echotwist, "-r", "fastepoll", "echo", *listen),
            "twistd -r fastepoll echo: the epoll reactor without a logging "
            "context per event (echotwist.internals.fastepoll)",
        ),
        Server(
            "echotwist-uvloop",
            (
                *twistd,
                *echotwist,
                "-r",
                "uvloop",
                "echo",
                "--listen",
                "aiotcp:0:interface=127.0.0.1",
            ),
            "twistd -r uvloop echo with the aiotcp: listener (uvloop's native "
            "transports under the unchanged Echo protocol)",
        ),
    ]
