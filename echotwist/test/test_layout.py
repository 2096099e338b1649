"""The shape of the package: no import cycles; the core imports without epoll."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import echotwist

PACKAGE = Path(echotwist.__file__).resolve().parent

# How long the child interpreter below may take.
WAIT = 60.0


def moduleName(path: Path) -> str:
    """The dotted name of the module at C{path} inside the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def importsOf(path: Path, known: set[str]) -> set[str]:
    """The C{known} modules that the module at C{path} imports, anywhere in it.

    Imports inside functions count too: a cycle closed at run time is
    still a cycle for a reader.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & known


def findCycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of C{graph} as a list of names (first repeated last), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph.get(name, ())):
            cycle = visit(imported, [*path, name])
            if cycle is not None:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle is not None:
            return cycle
    return None


class ImportCycleTests(SynchronousTestCase):
    """No module of echotwist imports itself back through others."""

    def test_findCycle(self) -> None:
        """The cycle finder finds a cycle where there is one, and none otherwise."""
        self.assertEqual(findCycle({"a": {"b"}, "b": {"a"}}), ["a", "b", "a"])
        self.assertIsNone(findCycle({"a": {"b"}, "b": {"c"}, "c": set()}))

    def test_noCycles(self) -> None:
        """The product modules (tests aside) form no import cycle."""
        paths = [p for p in PACKAGE.rglob("*.py") if "test" not in p.parts]
        known = {moduleName(p) for p in paths}
        # A package's __init__ is imported with each of its modules: an edge
        # to a module is an edge to its package too, but the package's own
        # __init__ imports nothing here, so the edges below suffice.
        graph = {moduleName(p): importsOf(p, known) - {moduleName(p)} for p in paths}
        self.assertIn("echotwist.tap", graph)
        self.assertIsNone(findCycle(graph))


class PortableCoreTests(SynchronousTestCase):
    """Echo, the plugin's glue and the client import where there is no epoll."""

    def test_withoutEpoll(self) -> None:
        """With C{select.epoll} gone (as on macOS or BSD), the core still imports."""
        script = (
            "import select, sys\n"
            "del select.epoll\n"
            "import echotwist.protocol, echotwist.tap, echotwist.client.cli\n"
            "import echotwist.client.oneshot, echotwist.client.ping\n"
            "from echotwist.protocol import Echo, EchoFactory\n"
            "assert 'twisted.internet.epollreactor' not in sys.modules\n"
            "assert 'twisted.internet.reactor' not in sys.modules\n"
            "print('imported')\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=str(PACKAGE.parent),
            check=False,
        )
        self.assertEqual((result.returncode, result.stdout), (0, "imported\n"))
