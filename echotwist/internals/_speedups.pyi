"""Types of the C extension; its behaviour is described in speedups.py."""

from collections.abc import Callable

def writeAtOnce(connection: object, data: bytes, /) -> None: ...

class Dispatcher:
    def __init__(
        self,
        selectables: dict[int, object],
        leanType: type,
        other: Callable[[object, int, int], object],
        disconnect: Callable[[object, object, bool], object],
        failed: Callable[[object, int, BaseException], object],
        done: object,
        lost: object,
    ) -> None: ...
    def poll(self, epfd: int, timeout: float | None, maxevents: int, /) -> None: ...
