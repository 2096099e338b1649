"""The C{aiotcp:} server endpoint; C{echotwist.internals.aiotcp} loads only when used.

Scanning plugins must never import asyncio or install a reactor, so the
parser here is a small class whose work happens in C{echotwist.internals.aiotcp}.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _NativeTCPParser:
    """Parse C{aiotcp:PORT[:interface=HOST][:backlog=N]} (internals.aiotcp)."""

    prefix = "aiotcp"

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        """Build the endpoint; the module is imported only now."""
        from echotwist.internals.aiotcp import parseNativeTCP

        return parseNativeTCP(reactor, *args, **kwargs)


aiotcp = _NativeTCPParser()
