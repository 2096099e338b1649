"""A helper for tests of command lines: what a refused one does.

Not a test module: trial finds no tests here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase


def usageError(
    test: SynchronousTestCase, parse: Callable[[list[str]], object], argv: list[str]
) -> tuple[object, str]:
    """Call C{parse(argv)}, which must exit; return its exit code and stderr."""
    stderr = io.StringIO()
    with (
        contextlib.redirect_stderr(stderr),
        test.assertRaises(SystemExit) as raised,
    ):
        parse(argv)
    return raised.exception.code, stderr.getvalue()
