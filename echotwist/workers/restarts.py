"""When to replace a worker that exited, and when to give up: decided without I/O.

A worker that exits unexpectedly is replaced at once if it had been
serving for a while (L{STABLE_AFTER}); one that dies soon after it started
is replaced after a delay that doubles with each such death in a row
(L{FIRST_DELAY} up to L{MAX_DELAY}), so broken code or a broken machine
is not restarted in a tight loop.  More than C{limit} unexpected exits
within C{window} seconds is a crash loop: the supervisor gives up and
exits non-zero, so that systemd (C{Restart=on-failure}) or an operator
sees it.
"""

from __future__ import annotations

from collections import deque

# Defaults of --max-restarts and --restart-window.
DEFAULT_LIMIT = 5
DEFAULT_WINDOW = 60.0

# A worker that ran this many seconds before exiting had started fine (a
# worker takes about 0.35 s to start here): its replacement starts at once.
STABLE_AFTER = 2.0

# The delay before replacing a worker that died soon after starting,
# doubled for each such death of the same worker in a row, up to MAX_DELAY:
# with the default limit, 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s before giving up.
FIRST_DELAY = 0.1
MAX_DELAY = 8.0


class GiveUp(Exception):
    """Workers keep exiting: C{count} unexpected exits within C{window} seconds."""

    def __init__(self, count: int, window: float) -> None:
        Exception.__init__(self, count, window)
        self.count = count
        self.window = window

    def __str__(self) -> str:
        return (
            f"{self.count} unexpected worker exits within {self.window:g} s"
            " (see --max-restarts, --restart-window)"
        )


class RestartPolicy:
    """Decide the delay before each replacement, or that it is time to give up.

    C{limit}: the most unexpected exits tolerated within C{window} seconds
    (0: never give up).
    """

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        *,
        stableAfter: float = STABLE_AFTER,
        firstDelay: float = FIRST_DELAY,
        maxDelay: float = MAX_DELAY,
    ) -> None:
        self.limit = limit
        self.window = window
        self.stableAfter = stableAfter
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        # When the recent unexpected exits happened (within the window).
        self.exits: deque[float] = deque()
        # For each worker (by number): how many times in a row it died
        # soon after starting.
        self.earlyDeaths: dict[int, int] = {}

    def exited(self, worker: int, startedAt: float, now: float) -> float:
        """Worker C{worker}, started at C{startedAt}, exited unexpectedly at C{now}.

        Return the seconds to wait before starting its replacement; raise
        L{GiveUp} if this exit makes more than C{limit} within the window.
        """
        self.exits.append(now)
        while self.exits and self.exits[0] <= now - self.window:
            self.exits.popleft()
        if self.limit and len(self.exits) > self.limit:
            raise GiveUp(len(self.exits), self.window)
        if now - startedAt >= self.stableAfter:
            self.earlyDeaths[worker] = 0
            return 0.0
        deaths = self.earlyDeaths.get(worker, 0) + 1
        self.earlyDeaths[worker] = deaths
        return min(self.firstDelay * 2.0 ** (deaths - 1), self.maxDelay)
