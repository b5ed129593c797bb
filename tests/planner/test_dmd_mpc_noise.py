"""Coloured sampling noise (``noise_beta``): its statistics, and what it is for (finding a distant reward)."""

from __future__ import annotations

from typing import Any

import pytest
import torch as th

from sb3_demo.planner import DMDMPCPlanner
from sb3_demo.planner.dmd_mpc import colored_noise


def _covariance(noise: th.Tensor) -> th.Tensor:
    """(B, N, H, A) -> (H, H) covariance along the horizon, pooled over B, N and A."""
    x = noise.permute(0, 1, 3, 2).reshape(-1, noise.shape[2])
    return x.T @ x / x.shape[0]


@pytest.mark.parametrize("horizon", [1, 2, 3, 8, 15])
def test_white_noise_has_identity_covariance(horizon: int) -> None:
    noise = colored_noise((4, 5000, horizon, 2), 0.0, th.Generator().manual_seed(0), dtype=th.float64)
    assert noise.shape == (4, 5000, horizon, 2) and noise.dtype == th.float64
    th.testing.assert_close(_covariance(noise), th.eye(horizon, dtype=th.float64), atol=0.03, rtol=0)
    assert abs(float(noise.mean())) < 0.01


@pytest.mark.parametrize("beta, min_lag1", [(1.0, 0.4), (2.0, 0.75), (3.0, 0.85)])
def test_coloured_noise_keeps_unit_variance_and_correlates_neighbouring_steps(beta: float, min_lag1: float) -> None:
    noise = colored_noise((2, 10_000, 20, 1), beta, th.Generator().manual_seed(1), dtype=th.float64)
    cov = _covariance(noise)
    th.testing.assert_close(th.diagonal(cov), th.ones(20, dtype=th.float64), atol=0.05, rtol=0)
    lag1 = th.diagonal(cov, offset=1)
    assert float(lag1.min()) > min_lag1
    # more colour, more correlation; white noise has none
    white = colored_noise((2, 10_000, 20, 1), 0.0, th.Generator().manual_seed(1), dtype=th.float64)
    assert float(th.diagonal(_covariance(white), offset=1).abs().max()) < 0.05


def test_same_generator_state_same_noise() -> None:
    a = colored_noise((1, 3, 10, 2), 2.0, th.Generator().manual_seed(7))
    b = colored_noise((1, 3, 10, 2), 2.0, th.Generator().manual_seed(7))
    c = colored_noise((1, 3, 10, 2), 2.0, th.Generator().manual_seed(8))
    assert th.equal(a, b) and not th.equal(a, c)


class DistantGoal:
    """``x' = x + 0.1 u`` from x = 0 with u in [-1, 1]; reward 1 per step at x >= 2.5, nothing elsewhere.

    The goal needs 25 steps of full push: white noise's sums cancel and never get there in 40 steps, slowly
    varying (brown) sequences do.
    """

    state_dim = 1
    action_dim = 1
    can_terminate = False

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        next_states = states + 0.1 * actions
        return next_states, (next_states[:, 0] >= 2.5).to(states.dtype), th.zeros(states.shape[0], dtype=th.bool)


def distant_goal_planner(seed: int, **settings: Any) -> DMDMPCPlanner:
    """A float64 planner over :class:`DistantGoal` with unit initial spread."""
    return DMDMPCPlanner(DistantGoal(), 1, init_std=1.0, seed=seed, dtype=th.float64, **settings)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brown_noise_finds_a_reward_that_white_noise_cannot_see(seed: int) -> None:
    def first_plan(beta: float) -> float:
        planner = distant_goal_planner(seed, horizon=40, num_samples=200, num_iterations=1, noise_beta=beta)
        result = planner.plan(th.zeros(1, 1, dtype=th.float64))
        assert bool(((result.mean >= -1.0) & (result.mean <= 1.0)).all())  # bounds respected
        return float(result.expected_return[0])

    assert first_plan(0.0) == 0.0  # no white-noise sequence reached the goal
    assert first_plan(2.0) > 1.0  # the weighted brown sequences spend steps at the goal


def test_coloured_planner_is_reproducible_and_respects_bounds() -> None:
    def actions(seed: int) -> th.Tensor:
        planner = distant_goal_planner(
            seed, horizon=30, num_samples=64, num_iterations=2, noise_beta=2.0, action_low=-0.5, action_high=2.0
        )
        state, out = th.zeros(2, 1, dtype=th.float64), []
        for _ in range(5):
            action = planner.plan(state, deterministic=False).action
            assert bool(((action >= -0.5) & (action <= 2.0)).all())
            out.append(action)
            state = DistantGoal()(state, action)[0]
        return th.stack(out)

    assert th.equal(actions(0), actions(0)) and not th.equal(actions(0), actions(1))
