"""twistd's pid file: whether it can be written, found out before twistd tries.

twistd writes its pid file (C{twistd.pid} in the current directory unless
C{twistd --pidfile} names another, or C{--pidfile=} none) after the
service is built, and when it cannot (a directory the user may not write,
a read-only file system) it ends with a 30-line traceback.  The echo
plugin cannot change that, but it parses its options first:
L{pidFileProblem} tells beforehand, so that C{twistd echo} can end with
one line instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def pidFileProblem(
    path: str,
    isDirectory: Callable[[str], bool] = os.path.isdir,
    exists: Callable[[str], bool] = os.path.lexists,
    access: Callable[[str, int], bool] = os.access,
) -> str | None:
    """Why twistd could not write its pid file C{path}, or None if it could.

    An empty C{path} (C{--pidfile=}) is no pid file: nothing to write.
    A relative one is taken from the current directory, as twistd takes
    it.  twistd creates the file and removes it at exit, so its directory
    must be writable, and the file too if it is there already.
    """
    if not path:
        return None
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    if not isDirectory(directory):
        why = f"there is no directory {directory}"
    elif not access(directory, os.W_OK | os.X_OK):
        why = f"{directory} is not writable"
    elif exists(absolute) and not access(absolute, os.W_OK):
        why = f"{absolute} is not writable"
    else:
        return None
    return (
        f"cannot write twistd's pid file {absolute}: {why} (start it in a"
        " directory you can write, or give twistd --pidfile=PATH before echo,"
        " or --pidfile= for none)"
    )
