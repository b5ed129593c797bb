"""Integer settings: one check everywhere (numpy integers accepted, bools and floats refused, the name in
the error)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from sb3_demo import DeMoSAC, DMDMPCPlanner, PendulumDynamics
from sb3_demo.checks import check_int
from sb3_demo.dynamics import EnsembleDynamics


def test_numpy_integers_become_python_ints() -> None:
    value = check_int("horizon", np.int64(7), 1)
    assert value == 7 and type(value) is int
    assert check_int("max_lag", None, 1, allow_none=True) is None


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (True, {}, "horizon must be an integer >= 1, got True"),
        (2.0, {}, "horizon must be an integer >= 1, got 2.0"),
        (0, {}, "horizon must be an integer >= 1, got 0"),
        ("3", {}, "horizon must be an integer >= 1, got '3'"),
        (None, {}, "horizon must be an integer >= 1, got None"),
        (100, dict(high=99, allow_none=True), r"horizon must be None or an integer in \[1, 99\], got 100"),
    ],
)
def test_bad_values_are_named_with_their_range(value: Any, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_int("horizon", value, 1, **kwargs)


def test_numpy_integer_settings_are_accepted_across_layers() -> None:
    # a sweep over np.arange values reaches the planner, the model and the algorithm alike
    planner = DMDMPCPlanner(PendulumDynamics(), action_dim=1, horizon=np.int64(4), num_samples=np.int32(8))
    assert planner.horizon == 4 and type(planner.horizon) is int
    ensemble = EnsembleDynamics(observation_dim=3, action_dim=1, num_members=np.int64(3), num_elites=np.int64(2))
    assert ensemble.num_elites == 2
    agent = DeMoSAC("MlpPolicy", gym.make("Pendulum-v1"), model="analytic", policy_delay=np.int64(2))
    assert agent.policy_delay == 2 and type(agent.policy_delay) is int
    with pytest.raises(ValueError, match=r"policy_delay must be an integer >= 1, got np.int64\(0\)"):
        DeMoSAC("MlpPolicy", gym.make("Pendulum-v1"), model="analytic", policy_delay=np.int64(0))
