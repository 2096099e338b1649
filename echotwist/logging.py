"""JSON logs: C{twistd --logger=echotwist.logging.jsonLogger echo ...}.

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
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, formatEvent
from twisted.python.failure import Failure

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
