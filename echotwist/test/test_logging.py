"""Unit tests for L{echotwist.logging}: JSON log lines."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.logging import eventAsJSONLine, jsonObserver


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
