"""A training time budget kept as a promise: stop before an epoch that would not fit."""

from __future__ import annotations

import time


class EpochBudget:
    """Tracks a training's time against ``max_minutes`` (no limit when ``None``).

    Call :meth:`start` when training starts, :meth:`epoch_started` and :meth:`epoch_done` around each
    epoch; :meth:`another_fits` says whether one more epoch would end within the budget. It plans
    around the longest epoch so far, not the last: on a shared CPU epochs vary by half (an 80 s epoch
    after a 50 s one took the image model's hm bench to 20.4 of 20 minutes). The first epoch counts
    only until a second one is done: it also traces the training graph, a one-off (the GAN's first
    epoch took about twice its next ones in the gan bench)."""

    margin = 1.1

    def __init__(self, max_minutes: float | None):
        self.max_seconds = max_minutes * 60 if max_minutes else None
        self.epoch_seconds: list[float] = []
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def fraction_spent(self) -> float:
        """Elapsed time over the budget (0 without one)."""
        return self.elapsed() / self.max_seconds if self.max_seconds else 0.0

    def epoch_started(self) -> None:
        self._epoch_started = time.perf_counter()

    def epoch_done(self) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._epoch_started)

    @property
    def last_epoch(self) -> float:
        return self.epoch_seconds[-1] if self.epoch_seconds else 0.0

    @property
    def longest_epoch(self) -> float:
        planned = self.epoch_seconds[1:] or self.epoch_seconds
        return max(planned, default=0.0)

    def another_fits(self) -> bool:
        if not self.max_seconds:
            return True
        return self.elapsed() + self.margin * self.longest_epoch <= self.max_seconds
