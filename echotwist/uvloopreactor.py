"""The C{uvloop} reactor: Twisted's asyncio reactor on uvloop's event loop.

C{twistd -r uvloop ...} installs it (the reactor plugin is declared in
C{twisted/plugins/echotwist_reactors.py}).  On its own it makes Twisted's
timers and loop faster but not its sockets, which Twisted still reads and
writes in Python; the C{aiotcp:} listener (L{echotwist.native}) hands the
sockets to uvloop too.
"""

from __future__ import annotations

import asyncio


def install() -> None:
    """Install an asyncio reactor running on a new uvloop event loop."""
    import uvloop
    from twisted.internet import asyncioreactor

    loop = uvloop.new_event_loop()
    # The loop is made current so that code asking asyncio for "the" loop
    # (the aiotcp endpoint parser) finds the reactor's.
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
