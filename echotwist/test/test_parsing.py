"""Tests for L{echotwist.parsing}: one parser per kind of number, one wording."""

from __future__ import annotations

import argparse

from twisted.trial.unittest import SynchronousTestCase

from echotwist.parsing import (
    argumentType,
    parseBacklog,
    parseCount,
    parseFileMode,
    parseListenPort,
    parsePort,
    parseRate,
    parseSeconds,
    parseWhole,
)


class WholeNumberTests(SynchronousTestCase):
    """Whole numbers: ASCII digits only, range-checked, one-line errors."""

    def test_accepted(self) -> None:
        """Decimal digits with an optional sign and spaces around parse."""
        self.assertEqual(parseWhole(" 12 ", "count"), 12)
        self.assertEqual(parseWhole("+7", "count"), 7)
        self.assertEqual(parseWhole("-3", "offset", lowest=-5), -3)

    def test_notNumbers(self) -> None:
        """Other scripts' digits, underscores, fractions and words are refused."""
        for text in ("١٢", "1_000", "1.5", "many", "", "0x10"):
            with self.assertRaises(ValueError) as caught:
                parseWhole(text, "count")
            self.assertEqual(
                str(caught.exception), f"invalid count {text!r}: not a whole number"
            )

    def test_range(self) -> None:
        """Below the lowest or above the highest says the range."""
        with self.assertRaises(ValueError) as caught:
            parseWhole("99999999999999999999", "backlog", 0, 65535)
        self.assertEqual(
            str(caught.exception),
            "invalid backlog '99999999999999999999': must be 0 to 65535",
        )
        with self.assertRaises(ValueError) as caught:
            parseWhole("-1", "count")
        self.assertEqual(str(caught.exception), "invalid count '-1': must be 0 or more")


class KindsTests(SynchronousTestCase):
    """Each kind of number has its range."""

    def test_ports(self) -> None:
        """A port to reach is 1 to 65535; one to listen on may be 0."""
        self.assertEqual(parsePort("7"), 7)
        self.assertRaises(ValueError, parsePort, "0")
        self.assertRaises(ValueError, parsePort, "65536")
        self.assertEqual(parseListenPort("0"), 0)
        self.assertRaises(ValueError, parseListenPort, "-1")

    def test_backlog(self) -> None:
        """A backlog is 1 to 65535, and a bad one says that range."""
        self.assertEqual(parseBacklog("1024"), 1024)
        self.assertEqual(parseBacklog("1"), 1)
        self.assertEqual(parseBacklog("65535"), 65535)
        for text in ("0", "-1", "65536", "99999999999999999999"):
            with self.assertRaises(ValueError) as caught:
                parseBacklog(text)
            self.assertEqual(
                str(caught.exception), f"invalid backlog {text!r}: must be 1 to 65535"
            )
        self.assertRaises(ValueError, parseBacklog, "١٢")

    def test_fileMode(self) -> None:
        """A file mode is octal, 0 to 777, in ASCII digits only."""
        self.assertEqual(parseFileMode("666"), 0o666)
        self.assertEqual(parseFileMode("0o600"), 0o600)
        self.assertEqual(parseFileMode("0"), 0)
        for text in ("٦٦٦", "8", "1_0", "", "-1", "rw"):
            with self.assertRaises(ValueError) as caught:
                parseFileMode(text)
            self.assertEqual(
                str(caught.exception), f"invalid mode {text!r}: not an octal number"
            )
        with self.assertRaises(ValueError) as caught:
            parseFileMode("1000")
        self.assertEqual(
            str(caught.exception), "invalid mode '1000': must be 0 to 777 (octal)"
        )

    def test_counts(self) -> None:
        """Counts are whole numbers, 0 or more unless said otherwise."""
        self.assertEqual(parseCount("10000"), 10000)
        for text in ("-1", "1.5", "many"):
            self.assertRaises(ValueError, parseCount, text)
        self.assertRaises(ValueError, parseCount, "0", "probes", 1)

    def test_seconds(self) -> None:
        """Durations are finite and not negative; some must be positive."""
        self.assertEqual(parseSeconds("2.5"), 2.5)
        self.assertEqual(parseSeconds(".5"), 0.5)
        self.assertEqual(parseSeconds("0"), 0.0)
        for text in ("-1", "inf", "nan", "soon", "1e400", "1_0"):
            self.assertRaises(ValueError, parseSeconds, text)
        with self.assertRaises(ValueError) as caught:
            parseSeconds("0", "timeout", positive=True)
        self.assertEqual(
            str(caught.exception), "invalid timeout '0': must be more than 0"
        )

    def test_rate(self) -> None:
        """A rate is 0 (no limit) or more, and says which option is wrong."""
        self.assertEqual(parseRate("1000", "--udp-rate"), 1000.0)
        with self.assertRaises(ValueError) as caught:
            parseRate("-1", "--udp-rate")
        self.assertEqual(
            str(caught.exception), "invalid --udp-rate '-1': must be 0 or more"
        )


class ArgumentTypeTests(SynchronousTestCase):
    """L{argumentType} makes argparse report the parser's own message."""

    def test_message(self) -> None:
        """A bad value raises ArgumentTypeError with the parser's message."""
        parse = argumentType(parsePort, "port")
        self.assertEqual(parse.__name__, "port")
        self.assertEqual(parse("80"), 80)
        with self.assertRaises(argparse.ArgumentTypeError) as caught:
            parse("http")
        self.assertEqual(
            str(caught.exception), "invalid port 'http': not a whole number"
        )
