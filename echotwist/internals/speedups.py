"""The echo path's C speedups, when they are built.

C{_speedups.c} (in this package) holds two parts of the echo path in C,
each doing what a Python function beside it does, statement for
statement, with the same Twisted internals:
  - C{writeAtOnce}: the server transports' C{write}
    (L{echotwist.internals.writepath.pythonWriteAtOnce});
  - C{Dispatcher.poll}: the fast epoll reactor's wait and dispatch
    (L{echotwist.internals.fastepoll.FastEPollReactor}): a descriptor
    that is only readable gets its C{doRead} called from C, and a
    C{LeanServer}'s is done in the loop itself.
Each echo then runs one Python frame (C{Echo.dataReceived}) instead of
four; the calls into Twisted and into the socket are the same.  The tests
run each contract against both versions.

setup.py builds the extension where a C compiler is there (it is
optional); without one echotwist installs and runs the Python versions.
C{ECHOTWIST_PURE_PYTHON=1} in the environment makes a process use the
Python versions even when the extension is built: to compare the two, or
to rule the C out when something looks wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType

# The environment variable that turns the speedups off.
PURE_PYTHON = "ECHOTWIST_PURE_PYTHON"


def pythonAskedFor(environ: Mapping[str, str]) -> bool:
    """Whether C{environ} turns the speedups off (L{PURE_PYTHON}, not 0)."""
    return environ.get(PURE_PYTHON, "") not in {"", "0"}


def loadSpeedups(environ: Mapping[str, str] = os.environ) -> ModuleType | None:
    """The C{_speedups} extension, or None if it is not built or turned off."""
    if pythonAskedFor(environ):
        return None
    try:
        from echotwist.internals import _speedups
    except ImportError:
        return None
    return _speedups


builtSpeedups = loadSpeedups()


def describeEchoPath(
    built: ModuleType | None = builtSpeedups, environ: Mapping[str, str] = os.environ
) -> str:
    """How the echo path runs, for the server's log: in C, or in Python and why."""
    if built is not None:
        return "in C (echotwist.internals._speedups)"
    if pythonAskedFor(environ):
        return f"in Python ({PURE_PYTHON} is set)"
    return "in Python (the C speedups are not built)"
