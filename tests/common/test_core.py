"""The planning core shared by the front ends: settings, schedule, executed-action record, plan step."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch as th

from sb3_demo import DMDMPCPlanner, PlannerConfig
from sb3_demo.common.executed_action import EXECUTED_ACTION_KEY, GUIDED_KEY, store_executed_actions
from sb3_demo.common.model_rollouts import BranchedRollouts, ModelRolloutRunner
from sb3_demo.common.policy_planner import DEFAULT_PLANNER_KWARGS, CriticValue, plan_step, planner_settings
from sb3_demo.common.schedule import DeMoSchedule


def point(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    nxt = states + actions
    return nxt, -nxt.square().sum(dim=1), th.zeros(states.shape[0], dtype=th.bool)


def test_unknown_planner_setting_names_the_key_and_the_allowed_ones() -> None:
    with pytest.raises(
        ValueError, match=r"DeMoX: planner_kwargs: unknown planner setting\(s\) \['horizn'\].*'horizon'"
    ):
        planner_settings({"horizn": 3}, DEFAULT_PLANNER_KWARGS, "DeMoX")
    with pytest.raises(ValueError, match="must not set"):
        planner_settings({"seed": 3}, DEFAULT_PLANNER_KWARGS, "DeMoX")
    with pytest.raises(ValueError, match="horizon"):
        planner_settings({"horizon": 0}, DEFAULT_PLANNER_KWARGS, "DeMoX")
    settings = planner_settings({"horizon": 7}, DEFAULT_PLANNER_KWARGS, "DeMoX")
    assert settings == {**DEFAULT_PLANNER_KWARGS, "horizon": 7}


def test_config_and_keyword_construction_build_the_same_planner() -> None:
    config = PlannerConfig(horizon=4, num_samples=16, num_iterations=2)
    assert PlannerConfig(**config.to_kwargs()) == config
    by_config = DMDMPCPlanner(point, action_dim=2, config=config, seed=0)
    by_keywords = DMDMPCPlanner(point, action_dim=2, horizon=4, num_samples=16, num_iterations=2, seed=0)
    states = th.tensor([[0.5, -0.5], [1.0, 0.0]])
    a, b = by_config.plan(states), by_keywords.plan(states)
    assert th.equal(a.action, b.action) and by_config.config == by_keywords.config
    # single settings apply over a config
    assert DMDMPCPlanner(point, action_dim=2, config=config, horizon=6).horizon == 6


def test_plan_step_hands_the_plan_to_the_augmentor_unless_it_fell_back() -> None:
    planner = DMDMPCPlanner(point, action_dim=2, horizon=3, num_samples=16, seed=0)
    states = th.tensor([[0.5, -0.5], [1.0, 0.0]])
    step = plan_step(planner, states, deterministic=True)
    imagination = step.imagination()
    assert imagination is not None and imagination[1].shape == (2, 3, 2)
    rows = step.imagination(np.array([1]))
    assert rows is not None and th.equal(rows[0], states[1:])
    step.result.fallback[0] = True
    assert step.imagination() is None
    assert step.imagination(np.array([0, 1])) is None  # the wrapper's guided rows: the same rule
    assert step.imagination(np.array([1])) is not None


def test_schedule() -> None:
    schedule = DeMoSchedule(model_train_freq=50, model_learning_starts=None, planner_starts="auto")
    assert not schedule.fit_due(99, learning_starts=100, last_fit=-1, transitions=99)
    assert not schedule.fit_due(100, learning_starts=100, last_fit=-1, transitions=5)  # too few transitions
    assert schedule.fit_due(100, learning_starts=100, last_fit=-1, transitions=100)
    assert not schedule.fit_due(149, learning_starts=100, last_fit=100, transitions=149)
    assert schedule.fit_due(150, learning_starts=100, last_fit=100, transitions=150)
    assert not schedule.planner_active(500, 100, learned_model=True, model_fitted=False)
    assert schedule.planner_active(0, 100, learned_model=True, model_fitted=True)
    assert not schedule.planner_active(99, 100, learned_model=False, model_fitted=False)
    assert schedule.planner_active(100, 100, learned_model=False, model_fitted=False)
    fixed = DeMoSchedule(planner_starts=300)
    assert not fixed.planner_active(299, 100, learned_model=True, model_fitted=True)
    assert fixed.planner_active(300, 100, learned_model=False, model_fitted=False)
    # branched rollouts start by the same rule, from their own ``rollouts_start``: never before a learned
    # model's first fit; by default at once for a fitted learned model, at learning_starts (100) otherwise
    for start in (None, 300):
        runner = ModelRolloutRunner(BranchedRollouts(rollouts_start=start))
        for steps, learned, fitted in itertools.product((0, 99, 100, 299, 300), (False, True), (False, True)):
            first = start if start is not None else (0 if learned else 100)
            expected = (fitted or not learned) and steps >= first
            assert runner.active(steps, 100, learned, fitted) == expected, (start, steps, learned, fitted)
    for bad in (dict(model_train_freq=True), dict(model_train_freq=0), dict(planner_starts="later")):
        with pytest.raises(ValueError):
            DeMoSchedule(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="critic_reduce"):
        CriticValue(reduce="max")  # type: ignore[arg-type]


class Scaler:
    def scale_action(self, action: np.ndarray) -> np.ndarray:
        return action / 2.0


def test_store_executed_actions() -> None:
    buffer_actions = np.zeros((3, 1), dtype=np.float32)
    infos = [
        {EXECUTED_ACTION_KEY: np.array([1.0]), GUIDED_KEY: True},
        {EXECUTED_ACTION_KEY: np.array([2.0]), GUIDED_KEY: False},
        {},
    ]
    assert store_executed_actions(buffer_actions, infos, Scaler(), guided_only=True) == 1
    np.testing.assert_array_equal(buffer_actions[:, 0], [0.5, 0.0, 0.0])
    assert store_executed_actions(buffer_actions, infos, Scaler()) == 2
    np.testing.assert_array_equal(buffer_actions[:, 0], [0.5, 1.0, 0.0])
