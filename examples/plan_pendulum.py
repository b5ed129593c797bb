"""Swing up Pendulum-v1 with DMD-MPC alone: the analytic model, no critic, no learning.

    python examples/plan_pendulum.py --episodes 3

Each control step the planner samples action sequences around its current plan, rolls them through the
exact torch model of the pendulum, and moves the plan towards the sequences with the best returns
(a mirror-descent step). The first action of the plan is executed. A return above about -200 means the
pendulum was swung up and balanced (RL Zoo's SAC reaches about -157 after 20k training steps).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch as th

from sb3_demo.dynamics import PendulumDynamics
from sb3_demo.planner import DMDMPCPlanner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3, help="episodes to run (seeds 0, 1, ...)")
    parser.add_argument("--horizon", type=int, default=20, help="planning horizon H (steps of 0.05 s)")
    parser.add_argument("--samples", type=int, default=200, help="sampled action sequences per iteration")
    parser.add_argument("--iterations", type=int, default=2, help="mirror-descent steps per control step")
    parser.add_argument("--gamma-std", type=float, default=1.0, help="step size of the std update")
    parser.add_argument("--seed", type=int, default=0, help="seed of the planner's random generator")
    parser.add_argument("--render", action="store_true", help="show the pendulum (needs a display)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    th.set_num_threads(1)  # small batches: one thread is fastest
    env = gym.make("Pendulum-v1", render_mode="human" if args.render else None)

    # the planner works in [-1, 1]; it passes torques in [-2, 2] to the model and returns them too
    planner = DMDMPCPlanner(
        PendulumDynamics(),
        action_dim=1,
        horizon=args.horizon,
        num_samples=args.samples,
        num_iterations=args.iterations,
        gamma_std=args.gamma_std,
        action_low=env.action_space.low,
        action_high=env.action_space.high,
        seed=args.seed,
    )
    print(planner)

    returns = []
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=episode)
        planner.reset()  # a fresh plan at the start of every episode
        episode_return, steps, start, done = 0.0, 0, time.perf_counter(), False
        while not done:
            result = planner.plan(th.as_tensor(obs)[None])  # a batch of one environment
            obs, reward, terminated, truncated, _ = env.step(result.action[0].numpy())
            episode_return += float(reward)
            steps += 1
            done = terminated or truncated
        ms_per_step = 1e3 * (time.perf_counter() - start) / steps
        print(f"episode {episode}: return {episode_return:8.1f}  ({steps} steps, {ms_per_step:.1f} ms per step)")
        returns.append(episode_return)
    env.close()
    print(f"mean return over {args.episodes} episodes: {np.mean(returns):.1f}")


if __name__ == "__main__":
    main()
