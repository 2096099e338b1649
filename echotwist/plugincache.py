"""C{python -m echotwist.plugincache}: write Twisted's plugin cache after installing.

twistd finds its plugins (echotwist's C{echo}, the C{fastepoll} and
C{uvloop} reactors, C{aiotcp:}) by scanning every C{twisted/plugins}
directory on the path, and keeps what it found in a C{dropin.cache} file
beside them.  Whenever a plugin file is as new as the cache or newer (or
there is none) it imports every plugin module again and rewrites the
cache.  pip installs no cache, so the first C{twistd} to run writes it;
when that user cannot (a virtualenv owned by root run by another user, or
C{ProtectSystem=strict} under systemd), every start imports everything
again and logs C{Unable to write to plugin cache .../dropin.cache: error
number 13}.

Run this once after each install or upgrade, as the user who installed
(C{sudo /opt/echotwist/bin/python -m echotwist.plugincache}): it writes
every directory's cache through Twisted's own C{getCache}, then checks
each is fresh as twistd will judge it, and prints one line per cache, or
per cache it could not write (exit status 1).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from twisted.plugin import getCache
from twisted.python.filepath import FilePath
from twisted.python.modules import getModule

import twisted.plugins


def pluginDirectories() -> list[FilePath[str]]:
    """Every directory that holds modules of C{twisted.plugins}."""
    directories: list[FilePath[str]] = []
    for module in getModule("twisted.plugins").iterModules():
        directory = module.filePath.parent()
        if directory not in directories:
            directories.append(directory)
    return directories


def isFresh(directory: FilePath[str]) -> bool:
    """Whether twistd will use C{directory}'s cache as it is, not rewrite it.

    Twisted rewrites a cache that is missing or not older than some
    plugin module beside it (C{twisted.plugin.getCache}).
    """
    cache = directory.child("dropin.cache")
    if not cache.isfile():
        return False
    written = cache.getModificationTime()
    return all(
        module.getModificationTime() < written
        for module in directory.children()
        if module.basename().endswith(".py")
    )


def report(directories: Iterable[FilePath[str]], out: TextIO, err: TextIO) -> int:
    """Say which caches are fresh (on C{out}) and which not (on C{err}).

    Return the exit status: 0 when all are, 1 otherwise.
    """
    status = 0
    for directory in directories:
        cache = directory.child("dropin.cache").path
        if isFresh(directory):
            out.write(f"{cache}: up to date\n")
        else:
            err.write(
                f"echotwist.plugincache: error: cannot write {cache}: run this as"
                f" the user who may write {directory.path} (who installed there)\n"
            )
            status = 1
    return status


def main(
    argv: Sequence[str] = (), out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Write every plugin cache, then report on each (see L{report})."""
    if argv:
        err.write("usage: python -m echotwist.plugincache (no arguments)\n")
        return 2
    # Loads each stale directory's plugins and writes its cache; a failure
    # to write is only logged, so report() checks the result itself.
    getCache(twisted.plugins)
    return report(pluginDirectories(), out, err)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
