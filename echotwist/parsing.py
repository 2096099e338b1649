"""Parsing numbers from the command line: one parser per kind, one wording.

Every option of the server, the client, ping and the load generator that
takes a number goes through here, so a bad value is reported the same way
everywhere: C{invalid WHAT 'TEXT': must be ...} (or C{: not a number}).
Only ASCII decimal digits are numbers: Python's C{int()} would also take
other scripts' digits (C{'١٢'} is 12) and underscores (C{'1_000'}), which
nobody types on purpose.  Decisions only, no I/O.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

HIGHEST_PORT = 65535
LOWEST_BACKLOG = 1
HIGHEST_BACKLOG = 65535

# What int() and float() may see: ASCII digits, an optional sign, and for
# real numbers a decimal point and exponent (no "inf", "nan" or "_").
_WHOLE = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# A file mode as chmod takes it (Twisted's unix: parser reads it with
# int(mode, 8), which also takes a 0o prefix).
_OCTAL = re.compile(r"(0[oO])?[0-7]+")
HIGHEST_FILE_MODE = 0o777


def parseWhole(
    text: str, what: str, lowest: int = 0, highest: int | None = None
) -> int:
    """C{text} as a whole number from C{lowest} to C{highest} (if given).

    @raise ValueError: C{invalid WHAT 'TEXT': ...}, saying what is wrong.
    """
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"invalid {what} {text!r}: not a whole number")
    value = int(stripped, 10)
    if highest is not None and not lowest <= value <= highest:
        raise ValueError(f"invalid {what} {text!r}: must be {lowest} to {highest}")
    if value < lowest:
        raise ValueError(f"invalid {what} {text!r}: must be {lowest} or more")
    return value


def parseReal(text: str, what: str, lowest: float = 0.0, above: bool = False) -> float:
    """C{text} as a finite number, at least C{lowest} (above it if C{above}).

    @raise ValueError: C{invalid WHAT 'TEXT': ...}, saying what is wrong.
    """
    stripped = text.strip()
    if not _REAL.fullmatch(stripped):
        raise ValueError(f"invalid {what} {text!r}: not a number")
    value = float(stripped)
    if not math.isfinite(value):
        raise ValueError(f"invalid {what} {text!r}: too large")
    if value < lowest or (above and value == lowest):
        bound = f"more than {lowest:g}" if above else f"{lowest:g} or more"
        raise ValueError(f"invalid {what} {text!r}: must be {bound}")
    return value


def parsePort(text: str, what: str = "port", lowest: int = 1) -> int:
    """A TCP or UDP port: 1 to 65535, or 0 to 65535 to listen on any port."""
    return parseWhole(text, what, lowest, HIGHEST_PORT)


def parseListenPort(text: str, what: str = "port") -> int:
    """A port to listen on: 0 to 65535, where 0 lets the system choose."""
    return parsePort(text, what, lowest=0)


def parseBacklog(text: str) -> int:
    """A listen backlog: 1 to 65535.

    Python turns a negative backlog into 0, which leaves room for a single
    waiting connection; Linux caps any backlog at C{net.core.somaxconn}
    (4096 by default since 5.4), and older kernels kept it in 16 bits, so
    more than 65535 is no larger queue; beyond 2**31 - 1 C{listen()} fails
    with C{OverflowError}.
    """
    return parseWhole(text, "backlog", LOWEST_BACKLOG, HIGHEST_BACKLOG)


def parseFileMode(text: str, what: str = "mode") -> int:
    """A file's permission bits in octal (C{666}, C{0o600}): 0 to 777.

    @raise ValueError: C{invalid WHAT 'TEXT': ...}, saying what is wrong.
    """
    stripped = text.strip()
    if not _OCTAL.fullmatch(stripped):
        raise ValueError(f"invalid {what} {text!r}: not an octal number")
    value = int(stripped, 8)
    if value > HIGHEST_FILE_MODE:
        raise ValueError(f"invalid {what} {text!r}: must be 0 to 777 (octal)")
    return value


def parseCount(text: str, what: str = "count", lowest: int = 0) -> int:
    """A count: a whole number, C{lowest} or more."""
    return parseWhole(text, what, lowest)


def parseSeconds(
    text: str, what: str = "number of seconds", positive: bool = False
) -> float:
    """A duration in seconds: 0 or more (more than 0 if C{positive})."""
    return parseReal(text, what, 0.0, above=positive)


def parseRate(text: str, what: str = "rate") -> float:
    """A rate (per second): 0 or more, where 0 means no limit."""
    return parseReal(text, what)


def argumentType(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """Make C{parse} an C{argparse} C{type=}: its message becomes the error.

    argparse would otherwise replace a C{ValueError}'s message with its own
    C{invalid NAME value}; C{name} is what argparse calls the type.
    """

    def parseArgument(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parseArgument.__name__ = name
    return parseArgument
