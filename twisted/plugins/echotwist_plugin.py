"""The C{echo} twistd plugin, the C{uvloop} reactor and the C{aiotcp:} endpoint.

Nothing heavy is imported here: C{echotwist.tap}, the reactor module and
the endpoint module are loaded only when used, so that scanning plugins
never installs a reactor or imports asyncio.
"""

from __future__ import annotations

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker
from twisted.internet.interfaces import (
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

echo = ServiceMaker(
    "echotwist",
    "echotwist.tap",
    "An RFC 862 echo server (TCP, TLS, UNIX, UDP), with flow control and half-close.",
    "echo",
)

uvloopReactor = Reactor(
    "uvloop",
    "echotwist.uvloopreactor",
    "asyncio reactor on uvloop's event loop (echotwist; pip install uvloop)",
)

fastEpollReactor = Reactor(
    "fastepoll",
    "echotwist.fastpath",
    "epoll reactor without a logging context per event (echotwist)",
)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _NativeTCPParser:
    """Parse C{aiotcp:PORT[:interface=HOST][:backlog=N]} (echotwist.native)."""

    prefix = "aiotcp"

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        """Build the endpoint; the module is imported only now."""
        from echotwist.native import parseNativeTCP

        return parseNativeTCP(reactor, *args, **kwargs)


aiotcp = _NativeTCPParser()
