"""Run trial and end with one line C{N passed, N failed}.

C{python tools/trialsummary.py -- COMMAND...} runs COMMAND, passes its
output through, then translates trial's closing C{PASSED (successes=N)} or
C{FAILED (failures=F, errors=E, successes=S, ...)} into the plain line CI
reads, and exits with trial's status.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence

_SUMMARY = re.compile(r"^(PASSED|FAILED) \((?P<counts>[^)]*)\)\s*$")


def summarize(output: str) -> tuple[int, int, int] | None:
    """Return C{(passed, failed, skipped)} from trial's output, if it has a summary.

    Failures, errors and unexpected successes count as failed; expected
    failures count as passed (they behaved as declared).
    """
    for line in reversed(output.splitlines()):
        match = _SUMMARY.match(line.strip())
        if match is None:
            continue
        counts: dict[str, int] = {}
        for part in match.group("counts").split(","):
            if "=" in part:
                name, value = part.split("=", 1)
                counts[name.strip()] = int(value)
        passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
        failed = (
            counts.get("failures", 0)
            + counts.get("errors", 0)
            + counts.get("unexpectedSuccesses", 0)
        )
        return passed, failed, counts.get("skips", 0)
    return None


def main(argv: Sequence[str]) -> int:
    """Run the command after C{--} and print the summary line."""
    command = list(argv[argv.index("--") + 1 :] if "--" in argv else argv)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        sys.stdout.write(line)
        lines.append(line)
    status = process.wait()
    result = summarize("".join(lines))
    if result is None:
        print("0 passed, 1 failed")
        return status or 1
    passed, failed, skipped = result
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if failed and status == 0:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
