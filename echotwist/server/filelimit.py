"""Enough file descriptors for C{--max-connections}: the open-file limit."""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from echotwist.logging import logObserver
from echotwist.server import limits
from echotwist.server.listening import StartsEarly


class FileLimitService(StartsEarly):
    """Raise the soft open-file limit to what C{--max-connections} needs.

    Each connection holds a descriptor, and the soft C{RLIMIT_NOFILE} is
    often 1,024 while the hard limit is far higher: a server told to take
    10,000 connections should not stop at a thousand (and pause accepting,
    L{echotwist.internals.emfile}).  So the soft limit is raised towards the hard
    one, as far as L{limits.fileLimitTarget} says, with one log line; when
    even the hard limit is too low, one warning says so.  It happens in
    L{privilegedStartService}, before anything listens.
    """

    log = Logger(observer=logObserver)

    def __init__(
        self,
        maxConnections: int,
        getLimit: Callable[[], tuple[int, int]] | None = None,
        setLimit: Callable[[tuple[int, int]], None] | None = None,
    ) -> None:
        self.maxConnections = maxConnections
        self.getLimit = getLimit if getLimit is not None else _fileLimit
        self.setLimit = setLimit if setLimit is not None else _setFileLimit

    def startEarly(self) -> None:
        """Raise the limit now, before the listeners start."""
        try:
            soft, hard = self.getLimit()
        except ImportError:
            # No resource module (Windows): no such limit to raise.
            return
        target = limits.fileLimitTarget(self.maxConnections, soft, hard)
        if target is not None:
            try:
                self.setLimit((target, hard))
            except (OSError, ValueError) as e:
                self.log.warn(
                    "Cannot raise the open-file limit from {soft} to {target}: {why}",
                    soft=soft,
                    target=target,
                    why=e,
                )
                return
            self.log.info(
                "Raised the open-file limit (RLIMIT_NOFILE) from {soft} to"
                " {target} for --max-connections {count}",
                soft=soft,
                target=target,
                count=self.maxConnections,
            )
            soft = target
        needed = limits.filesNeeded(self.maxConnections)
        if self.maxConnections and 0 <= soft < needed:
            self.log.warn(
                "--max-connections {count} needs about {needed} open files but"
                " the limit is {limit} (hard {hard}): beyond it, accepting"
                " pauses until descriptors are free",
                count=self.maxConnections,
                needed=needed,
                limit=soft,
                hard=hard,
            )


def _fileLimit() -> tuple[int, int]:
    """The soft and hard C{RLIMIT_NOFILE}; ImportError where there is none."""
    # Imported here: the resource module exists on Unix only.
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _setFileLimit(limit: tuple[int, int]) -> None:
    """Set the soft and hard C{RLIMIT_NOFILE}."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, limit)
