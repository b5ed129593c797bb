"""LatencyStats: percentiles, counters, summary and SB3 logging under planner/ keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from stable_baselines3.common.logger import Logger

from sb3_demo.realtime import LatencyLoggerCallback, LatencyStats


def test_percentiles_and_counters():
    stats = LatencyStats()
    latencies = np.arange(1, 101) * 1e-4  # 0.1 .. 10 ms
    for i, lat in enumerate(latencies):
        missed = lat > 0.008
        stats.record(
            lat,
            deadline_missed=missed,
            overrun=max(0.0, lat - 0.008),
            period_overrun=lat > 0.0095,
            fallbacks=1 if i % 10 == 0 else 0,
            iterations=i % 5,
        )
    s = stats.summary()
    assert s["steps"] == 100
    assert s["latency_p50_ms"] == pytest.approx(np.percentile(latencies, 50) * 1e3)
    assert s["latency_p99_ms"] == pytest.approx(np.percentile(latencies, 99) * 1e3)
    assert s["latency_max_ms"] == pytest.approx(10.0)
    assert s["deadline_misses"] == 20 and s["deadline_miss_rate"] == pytest.approx(0.2)
    assert s["period_overruns"] == 5
    assert s["max_overrun_ms"] == pytest.approx(2.0)
    assert s["fallbacks"] == 10 and s["fallback_rate"] == pytest.approx(0.1)
    assert s["iterations_mean"] == pytest.approx(2.0) and s["iterations_min"] == 0


def test_window_bounds_memory_but_not_counters():
    stats = LatencyStats(window=10)
    for i in range(100):
        stats.record(0.001 * (i + 1), deadline_missed=True)
    assert stats.latencies.size == 10
    assert stats.summary()["latency_max_ms"] == pytest.approx(100.0)
    assert stats.summary()["latency_p50_ms"] > 90.0  # only the last 10 steps
    assert stats.deadline_misses == 100


def test_empty_and_bad_input():
    stats = LatencyStats()
    assert math.isnan(stats.summary()["latency_p50_ms"])
    with pytest.raises(ValueError, match="latency"):
        stats.record(-1.0)
    with pytest.raises(ValueError, match="latency"):
        stats.record(float("nan"))
    with pytest.raises(ValueError, match="window"):
        LatencyStats(window=0)


def test_logged_under_planner_keys():
    stats = LatencyStats()
    logger = Logger(folder=None, output_formats=[])
    stats.log(logger)
    assert logger.name_to_value == {}  # nothing before the first step
    stats.record(0.002, iterations=3, fallbacks=1)
    stats.log(logger)
    assert logger.name_to_value["planner/latency_p99_ms"] == pytest.approx(2.0)
    assert logger.name_to_value["planner/fallbacks"] == 1
    assert logger.name_to_value["planner/iterations_mean"] == 3
    assert all(key.startswith("planner/") for key in logger.name_to_value)


def test_logger_callback_logs_at_rollout_end():
    stats = LatencyStats()
    stats.record(0.004, deadline_missed=True)
    callback = LatencyLoggerCallback(stats)

    class FakeModel:
        logger = Logger(folder=None, output_formats=[])

    callback.model = FakeModel()  # type: ignore[assignment]
    callback.on_rollout_end()
    assert FakeModel.logger.name_to_value["planner/deadline_misses"] == 1
