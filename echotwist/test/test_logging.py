"""Unit tests for L{echotwist.logging}: log levels and JSON log lines."""

from __future__ import annotations

import io
import json
from typing import cast

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.logging import (
    LogLevelsService,
    eventAsJSONLine,
    jsonObserver,
    logObserver,
    parseLogLevel,
    setLogLevels,
)
from echotwist.protocol import Echo, EchoFactory


class JSONLogTests(SynchronousTestCase):
    """Each event is one flat JSON object on one line."""

    def test_structuredFields(self) -> None:
        """The message, level, time and the event's own fields are in the object."""
        out = io.StringIO()
        log = Logger(namespace="echotwist.protocol.Echo", observer=jsonObserver(out))
        log.info(
            "Closed client {host}/{port}: {bytes} bytes echoed in {duration:.3f} s",
            host="127.0.0.1",
            port="40000",
            bytes=5,
            duration=2.5,
        )
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        record = json.loads(lines[0])
        self.assertEqual(
            record["message"],
            "Closed client 127.0.0.1/40000: 5 bytes echoed in 2.500 s",
        )
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "echotwist.protocol.Echo")
        self.assertEqual(
            (record["host"], record["port"], record["bytes"], record["duration"]),
            ("127.0.0.1", "40000", 5, 2.5),
        )
        self.assertTrue(record["time"].endswith("+00:00"))
        self.assertFalse([key for key in record if key.startswith("log_")])

    def test_reasonAndNewlines(self) -> None:
        """A multi-line message stays on one line; a reason field is kept."""
        line = eventAsJSONLine(
            {
                "log_format": "two\nlines",
                "log_level": LogLevel.warn,
                "log_time": 0.0,
                "reason": "per-ip",
            }
        )
        self.assertEqual(line.count("\n"), 1)
        self.assertTrue(line.endswith("\n"))
        record = json.loads(line)
        self.assertEqual(
            (record["message"], record["reason"]), ("two\nlines", "per-ip")
        )
        self.assertEqual(record["time"], "1970-01-01T00:00:00.000+00:00")

    def test_failureAndUnserialisable(self) -> None:
        """A failure adds its traceback; other objects are shown by repr."""
        try:
            1 / 0  # noqa: B018 - the exception is the point.
        except ZeroDivisionError:
            failure = Failure()
        record = json.loads(
            eventAsJSONLine(
                {"log_format": "oops", "log_failure": failure, "address": object()}
            )
        )
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertTrue(record["address"].startswith("<object object"))

    def test_legacyEvent(self) -> None:
        """An old-style event keeps its text, not its bookkeeping keys."""
        record = json.loads(
            eventAsJSONLine(
                {
                    "message": ("(TCP Port 5000 Closed)",),
                    "isError": 0,
                    "system": "-",
                    "log_format": "{log_text}",
                    "log_text": "(TCP Port 5000 Closed)",
                }
            )
        )
        self.assertEqual(record["message"], "(TCP Port 5000 Closed)")
        self.assertNotIn("isError", record)


class LevelRecorder(Service):
    """Records echotwist's log level when its privileged start comes."""

    def __init__(self, predicate: LogLevelFilterPredicate) -> None:
        self.predicate = predicate
        self.seen: list[LogLevel] = []

    def privilegedStartService(self) -> None:
        """Record the level."""
        self.seen.append(self.predicate.logLevelForNamespace("echotwist"))


class LogLevelTests(SynchronousTestCase):
    """--log-level: which of echotwist's events reach the log."""

    def test_parse(self) -> None:
        """LEVEL sets the default, NAMESPACE=LEVEL one namespace's level."""
        self.assertEqual(parseLogLevel("warn"), ("", LogLevel.warn))
        self.assertEqual(
            parseLogLevel("echotwist.protocol=ERROR"),
            ("echotwist.protocol", LogLevel.error),
        )

    def test_parseInvalid(self) -> None:
        """An unknown level is a ValueError naming the levels there are."""
        with self.assertRaises(ValueError) as caught:
            parseLogLevel("echotwist=loud")
        self.assertEqual(
            str(caught.exception),
            "invalid log level 'loud': give one of debug, info, warn, error,"
            " critical, or NAMESPACE=LEVEL",
        )

    def emitted(self, predicate: LogLevelFilterPredicate) -> list[str]:
        """The messages that pass C{predicate}, of an info and a warn event
        each from echotwist.protocol.Echo and echotwist.server.
        """
        events: list[LogEvent] = []
        observer = FilteringLogObserver(cast(ILogObserver, events.append), [predicate])
        for namespace in ("echotwist.protocol.Echo", "echotwist.server"):
            log = Logger(namespace=namespace, observer=observer)
            log.info("info from {where}", where=namespace)
            log.warn("warn from {where}", where=namespace)
        return [formatEvent(event) for event in events]

    def test_levels(self) -> None:
        """A namespace's level covers those below it; the default the rest."""
        predicate = LogLevelFilterPredicate()
        self.assertEqual(len(self.emitted(predicate)), 4)
        setLogLevels([parseLogLevel("echotwist.protocol=warn")], predicate)
        self.assertEqual(
            self.emitted(predicate),
            [
                "warn from echotwist.protocol.Echo",
                "info from echotwist.server",
                "warn from echotwist.server",
            ],
        )
        setLogLevels([parseLogLevel("error")], predicate)
        self.assertEqual(self.emitted(predicate), [])
        setLogLevels([], predicate)
        self.assertEqual(len(self.emitted(predicate)), 4)

    def test_service(self) -> None:
        """The levels hold from the privileged start on, before any child's."""
        predicate = LogLevelFilterPredicate()
        service = LogLevelsService([parseLogLevel("warn")], predicate)
        child = LevelRecorder(predicate)
        child.setServiceParent(service)
        service.privilegedStartService()
        self.assertEqual(child.seen, [LogLevel.warn])
        service.startService()
        service.stopService()
        self.assertEqual(predicate.logLevelForNamespace("echotwist"), LogLevel.warn)

    def test_echotwistLoggers(self) -> None:
        """Echotwist's loggers (an Echo's, say) send through L{logObserver}."""
        self.assertIs(Echo.log.observer, logObserver)
        self.assertIs(EchoFactory.log.observer, logObserver)
