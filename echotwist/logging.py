"""echotwist's logs: their level (C{--log-level}) and JSON lines.

Every echotwist logger sends its events through L{logObserver}, which
drops those below the levels C{twistd echo --log-level} set
(L{setLogLevels}) before they reach Twisted's global log publisher, and
so twistd's log.  Twisted's own few lines (twistd starting up, a port
starting) are not filtered: twistd sets up its observer itself.

JSON logs: C{twistd --logger=echotwist.logging.jsonLogger echo ...}.

Every log event becomes one JSON object on one line of standard output:
C{time} (ISO 8601, UTC), C{level}, C{namespace}, C{message} (the text a
human would read) and then the event's own structured fields, such as
C{host}, C{port}, C{bytes}, C{duration} and C{reason}; a logged failure
adds C{traceback}.

Twisted's C{jsonFileLogObserver}/C{eventAsJSON} are made to be read back
by Twisted: they keep the format string rather than the message, encode the
level as a serialised constant and the logger as an "unpersistable" stub,
and separate records with an ASCII record separator.  Log shippers want
flat, line-oriented objects, so this formats its own records and writes
them with Twisted's C{FileLogObserver}.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

from twisted.application.service import MultiService
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    InvalidLogLevelError,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure

# The levels of echotwist's events that are logged: info and above unless
# --log-level says otherwise.
levels = LogLevelFilterPredicate(LogLevel.info)

logObserver: ILogObserver = FilteringLogObserver(globalLogPublisher, [levels])
"""Where every echotwist logger sends its events: C{Logger(observer=logObserver)}."""

# The names --log-level takes, lowest first (Twisted's LogLevel names).
LEVEL_NAMES = tuple(level.name for level in LogLevel.iterconstants())


def parseLogLevel(text: str) -> tuple[str, LogLevel]:
    """Parse C{LEVEL} or C{NAMESPACE=LEVEL} into (namespace, level).

    The namespace is empty for the default level; a namespace covers
    those below it (C{echotwist.protocol} covers
    C{echotwist.protocol.Echo}).  Raise C{ValueError} for a level that is
    not one of L{LEVEL_NAMES}.
    """
    namespace, _, name = text.rpartition("=")
    try:
        level = LogLevel.levelWithName(name.strip().lower())
    except InvalidLogLevelError:
        raise ValueError(
            f"invalid log level {name!r}: give one of {', '.join(LEVEL_NAMES)},"
            " or NAMESPACE=LEVEL"
        ) from None
    return namespace.strip(), level


def setLogLevels(
    settings: Iterable[tuple[str, LogLevel]],
    predicate: LogLevelFilterPredicate = levels,
) -> None:
    """Log only events at or above these levels: C{settings} as
    L{parseLogLevel} returns them, in order; info and above for the rest.
    """
    predicate.clearLogLevels()
    for namespace, level in settings:
        predicate.setLogLevelForNamespace(namespace, level)


class LogLevelsService(MultiService):
    """A L{MultiService} whose children log echotwist's events from
    C{settings} up (see L{setLogLevels}).

    The levels apply from its privileged start on, before any child
    listens (and logs it), and stay: lines logged while the process stops
    (a connection closed by the drain) are as filtered as the others.
    """

    def __init__(
        self,
        settings: Iterable[tuple[str, LogLevel]],
        predicate: LogLevelFilterPredicate = levels,
    ) -> None:
        MultiService.__init__(self)
        self.settings = list(settings)
        self.predicate = predicate

    def privilegedStartService(self) -> None:
        """Set the levels, then start the children's privileged part."""
        setLogLevels(self.settings, self.predicate)
        MultiService.privilegedStartService(self)

    def startService(self) -> None:
        """Set the levels (in case the privileged start was skipped), then
        start the children.
        """
        setLogLevels(self.settings, self.predicate)
        MultiService.startService(self)


# Keys of old-style (twisted.python.log) events that are bookkeeping, not
# structured fields: their content is already in "message".
_LEGACY_KEYS = frozenset(
    {"message", "format", "isError", "system", "printed", "time", "why", "failure"}
)


def eventAsJSONLine(event: LogEvent) -> str:
    """Format C{event} as one line of JSON, newline included."""
    level = event.get("log_level")
    when = event.get("log_time")
    record: dict[str, Any] = {
        "time": (
            datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
            if isinstance(when, int | float)
            else None
        ),
        "level": getattr(level, "name", None),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith("log_") and key not in _LEGACY_KEYS:
            record.setdefault(key, value)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["traceback"] = failure.getTraceback()
    # Values JSON cannot represent (addresses, objects) are shown as repr.
    return json.dumps(record, default=repr, ensure_ascii=False) + "\n"


def jsonObserver(outFile: IO[Any]) -> ILogObserver:
    """An observer writing L{eventAsJSONLine} records to C{outFile}."""
    return FileLogObserver(outFile, eventAsJSONLine)


def jsonLogger() -> ILogObserver:
    """The C{twistd --logger} factory: JSON lines on standard output.

    twistd calls this before it redirects C{sys.stdout} into the log, so
    the observer keeps the real standard output.
    """
    return jsonObserver(sys.stdout)
