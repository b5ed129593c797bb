"""Where training time goes: every part of a DeMo step is timed, within the run's wall clock, and logged."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import gymnasium as gym
import pytest
from stable_baselines3.common.logger import configure

from sb3_demo import DeMoSAC
from sb3_demo.common.part_times import PARTS, PartTimes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_part_is_timed_within_the_wall_clock_and_logged(tmp_path: Path) -> None:
    model = DeMoSAC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        planner_kwargs=dict(horizon=4, num_samples=24, num_particles=1, num_iterations=2),
        model_kwargs=dict(hidden_sizes=(32, 32), num_members=2, num_elites=1),
        model_train_freq=50,
        model_fit_kwargs=dict(max_grad_steps=20),
        branched_rollouts=dict(num_rollouts=16, rollout_freq=1, rollout_length=1),
        replay_buffer_kwargs=dict(imagined_fraction=0.5, imagined_buffer_size=10_000),
        learning_starts=50,
        batch_size=32,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    start = time.perf_counter()
    model.learn(200, log_interval=1)  # one Pendulum episode: the logs are written once, at its end
    wall = time.perf_counter() - start
    seconds = model.part_times.seconds
    assert set(seconds) == set(PARTS)
    assert all(seconds[part] > 0 for part in PARTS), seconds
    assert sum(seconds.values()) < wall
    with open(tmp_path / "progress.csv") as f:
        (logged,) = list(csv.DictReader(f))
    assert all(0 < float(logged[f"time/{part}_s"]) <= seconds[part] for part in PARTS), logged


def test_unknown_part_is_named_and_adds_nothing() -> None:
    times = PartTimes()
    with pytest.raises(ValueError, match="unknown part 'env'"):
        with times.measure("env"):
            pass
    assert sum(times.seconds.values()) == 0
