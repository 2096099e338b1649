"""The reactor C{twistd echo} runs on when none is asked for: the fastest here.

twistd installs the reactor C{-r NAME} names while it parses its own
options, before the plugin's; without C{-r}, nothing is installed until
something first imports C{twisted.internet.reactor}, which installs
Twisted's default.  The echo plugin's options need a reactor to build
their endpoints, so they can choose first (L{installDefaultReactor}): on
Linux the fast epoll reactor (L{echotwist.internals.fastepoll}), which
keeps every feature of the default one (docs/performance.md has the
figures); elsewhere, Twisted's default.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Container

from twisted.application.reactors import installReactor

# The module that holds the installed reactor, once one is.
_REACTOR_MODULE = "twisted.internet.reactor"


def defaultReactorName(platform: str) -> str | None:
    """The C{twistd -r} name of the fastest reactor on C{platform}, or None
    for Twisted's default.
    """
    return "fastepoll" if platform.startswith("linux") else None


def installDefaultReactor(
    modules: Container[str] = sys.modules,
    platform: str = sys.platform,
    install: Callable[[str], object] = installReactor,
) -> str | None:
    """Install the fastest reactor unless one is installed already.

    Return the name of the reactor installed, or None if none was: one was
    there already (C{twistd -r}, a test's, a worker's), or Twisted's
    default is the fastest here.
    """
    if _REACTOR_MODULE in modules:
        return None
    name = defaultReactorName(platform)
    if name is not None:
        install(name)
    return name
