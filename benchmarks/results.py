"""The result files: C{results.md} in sections, C{results.json}, ratios.

Each section of the benchmark (L{SECTIONS}) owns its part of
C{results.md} and of C{results.json}; running one section replaces its
part and keeps the others'.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

SECTIONS = ("servers", "workers")

# Marks where each section starts in results.md, so that running one
# section replaces its part of the file and keeps the others'.
_SECTION_MARK = re.compile(r"^<!-- section: (?P<name>[\w-]+) -->\n", re.MULTILINE)


def ratio(value: float, base: float) -> str:
    """Format C{value / base} as C{1.23x}; C{-} without a value or a base."""
    if not base or math.isnan(value) or math.isnan(base):
        return "-"
    return f"{value / base:.2f}x"


def splitSections(text: str) -> dict[str, str]:
    """The sections of a results.md, by name.

    Text before the first mark (all of a file written before sections
    existed) is the C{servers} section.
    """
    marks = list(_SECTION_MARK.finditer(text))
    head = text[: marks[0].start()] if marks else text
    sections = {"servers": head} if head.strip() else {}
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
        sections[mark.group("name")] = text[mark.end() : end]
    return sections


def mergeSections(previous: str, fresh: Mapping[str, str]) -> str:
    """results.md with the C{fresh} sections in place of C{previous}' ones."""
    sections = {**splitSections(previous), **fresh}
    order = [*SECTIONS, *sorted(set(sections) - set(SECTIONS))]
    return (
        "".join(
            f"<!-- section: {name} -->\n{sections[name].strip()}\n\n"
            for name in order
            if name in sections
        ).rstrip("\n")
        + "\n"
    )


def writeResults(
    output: Path, markdown: Mapping[str, str], raw: dict[str, Any]
) -> None:
    """Write the sections run into results.md and .json, keeping the others."""
    mdPath, jsonPath = output / "results.md", output / "results.json"
    previous = mdPath.read_text() if mdPath.exists() else ""
    mdPath.write_text(mergeSections(previous, markdown))
    try:
        old = json.loads(jsonPath.read_text()) if jsonPath.exists() else {}
    except ValueError:
        old = {}
    if "servers" not in markdown:
        # Only other sections ran: keep the servers' samples.
        raw = {**{k: v for k, v in old.items() if k not in SECTIONS}, **raw}
    for name in SECTIONS:
        if name != "servers" and name not in markdown and name in old:
            raw[name] = old[name]
    jsonPath.write_text(json.dumps(raw, indent=1) + "\n")
