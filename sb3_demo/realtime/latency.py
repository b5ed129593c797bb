"""Per-step planning latency statistics: p50 / p99 / max latency, deadline misses, fallbacks, iterations.

:class:`LatencyStats` collects one record per control step; :meth:`LatencyStats.summary` returns them as
a flat dict and :meth:`LatencyStats.log` records them in an SB3 logger under ``planner/`` keys
(:class:`LatencyLoggerCallback` does that at the end of every rollout).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from sb3_demo.checks import check_int


class LatencyStats:
    """Latency and outcome of every planning step.

    Counters (steps, misses, fallbacks, iterations) cover every recorded step; the percentiles cover the
    last ``window`` steps so that a long run keeps constant memory.

    :param window: latencies kept for the percentiles (None keeps all)
    """

    def __init__(self, window: int | None = 100_000) -> None:
        check_int("window", window, 1, allow_none=True)
        self.window = window
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self._latencies: deque[float] = deque(maxlen=self.window)
        self._start_delays: deque[float] = deque(maxlen=self.window)
        self.steps = 0
        self.deadline_misses = 0
        self.period_overruns = 0
        self.fallback_steps = 0  # steps where at least one environment fell back
        self.fallbacks = 0  # environments that fell back, summed over steps
        self.iterations_total = 0
        self.iterations_min: int | None = None
        self.iteration_steps = 0  # steps whose action came from at least one completed iteration
        self.stale_plans = 0  # plans made ahead that the observation contradicted, summed over environments
        self.late_plans = 0  # plans made ahead not ready (or not iterated) by the deadline, likewise
        self.max_overrun = 0.0  # seconds past the deadline, worst step

    def record(
        self,
        latency: float,
        *,
        deadline_missed: bool = False,
        overrun: float = 0.0,
        period_overrun: bool = False,
        fallbacks: int = 0,
        iterations: int = 0,
        start_delay: float | None = None,
        stale_plans: int = 0,
        late_plans: int = 0,
    ) -> None:
        """Add one control step.

        :param latency: seconds from the step's start (the observation) to the action being ready
        :param deadline_missed: the action was ready after the planning deadline
        :param overrun: seconds past the deadline (0 when met)
        :param period_overrun: the action was ready after the end of the control period
        :param fallbacks: environments (of the batch) whose action did not come from a plan
        :param iterations: planner iterations completed (of the plan the action came from; 0: none)
        :param start_delay: seconds from the step's start to the planner being called (time the control
            loop spent elsewhere, e.g. storing the transition), when known
        :param stale_plans: environments whose plan made ahead was dropped because the observation
            contradicted the prediction it was made for
        :param late_plans: environments whose plan made ahead was not ready by the deadline (or completed
            no iteration)
        """
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency}")
        self._latencies.append(float(latency))
        if start_delay is not None:
            self._start_delays.append(max(0.0, float(start_delay)))
        self.steps += 1
        self.deadline_misses += int(bool(deadline_missed))
        self.period_overruns += int(bool(period_overrun))
        self.fallbacks += int(fallbacks)
        self.fallback_steps += int(fallbacks > 0)
        self.iterations_total += int(iterations)
        self.iteration_steps += int(iterations > 0)
        self.stale_plans += int(stale_plans)
        self.late_plans += int(late_plans)
        self.iterations_min = iterations if self.iterations_min is None else min(self.iterations_min, iterations)
        self.max_overrun = max(self.max_overrun, float(overrun))

    @property
    def latencies(self) -> np.ndarray:
        """(n,) the latencies (seconds) in the window."""
        return np.fromiter(self._latencies, dtype=np.float64, count=len(self._latencies))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the latencies, in seconds (nan when empty)."""
        if not self._latencies:
            return math.nan
        return float(np.percentile(self.latencies, q))

    def summary(self) -> dict[str, float]:
        """Flat dict: ``steps``, ``latency_p50_ms``, ``latency_p99_ms``, ``latency_max_ms``,
        ``latency_mean_ms``, ``deadline_misses``, ``deadline_miss_rate``, ``period_overruns``,
        ``period_overrun_rate``, ``max_overrun_ms``, ``fallbacks``, ``fallback_steps``,
        ``fallback_rate`` (of steps), ``iterations_mean``, ``iterations_min``, ``iteration_step_rate`` (steps
        whose action came from at least one completed iteration), ``stale_plans`` and ``late_plans`` (plans
        made ahead that were dropped, see :class:`~sb3_demo.realtime.PlanAheadController`), and, when recorded,
        ``start_delay_p50_ms`` / ``start_delay_p99_ms`` (observation to planner call)."""
        lat = self.latencies
        steps = max(self.steps, 1)
        empty = lat.size == 0
        delays = np.fromiter(self._start_delays, dtype=np.float64, count=len(self._start_delays))
        extra = {}
        if delays.size:
            extra = {
                "start_delay_p50_ms": float(np.percentile(delays, 50) * 1e3),
                "start_delay_p99_ms": float(np.percentile(delays, 99) * 1e3),
            }
        return {
            "steps": float(self.steps),
            "latency_p50_ms": math.nan if empty else float(np.percentile(lat, 50) * 1e3),
            "latency_p99_ms": math.nan if empty else float(np.percentile(lat, 99) * 1e3),
            "latency_max_ms": math.nan if empty else float(lat.max() * 1e3),
            "latency_mean_ms": math.nan if empty else float(lat.mean() * 1e3),
            "deadline_misses": float(self.deadline_misses),
            "deadline_miss_rate": self.deadline_misses / steps,
            "period_overruns": float(self.period_overruns),
            "period_overrun_rate": self.period_overruns / steps,
            "max_overrun_ms": self.max_overrun * 1e3,
            "fallbacks": float(self.fallbacks),
            "fallback_steps": float(self.fallback_steps),
            "fallback_rate": self.fallback_steps / steps,
            "iterations_mean": self.iterations_total / steps,
            "iterations_min": math.nan if self.iterations_min is None else float(self.iterations_min),
            "iteration_step_rate": self.iteration_steps / steps,
            "stale_plans": float(self.stale_plans),
            "late_plans": float(self.late_plans),
            **extra,
        }

    def log(self, logger: Any, prefix: str = "planner/") -> None:
        """Record :meth:`summary` in an SB3 logger (``logger.record(prefix + key, value)``); nothing is
        recorded before the first step."""
        if self.steps == 0:
            return
        for key, value in self.summary().items():
            logger.record(prefix + key, value)

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"LatencyStats(steps={self.steps}, p50={s['latency_p50_ms']:.2f} ms, "
            f"p99={s['latency_p99_ms']:.2f} ms, max={s['latency_max_ms']:.2f} ms, "
            f"deadline_misses={self.deadline_misses}, fallbacks={self.fallbacks})"
        )


class LatencyLoggerCallback(BaseCallback):
    """Log a :class:`LatencyStats` in the model's logger (``planner/`` keys) at the end of every rollout.

    :param stats: the statistics to log (e.g. ``controller.stats``)
    :param prefix: key prefix
    """

    def __init__(self, stats: LatencyStats, prefix: str = "planner/", verbose: int = 0) -> None:
        super().__init__(verbose)
        self.stats = stats
        self.prefix = prefix

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.stats.log(self.logger, self.prefix)
