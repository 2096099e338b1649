"""echotwist's reactors for C{twistd -r}; their modules load only when chosen."""

from twisted.application.reactors import Reactor

uvloopReactor = Reactor(
    "uvloop",
    "echotwist.internals.uvloopreactor",
    "asyncio reactor on uvloop's event loop (echotwist; pip install uvloop)",
)

fastEpollReactor = Reactor(
    "fastepoll",
    "echotwist.internals.fastepoll",
    "epoll reactor without a logging context per event (echotwist)",
)
