"""Taking SIGTERM over from the reactor, so a drained server exits 0.

Twisted's reactor installs its own SIGTERM handler when it starts running,
records the signal, and twistd then kills itself with it after a clean
shutdown (exit status -15).  The reactor looks its C{sigTerm} method up
when C{run()} builds its signal handling, so replacing that method (as
well as the handler installed now, before the reactor runs) is the one
way to keep the handler ours without a moment in which a SIGTERM reaches
the reactor's own.

Twisted internal relied on (pinned end to end by
C{echotwist.test.e2e.test_hardening}): C{ReactorBase.sigTerm} is the
method C{run()} installs as the SIGTERM handler.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

from twisted.internet.interfaces import IReactorCore

Handler = Callable[[int, FrameType | None], None]


def takeOverSigTerm(
    reactor: IReactorCore,
    handler: Handler,
    installHandler: Callable[[int, Handler], object] = signal.signal,
) -> None:
    """Make C{handler} the SIGTERM handler, now and once C{reactor} runs."""
    installHandler(signal.SIGTERM, handler)
    reactor.sigTerm = handler  # type: ignore[attr-defined]
