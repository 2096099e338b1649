"""The C{uvloop} reactor: Twisted's asyncio reactor on uvloop's event loop.

C{twistd -r uvloop ...} installs it (the reactor plugin is declared in
C{twisted/plugins/echotwist_reactors.py}).  On its own it makes Twisted's
timers and loop faster but not its sockets, which Twisted still reads and
writes in Python; the C{aiotcp:} listener (L{echotwist.internals.aiotcp}) hands the
sockets to uvloop too.

Child processes (C{spawnProcess}, as the C{--workers} supervisor uses)
need one repair here.  Twisted learns that a child exited from SIGCHLD:
its handler does nothing, and the signal wakeup descriptor
(C{signal.set_wakeup_fd}) it points at a pipe of its own wakes the reactor
to reap the child.  uvloop, when its loop starts running, points that
wakeup descriptor at its own socket instead, and ignores signals it was not
asked to handle (and it refuses C{add_signal_handler} for SIGCHLD), so
Twisted would never hear of an exit: a supervisor would wait for its
stopped workers forever.  L{install} therefore replaces Twisted's SIGCHLD
handler, once the reactor runs, with L{ReapOnSIGCHLD}: uvloop runs Python
signal handlers when its wakeup socket wakes it, and this one asks the
reactor to reap, as Twisted's own pipe would have.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import TextIO

from twisted.internet.interfaces import IReactorFromThreads


class ReapOnSIGCHLD:
    """A SIGCHLD handler: reap the exited children from the reactor's loop."""

    def __init__(self, reactor: IReactorFromThreads, reap: Callable[[], None]) -> None:
        self.reactor = reactor
        self.reap = reap

    def __call__(self, number: int, frame: FrameType | None) -> None:
        """Have the reactor call C{reap} from its loop.

        A signal handler may run between any two bytecodes, so the reaping
        (which calls process protocols) waits for the loop, as Twisted's
        own signal handlers defer their work with C{callFromThread}.
        """
        self.reactor.callFromThread(self.reap)


def takeSIGCHLD(
    handler: Callable[[int, FrameType | None], None],
    getHandler: Callable[[int], object] = signal.getsignal,
    setHandler: Callable[[int, Callable[[int, FrameType | None], None]], object] = (
        signal.signal
    ),
    restart: Callable[[int, bool], None] = signal.siginterrupt,
) -> bool:
    """Replace Twisted's SIGCHLD handler with C{handler}; return whether it did.

    Only a handler Twisted installed is replaced: with the default one
    (the reactor runs without signal handlers, in a thread or under
    C{installSignalHandlers=False}) Twisted watches no children by signal,
    and this does not start.
    """
    if getHandler(signal.SIGCHLD) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False
    setHandler(signal.SIGCHLD, handler)
    # As Twisted sets it: system calls restart after the signal.
    restart(signal.SIGCHLD, False)
    return True


# The line C{twistd -r uvloop} ends with when uvloop is not installed.
MISSING_UVLOOP = (
    "twistd: -r uvloop needs uvloop: pip install 'echotwist[uvloop]'"
    " (or leave out -r uvloop)"
)


def importUvloop(
    importModule: Callable[[str], ModuleType] = importlib.import_module,
    errorStream: TextIO | None = None,
) -> ModuleType:
    """Import uvloop; without it, print L{MISSING_UVLOOP} and exit with status 2.

    twistd installs the reactor while it parses its options, and turns any
    exception the installation raises into its whole usage text followed
    by the reason; only C{SystemExit} passes through it, so a missing
    uvloop is one line on standard error, as a usage error of the echo
    plugin is.
    """
    try:
        return importModule("uvloop")
    except ImportError:
        stream = errorStream if errorStream is not None else sys.stderr
        stream.write(MISSING_UVLOOP + "\n")
        stream.flush()
        raise SystemExit(2) from None


def install() -> None:
    """Install an asyncio reactor running on a new uvloop event loop.

    Without uvloop, exit with status 2 after one line (L{importUvloop}).
    """
    uvloop = importUvloop()
    from twisted.internet import asyncioreactor, process

    loop = uvloop.new_event_loop()
    # The loop is made current so that code asking asyncio for "the" loop
    # (the aiotcp endpoint parser) finds the reactor's.
    asyncio.set_event_loop(loop)
    reactor = asyncioreactor.AsyncioSelectorReactor(loop)
    from twisted.internet.main import installReactor

    installReactor(reactor)
    # After startup: Twisted installs its SIGCHLD handler while starting up.
    # reapAllProcesses is what Twisted's SIGCHLD pipe calls (it is a public
    # function of twisted.internet.process).
    reactor.callWhenRunning(
        takeSIGCHLD, ReapOnSIGCHLD(reactor, process.reapAllProcesses)
    )
