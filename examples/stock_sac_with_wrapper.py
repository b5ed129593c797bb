"""Stock SB3 SAC pulling MPC-guided actions: an env wrapper and a callback, nothing else changes.

Train ``stable_baselines3.SAC`` on Pendulum-v1 with :class:`sb3_demo.DeMoVecEnvWrapper` (the DMD-MPC planner
runs its action instead of SAC's, with SAC's actor as prior and its critic as terminal value) and
:class:`sb3_demo.DeMoCallback` (links the two, stores the executed action in the replay buffer). Then
evaluate the trained SAC twice: bare, and with the wrapper in the loop (no callback needed).

Run::

    python examples/stock_sac_with_wrapper.py            # 3000 steps: minutes on 2 CPU cores
    python examples/stock_sac_with_wrapper.py --steps 500  # a quick look
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_demo import DeMoCallback, DeMoVecEnvWrapper, DeMoWrapper

# the exact Pendulum model; swing-up needs a long look-ahead until SAC's critic is good
WRAPPER_KWARGS = dict(
    model="analytic",
    planner_kwargs=dict(horizon=15, num_samples=64, num_particles=1, num_iterations=2, temperature=0.1),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--n-envs", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(1)

    # 1. the wrapper goes around the VecEnv (inside VecNormalize, if you use one: VecNormalize(DeMoVecEnvWrapper(...)));
    #    it plans for all envs in one batch in this process, so SubprocVecEnv works too
    venv = DeMoVecEnvWrapper(make_vec_env("Pendulum-v1", n_envs=args.n_envs, seed=0), **WRAPPER_KWARGS)

    # 2. stock SAC, RL Zoo's Pendulum hyperparameters; the callback attaches SAC's networks to the planner
    model = SAC("MlpPolicy", venv, learning_rate=1e-3, seed=0, verbose=0)
    callback = DeMoCallback()
    model.learn(args.steps, callback=callback)
    print(f"planner's share of the executed actions: {venv.guide.num_planned / venv.guide.num_steps:.2f}")

    # 3. evaluation: the bare SAC actor, then SAC + planner (the wrapper alone, attached by hand)
    mean, std = evaluate_policy(model, Monitor(gym.make("Pendulum-v1")), n_eval_episodes=5)
    print(f"bare SAC actor:        {mean:8.1f} +/- {std:.1f}")
    guided_env = DeMoWrapper(Monitor(gym.make("Pendulum-v1")), agent=model, deterministic=True, **WRAPPER_KWARGS)  # type: ignore[arg-type]
    mean, std = evaluate_policy(model, guided_env, n_eval_episodes=5)
    print(f"SAC + planner wrapper: {mean:8.1f} +/- {std:.1f}")


if __name__ == "__main__":
    main()
