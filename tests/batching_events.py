"""A request queue that lets a test drive `Batcher` with events instead of wall time."""

from __future__ import annotations

import queue
from collections.abc import Sequence
from typing import Any

STUCK_SECONDS = 60.0  # only if a test declared too few quiet points: end the wait so the test fails, not hangs


class QuietQueue(queue.Queue):
    """The batcher's request queue, with simulated time.

    A timed wait (`get(timeout=t)`) returns the next request as soon as one is queued, however long that takes,
    and times out only at a quiet point the test declared: `quiet_after=[4, 8]` means "nothing more comes for
    now" once 4, and again once 8, requests have arrived. A timeout moves `clock()` on by `t`. The `t` of every
    timed wait is recorded in `waits`, in order, so a test sees whether the batcher waited the quiet gap or
    its patience.
    """

    def __init__(self, quiet_after: Sequence[int]) -> None:
        super().__init__()
        self.quiet_after = list(quiet_after)
        self.arrived = 0
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def _put(self, item: Any) -> None:
        if item is not None:  # None is the batcher's stop signal, not a request
            self.arrived += 1
        super()._put(item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if timeout is None:
            return super().get(block)
        with self.not_empty:
            self.waits.append(timeout)
            while not self._qsize():
                if self.quiet_after and self.arrived >= self.quiet_after[0]:
                    self.quiet_after.pop(0)
                    self.now += timeout
                    raise queue.Empty
                if not self.not_empty.wait(STUCK_SECONDS):
                    raise queue.Empty
            item = self._get()
            self.not_full.notify()
            return item
