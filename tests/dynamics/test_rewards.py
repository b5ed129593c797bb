"""Reward and termination functions against the environments' own ``step`` on recorded transitions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_demo.dynamics.rewards import (
    KNOWN_ENV_IDS,
    _double_pendulum_tip,
    reward_fn_for,
    termination_fn_for,
)


def record(env_id: str, steps: int, seed: int = 0, action_scale: float = 1.0) -> dict[str, th.Tensor]:
    """Random-action transitions (next_obs is the true post-step observation, also at episode ends)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows: dict[str, list] = {"obs": [], "action": [], "next_obs": [], "reward": [], "terminated": []}
    for _ in range(steps):
        action = env.action_space.sample() * action_scale
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, next_obs, reward, terminated)):
            rows[key].append(np.asarray(value, dtype=np.float64))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return {key: th.as_tensor(np.stack(value)) for key, value in rows.items()}


# tasks with an exact reward function (absolute tolerance)
EXACT_REWARDS = {
    "Pendulum-v1": 1e-5,  # float32 observations
    "MountainCarContinuous-v0": 1e-9,
    "InvertedPendulum-v5": 0.0,
    "Reacher-v5": 1e-5,  # float32 actions
}
EXACT_TERMINATIONS = ["MountainCarContinuous-v0", "InvertedPendulum-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"]
NEVER_TERMINATE = ["Pendulum-v1", "Reacher-v5", "Swimmer-v5", "HalfCheetah-v5"]
LEARNED_REWARDS = ["Swimmer-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"]


@pytest.mark.parametrize("env_id", sorted(EXACT_REWARDS))
def test_reward_matches_env(env_id: str) -> None:
    # MountainCar rarely reaches the goal at random: stronger pushes do sometimes
    data = record(env_id, 600, action_scale=1.0)
    fn = reward_fn_for(env_id)
    assert fn is not None
    predicted = fn(data["obs"], data["action"], data["next_obs"])
    assert predicted.shape == data["reward"].shape
    th.testing.assert_close(predicted, data["reward"], atol=EXACT_REWARDS[env_id], rtol=0.0)


def test_mountain_car_goal_reward_and_termination() -> None:
    # a state next to the goal, pushed right: the env terminates with +100
    env = gym.make("MountainCarContinuous-v0")
    env.reset(seed=0)
    env.unwrapped.state = np.array([0.449, 0.02])
    action = np.array([0.5], dtype=np.float32)
    next_obs, reward, terminated, _, _ = env.step(action)
    assert terminated
    obs_t = th.tensor([[0.449, 0.02]], dtype=th.float64)
    act_t = th.as_tensor(action, dtype=th.float64)[None]
    next_t = th.as_tensor(next_obs, dtype=th.float64)[None]
    env_id = "MountainCarContinuous-v0"
    term_fn, rew_fn = termination_fn_for(env_id), reward_fn_for(env_id)
    assert term_fn is not None and rew_fn is not None
    assert bool(term_fn(obs_t, act_t, next_t)[0])
    assert float(rew_fn(obs_t, act_t, next_t)[0]) == pytest.approx(reward, abs=1e-6)


@pytest.mark.parametrize("env_id", EXACT_TERMINATIONS)
def test_termination_matches_env(env_id: str) -> None:
    data = record(env_id, 800)
    fn = termination_fn_for(env_id)
    assert fn is not None
    predicted = fn(data["obs"], data["action"], data["next_obs"])
    assert predicted.dtype == th.bool and predicted.shape == (800,)
    expected = data["terminated"].bool()
    if env_id != "MountainCarContinuous-v0":  # the recording must contain terminations to be a real test
        assert expected.sum() >= 3
    assert th.equal(predicted, expected)


def test_inverted_double_pendulum_close_to_env() -> None:
    env_id = "InvertedDoublePendulum-v5"
    data = record(env_id, 1000)
    term_fn, rew_fn = termination_fn_for(env_id), reward_fn_for(env_id)
    assert term_fn is not None and rew_fn is not None
    expected = data["terminated"].bool()
    assert expected.sum() >= 10
    predicted = term_fn(data["obs"], data["action"], data["next_obs"])
    # the env reads the tip at the RK4 integrator's last stage: terminations may differ only near y = 1
    _, tip_height = _double_pendulum_tip(data["next_obs"])
    disagree = predicted != expected
    if disagree.any():
        assert (tip_height[disagree] - 1.0).abs().max() < 0.01
    assert disagree.float().mean() < 0.01
    reward = rew_fn(data["obs"], data["action"], data["next_obs"])
    agree = ~disagree
    error = (reward[agree] - data["reward"][agree]).abs()
    assert error.max() < 1e-3, error.max()
    assert error.mean() < 1e-4, error.mean()


@pytest.mark.parametrize("env_id", NEVER_TERMINATE)
def test_never_terminating_tasks(env_id: str) -> None:
    assert termination_fn_for(env_id) is None


@pytest.mark.parametrize("env_id", LEARNED_REWARDS)
def test_locomotion_rewards_are_learned(env_id: str) -> None:
    # the forward reward needs the root's x position, which the observation excludes
    assert reward_fn_for(env_id) is None


def test_registry_covers_the_issue_tasks() -> None:
    for name in [
        "InvertedPendulum",
        "InvertedDoublePendulum",
        "Reacher",
        "Swimmer",
        "HalfCheetah",
        "Hopper",
        "Walker2d",
        "Ant",
    ]:
        assert f"{name}-v5" in KNOWN_ENV_IDS


def test_unknown_env_id() -> None:
    assert reward_fn_for("MyRobot-v0") is None
    assert termination_fn_for("MyRobot-v0") is None
    with pytest.raises(ValueError, match="known env ids"):
        termination_fn_for("MyRobot-v0", strict=True)
    with pytest.raises(TypeError, match="env_id must be a string"):
        reward_fn_for(3)  # type: ignore[arg-type]
