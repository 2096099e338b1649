"""C{python -m echotwist.workers INDEX REACTOR tcp:FD ... -- OPTIONS ...}.

A worker process, as its supervisor starts it: it serves with the
service that C{twistd echo OPTIONS} builds (L{echotwist.tap}).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorSocket, IReactorTime

from echotwist.tap import Options, makeService
from echotwist.workers.config import WorkerIdentity
from echotwist.workers.worker import Endpoint, run


def buildService(
    reactor: IReactorSocket,
    arguments: Sequence[str],
    endpoints: list[Endpoint],
    metricsEndpoint: Endpoint | None,
    identity: WorkerIdentity,
) -> IService:
    """The service C{twistd echo ARGUMENTS} runs, on the given endpoints."""
    # The worker's reactor is twistd's kind of reactor: it provides every
    # reactor interface the service needs.
    options = Options(reactor=IReactorTime(reactor))
    options.parseOptions(list(arguments))
    options["endpoints"] = endpoints
    if metricsEndpoint is not None:
        options["metricsEndpoint"] = metricsEndpoint
    options["worker"] = identity
    return makeService(options)


if __name__ == "__main__":
    run(sys.argv[1:], buildService)
