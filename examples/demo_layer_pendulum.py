"""The DeMo Layer on Pendulum-v1: a weak linear ARS policy, refined by DMD-MPC at predict time.

    python examples/demo_layer_pendulum.py

A linear policy cannot swing the pendulum up (the best ones score about -700 from random starts); with
the layer on top (the exact analytic model, 15-step plans seeded by the linear policy) the same policy
swings up and balances. The layer is an SB3 policy: ``evaluate_policy``, ``predict`` and save/load work.
"""

from __future__ import annotations

import os
import tempfile

import torch as th
from sb3_contrib import ARS
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_demo import DeMoPolicy


def main() -> None:
    th.set_num_threads(1)
    env = make_vec_env("Pendulum-v1", n_envs=5, seed=0)
    model = ARS(
        "LinearPolicy", "Pendulum-v1", n_delta=4, n_top=1, learning_rate=0.018, delta_std=0.1, zero_policy=False, seed=0
    )
    model.learn(3_000)
    base_mean, base_std = evaluate_policy(model, env, n_eval_episodes=5)
    print(f"linear ARS policy alone:       {base_mean:8.1f} +/- {base_std:.1f}")

    layer = DeMoPolicy.from_agent(model, dynamics="analytic", horizon=15, num_samples=100, num_iterations=3, seed=0)
    env.seed(0)
    layer_mean, layer_std = evaluate_policy(layer, env, n_eval_episodes=5)
    print(f"the same policy + DeMo Layer:  {layer_mean:8.1f} +/- {layer_std:.1f}")
    print(f"planner fallbacks to the base policy: {layer.num_fallbacks} of {layer.num_plans} actions")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "demo_layer.pt")
        layer.save(path)  # base policy weights, planner settings and the analytic model
        loaded = DeMoPolicy.load(path)
        obs = env.reset()
        print("reloaded layer acts:", loaded.predict(obs, deterministic=True)[0][:2].ravel())


if __name__ == "__main__":
    main()
