"""The planner alone (analytic model, no critic, no learning) swings up and balances Pendulum-v1."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th

from sb3_demo.dynamics import PendulumDynamics
from sb3_demo.planner import DMDMPCPlanner


def test_planner_swings_up_pendulum() -> None:
    num_episodes = 10
    envs = [gym.make("Pendulum-v1") for _ in range(num_episodes)]
    obs = np.stack([env.reset(seed=seed)[0] for seed, env in enumerate(envs)])
    planner = DMDMPCPlanner(
        PendulumDynamics(),
        action_dim=1,
        horizon=20,
        num_samples=200,
        num_iterations=2,
        gamma_std=1.0,
        action_low=envs[0].action_space.low,
        action_high=envs[0].action_space.high,
        seed=0,
    )
    returns = np.zeros(num_episodes)
    done = np.zeros(num_episodes, dtype=bool)
    upright_at_end = np.zeros(num_episodes, dtype=bool)
    while not done.all():
        actions = planner.plan(th.as_tensor(obs)).action.numpy()  # all episodes planned at once (B = 10)
        assert np.isfinite(actions).all() and np.abs(actions).max() <= 2.0
        for i, env in enumerate(envs):
            if done[i]:
                continue
            obs[i], reward, terminated, truncated, _ = env.step(actions[i])
            returns[i] += reward
            done[i] = terminated or truncated
            upright_at_end[i] = obs[i, 0] > 0.99  # cos(theta): within ~8 degrees of upright
    for env in envs:
        env.close()

    assert returns.mean() >= -200.0, returns
    assert upright_at_end.all(), "every episode should end balanced upright"
