"""The analytic classic-control models equal gymnasium's ``step`` (reward and termination included)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_demo.dynamics import (
    MountainCarContinuousDynamics,
    PendulumDynamics,
    analytic_model_for,
)

NUM_CASES = 300


def _gym_steps(env_id: str, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Step the unwrapped gymnasium env from each given internal state."""
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    next_obs, rewards, terminated = [], [], []
    for state, action in zip(states, actions):
        env.state = np.array(state, dtype=np.float64)
        obs, reward, term, trunc, _ = env.step(np.array(action, dtype=np.float32))
        assert not trunc
        next_obs.append(np.asarray(obs, dtype=np.float64))
        rewards.append(float(reward))
        terminated.append(bool(term))
    env.close()
    return np.stack(next_obs), np.array(rewards), np.array(terminated)


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
def test_pendulum_equals_gymnasium(dtype: th.dtype) -> None:
    rng = np.random.default_rng(0)
    theta = rng.uniform(-3 * np.pi, 3 * np.pi, NUM_CASES)  # gymnasium keeps the angle unwrapped
    thdot = rng.uniform(-8.0, 8.0, NUM_CASES)
    # beyond the torque bounds too: both clip
    actions = rng.uniform(-3.0, 3.0, (NUM_CASES, 1)).astype(np.float32)
    next_obs, rewards, terminated = _gym_steps("Pendulum-v1", np.stack([theta, thdot], 1), actions)

    obs = th.tensor(np.stack([np.cos(theta), np.sin(theta), thdot], 1), dtype=dtype)
    model_next, model_rewards, model_terminated = PendulumDynamics()(obs, th.tensor(actions, dtype=dtype))

    assert model_next.shape == (NUM_CASES, 3) and model_next.dtype == dtype
    assert model_rewards.shape == (NUM_CASES,) and model_terminated.dtype == th.bool
    np.testing.assert_allclose(model_next.double().numpy(), next_obs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model_rewards.double().numpy(), rewards, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(model_terminated.numpy(), terminated)


def test_pendulum_rollout_tracks_gymnasium() -> None:
    """Chained steps (the planner's use) stay on gymnasium's trajectory."""
    env = gym.make("Pendulum-v1").unwrapped
    obs, _ = env.reset(seed=3)
    model = PendulumDynamics()
    state = th.tensor(obs, dtype=th.float64)[None]
    rng = np.random.default_rng(3)
    for _ in range(50):
        action = rng.uniform(-2.0, 2.0, 1).astype(np.float32)
        obs, reward, *_ = env.step(action)
        state, model_reward, _ = model(state, th.tensor(action, dtype=th.float64)[None])
        np.testing.assert_allclose(state[0].numpy(), obs, atol=1e-5)
        assert abs(model_reward.item() - reward) < 1e-5
    env.close()


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
def test_mountain_car_equals_gymnasium(dtype: th.dtype) -> None:
    rng = np.random.default_rng(1)
    position = rng.uniform(-1.2, 0.6, NUM_CASES)
    velocity = rng.uniform(-0.07, 0.07, NUM_CASES)
    # a few states pushed against the left wall and next to the goal
    position[:20] = -1.2
    velocity[:20] = -rng.uniform(0.0, 0.07, 20)
    position[20:60] = rng.uniform(0.4, 0.6, 40)
    actions = rng.uniform(-1.5, 1.5, (NUM_CASES, 1)).astype(np.float32)
    states = np.stack([position, velocity], 1)
    next_obs, rewards, terminated = _gym_steps("MountainCarContinuous-v0", states, actions)
    assert terminated.any() and not terminated.all()
    assert (next_obs[:20, 1] == 0.0).any()  # the wall stops the car

    model_next, model_rewards, model_terminated = MountainCarContinuousDynamics()(
        th.tensor(states, dtype=dtype), th.tensor(actions, dtype=dtype)
    )
    np.testing.assert_allclose(model_next.double().numpy(), next_obs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model_rewards.double().numpy(), rewards, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(model_terminated.numpy(), terminated)


def test_analytic_model_for() -> None:
    assert isinstance(analytic_model_for("Pendulum-v1"), PendulumDynamics)
    assert isinstance(analytic_model_for("MountainCarContinuous-v0"), MountainCarContinuousDynamics)
    with pytest.raises(ValueError, match="no analytic model for 'HalfCheetah-v5'"):
        analytic_model_for("HalfCheetah-v5")
