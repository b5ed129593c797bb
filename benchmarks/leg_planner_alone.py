"""The planner alone on the virtual-clock leg: how well DMD-MPC tracks with the nominal model, no critic and
no learning, against the hand-written IK tracker with and without action noise.

Separates the planner's settings from everything DeMoSAC learns: the tracking return (reward x 500 per
500-step episode, deterministic plans, 2 episodes) of a few planner settings through ``Leg2RNominalDynamics``,
and of ``ik_tracking_action`` with Gaussian noise (what exploration noise costs on this task).

Usage (from the repository root)::

    python benchmarks/leg_planner_alone.py
"""

from __future__ import annotations

import numpy as np
import torch as th

from sb3_demo import DMDMPCPlanner
from sb3_demo.envs import Leg2REnv, Leg2RNominalDynamics, ik_tracking_action
from sb3_demo.planner import PlannerConfig

BASE = dict(num_samples=32, num_iterations=2, init_std=0.5, prior_fraction=0.0)
SETTINGS = {
    "horizon 3, raw returns, temperature 1": dict(horizon=3),
    "horizon 10, raw returns, temperature 1": dict(horizon=10),
    "horizon 3, standardised returns, temperature 0.5": dict(horizon=3, normalize_returns=True, temperature=0.5),
}
EPISODES = 2


def planner_return(env: Leg2REnv, dynamics: Leg2RNominalDynamics, settings: dict, episode: int) -> float:
    planner = DMDMPCPlanner(dynamics, action_dim=2, config=PlannerConfig(**BASE, **settings), seed=episode)
    obs, _ = env.reset(seed=episode)
    total = 0.0
    for _ in range(500):
        result = planner.plan(th.as_tensor(obs[None], dtype=th.float32), deterministic=True)
        obs, reward, _, _, _ = env.step(result.action[0].numpy().astype(np.float32))
        total += float(reward)
    return total


def ik_return(env: Leg2REnv, noise: float, episode: int) -> float:
    rng = np.random.default_rng(episode)
    obs, _ = env.reset(seed=episode)
    total = 0.0
    for _ in range(500):
        action = np.clip(ik_tracking_action(obs, 0.03) + rng.normal(0.0, noise, 2), -1, 1).astype(np.float32)
        obs, reward, _, _, _ = env.step(action)
        total += float(reward)
    return total


def row(name: str, returns: list[float]) -> str:
    return f"| {name} | {', '.join(f'{r:.0f}' for r in returns)} | {np.mean(returns):.0f} |"


def main() -> None:
    th.set_num_threads(1)
    env = Leg2REnv(realtime=False)
    dynamics = Leg2RNominalDynamics()
    print("| policy | tracking return per episode | mean |\n|---|---|---|")
    try:
        for name, settings in SETTINGS.items():
            returns = [planner_return(env, dynamics, settings, e) for e in range(EPISODES)]
            print(row(f"planner, nominal model, {name}", returns))
        for noise in (0.0, 0.1, 0.2, 0.45):
            returns = [ik_return(env, noise, e) for e in range(EPISODES)]
            print(row(f"IK tracker, action noise std {noise}", returns))
    finally:
        env.close()


if __name__ == "__main__":
    main()
