"""Tests for L{benchmarks.procstat}: parsing C{/proc}, spread and ratios.

The parsers get text in the kernel's layouts; the readers get a fake
C{/proc} tree in a temporary directory (fd links are symlinks whose target
is C{socket:[INODE]}, as the kernel shows them), and one real read of this
test process's own C{/proc} entry.  The module comes from the source
tree's C{benchmarks} package; an installed C{echotwist.test} skips these
tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

try:
    from benchmarks.procstat import (
        ProcessStat,
        Spread,
        childPids,
        childrenOf,
        connectionsOf,
        cpuMicrosPerEcho,
        establishedInodes,
        parseContextSwitches,
        parseStat,
        parseStatusKiB,
        ratiosToFirst,
        readContextSwitches,
        readStat,
        roundRatiosToFirst,
        socketInode,
    )
except ImportError:
    # An installed echotwist.test: the lab is not shipped with it.
    skip = "needs the source tree's benchmarks package (run from its root)"


def statLine(pid: int, name: str, parent: int, utime: int, stime: int) -> str:
    """A C{/proc/PID/stat} line with the given fields, the rest zeros."""
    # Fields 3..52: state, ppid, 9 fields, utime (14), stime (15), the rest.
    after = ["S", str(parent), *["0"] * 9, str(utime), str(stime), *["0"] * 37]
    return f"{pid} ({name}) {' '.join(after)}\n"


# /proc/net/tcp as the kernel writes it: a listening socket on port 5000
# (0x1388, state 0A), the server's end of two connections on it (state 01),
# the client's end of one of them (local port 0xDA84), and a connection on
# port 5000 closing (state 06).
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 100 1 0000000023df3f15 100 0 0 10 0
   1: 0100007F:1388 0100007F:DA84 01 00000000:00000000 00:00000000 00000000  1000        0 101 1 0000000023df3f15 20 4 30 10 -1
   2: 0100007F:DA84 0100007F:1388 01 00000000:00000000 00:00000000 00000000  1000        0 102 1 0000000023df3f15 20 4 30 10 -1
   3: 0100007F:1388 0100007F:DA86 01 00000000:00000000 00:00000000 00000000  1000        0 103 1 0000000023df3f15 20 4 30 10 -1
   4: 0100007F:1388 0100007F:DA88 06 00000000:00000000 03:00000542 00000000     0        0 0 3 00000000654102cb
"""  # noqa: E501 (the kernel's line length)

TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1388 00000000000000000000000001000000:E000 01 00000000:00000000 00:00000000 00000000  1000        0 104 1 0000000000000000 20 4 30 10 -1
"""  # noqa: E501 (the kernel's line length)


class ParseTests(SynchronousTestCase):
    """The kernel's text becomes numbers."""

    def test_stat(self) -> None:
        """Pid, parent pid, user and system ticks are read from a stat line."""
        stat = parseStat(statLine(42, "twistd", 7, 150, 25))
        self.assertEqual(stat, ProcessStat(42, 7, 150, 25))
        self.assertEqual(stat.ticks, 175)

    def test_statNameWithSpacesAndParentheses(self) -> None:
        """A command name holding spaces and C{)} does not shift the fields."""
        self.assertEqual(
            parseStat(statLine(9, "a) (b c", 1, 3, 4)), ProcessStat(9, 1, 3, 4)
        )

    def test_contextSwitches(self) -> None:
        """Voluntary and involuntary context switches are summed."""
        status = (
            "Name:\tpython\nvoluntary_ctxt_switches:\t120\n"
            "nonvoluntary_ctxt_switches:\t7\n"
        )
        self.assertEqual(parseContextSwitches(status), 127)

    def test_statusKiB(self) -> None:
        """A KiB field is read by its exact name; a missing one is an error."""
        status = "Name:\tpython\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n"
        self.assertEqual(parseStatusKiB(status, "VmRSS"), 10240)
        self.assertEqual(parseStatusKiB(status, "VmHWM"), 20480)
        self.assertRaises(ValueError, parseStatusKiB, status, "VmRS")

    def test_children(self) -> None:
        """Only the processes whose parent is the given pid are its children."""
        stats = [
            ProcessStat(5, 1, 0, 0),
            ProcessStat(8, 5, 0, 0),
            ProcessStat(6, 5, 0, 0),
        ]
        self.assertEqual(childrenOf(5, stats), [6, 8])
        self.assertEqual(childrenOf(8, stats), [])

    def test_socketInode(self) -> None:
        """A socket link gives its inode; other links give None."""
        self.assertEqual(socketInode("socket:[12345]"), 12345)
        self.assertIsNone(socketInode("pipe:[12345]"))
        self.assertIsNone(socketInode("/dev/null"))

    def test_established(self) -> None:
        """Established connections count; listening and closing ones do not."""
        self.assertEqual(establishedInodes(TCP), {101, 102, 103})

    def test_establishedOnPort(self) -> None:
        """With a local port, a client's end of a connection does not count."""
        self.assertEqual(establishedInodes(TCP, 5000), {101, 103})
        self.assertEqual(establishedInodes(TCP, 5001), set())

    def test_establishedIPv6(self) -> None:
        """C{/proc/net/tcp6}'s longer addresses parse the same way."""
        self.assertEqual(establishedInodes(TCP6, 5000), {104})


class SummaryTests(SynchronousTestCase):
    """Spread over workers, CPU per echo and ratios to one worker."""

    def test_spread(self) -> None:
        """Least, most and total connections over the workers."""
        spread = Spread((12, 14, 11, 13))
        self.assertEqual((spread.least, spread.most, spread.total), (11, 14, 50))

    def test_imbalance(self) -> None:
        """Imbalance is the busiest worker's count over the mean."""
        self.assertEqual(Spread((10, 10)).imbalance(), 1.0)
        self.assertEqual(Spread((5, 15)).imbalance(), 1.5)
        self.assertEqual(Spread((0, 0)).imbalance(), 1.0)

    def test_cpuPerEcho(self) -> None:
        """Ticks become seconds at the tick rate, then µs per echo."""
        self.assertEqual(cpuMicrosPerEcho(300, 150_000, 100), 20.0)

    def test_cpuPerEchoWithoutEchoes(self) -> None:
        """No echoes is an error, not a division by zero."""
        self.assertRaises(ValueError, cpuMicrosPerEcho, 10, 0, 100)

    def test_ratiosToFirst(self) -> None:
        """Medians are compared with the smallest key's median."""
        ratios = ratiosToFirst({2: [90.0, 80.0, 100.0], 1: [100.0, 300.0, 50.0]})
        self.assertEqual(ratios, {1: 1.0, 2: 0.9})

    def test_roundRatiosToFirst(self) -> None:
        """Each round is compared with the same round of the smallest key."""
        ratios = roundRatiosToFirst(
            {2: [90.0, 330.0, 50.0], 1: [100.0, 300.0, 50.0], 4: [200.0]}
        )
        self.assertEqual(
            ratios, {1: (1.0, 1.0, 1.0), 2: (1.0, 0.9, 1.1), 4: (2.0, 2.0, 2.0)}
        )


class ReaderTests(SynchronousTestCase):
    """The readers find the files where the kernel puts them."""

    def fakeProc(self) -> Path:
        """A C{/proc} with a supervisor (10), two workers (11, 12) and pid 13."""
        proc = Path(self.mktemp())
        for pid, parent in ((10, 1), (11, 10), (12, 10), (13, 1)):
            (proc / str(pid) / "fd").mkdir(parents=True)
            (proc / str(pid) / "stat").write_text(statLine(pid, "py", parent, pid, 1))
        (proc / "self").mkdir()
        (proc / "net").mkdir()
        (proc / "net" / "tcp").write_text(TCP)
        (proc / "net" / "tcp6").write_text(TCP6)
        links = {
            10: ["/dev/null", "socket:[100]"],
            11: ["socket:[100]", "socket:[101]", "pipe:[7]"],
            12: ["socket:[103]", "socket:[104]", "socket:[102]"],
            13: ["socket:[101]"],
        }
        for pid, targets in links.items():
            for fd, target in enumerate(targets):
                os.symlink(target, proc / str(pid) / "fd" / str(fd))
        return proc

    def test_children(self) -> None:
        """The supervisor's children are found by scanning every process."""
        self.assertEqual(childPids(10, self.fakeProc()), [11, 12])

    def test_connections(self) -> None:
        """Each worker's established server-side sockets are counted."""
        spread = connectionsOf([11, 12], 5000, self.fakeProc())
        self.assertEqual(spread.counts, (1, 2))

    def test_ownProcess(self) -> None:
        """The test process's own real C{/proc} entry reads as itself."""
        stat = readStat(os.getpid())
        self.assertEqual((stat.pid, stat.parent), (os.getpid(), os.getppid()))
        self.assertGreater(stat.ticks + readContextSwitches(os.getpid()), 0)
