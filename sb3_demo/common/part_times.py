"""Where a DeMo algorithm's training time goes: wall-clock seconds per part, logged under ``time/``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# the parts a DeMo algorithm adds to (or shares with) its base algorithm's step
PARTS = ("planning", "imagination", "model_fit", "branched_rollouts", "gradient_steps")


class PartTimes:
    """Wall-clock seconds spent in each named part of training, accumulated since the algorithm was built.

    ``with part_times.measure("planning"): ...`` adds the block's duration to ``seconds["planning"]``;
    ``log`` records every total as ``time/<part>_s`` on an SB3 logger. What is not in a part (the env's
    step, the replay buffer, SB3's bookkeeping) is the run's wall clock minus their sum.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PARTS, 0.0)

    @contextmanager
    def measure(self, part: str) -> Iterator[None]:
        if part not in self.seconds:
            raise ValueError(f"unknown part {part!r}; known: {list(self.seconds)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - start

    def log(self, logger: Any) -> None:
        for part, seconds in self.seconds.items():
            logger.record(f"time/{part}_s", seconds)
