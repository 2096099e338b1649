"""Taking SIGTERM and SIGINT over from the reactor, so a drained server exits 0.

Twisted's reactor installs its own SIGTERM and SIGINT handlers when it
starts running, records the signal, and twistd then kills itself with it
after a clean shutdown (exit status -15, or 130 after Ctrl-C).  The
reactor looks its C{sigTerm} and C{sigInt} methods up when C{run()}
builds its signal handling, so replacing those methods (as well as the
handlers installed now, before the reactor runs) is the one way to keep
the handlers ours without a moment in which a signal reaches the
reactor's own.

Twisted internals relied on (pinned end to end by
C{echotwist.test.e2e.test_hardening}): C{ReactorBase.sigTerm} and
C{ReactorBase.sigInt} are the methods C{run()} installs as the SIGTERM and
SIGINT handlers.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

from twisted.internet.interfaces import IReactorCore

Handler = Callable[[int, FrameType | None], None]

# The signals that stop a server, by the reactor method that handles each.
STOP_SIGNALS = {"sigTerm": signal.SIGTERM, "sigInt": signal.SIGINT}


def takeOverStopSignals(
    reactor: IReactorCore,
    handler: Handler,
    installHandler: Callable[[int, Handler], object] = signal.signal,
) -> None:
    """Make C{handler} the SIGTERM and SIGINT handler, now and once C{reactor} runs."""
    for method, number in STOP_SIGNALS.items():
        installHandler(number, handler)
        setattr(reactor, method, handler)
