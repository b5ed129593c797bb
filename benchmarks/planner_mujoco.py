"""DMD-MPC through the true simulator (MuJoCoRolloutDynamics), no learning.

Runs one episode per seed and prints the return, the episode length and the planning time per step::

    python benchmarks/planner_mujoco.py --env InvertedPendulum-v5 --steps 1000 --horizon 15 \
        --samples 30 --iterations 2
    python benchmarks/planner_mujoco.py --env HalfCheetah-v5 --steps 300 --horizon 10 --samples 100 \
        --iterations 3

The planner rolls full physics states (float64) through ``mujoco.rollout``; rewards and terminations are
the env's own. ``--terminal-value upright`` (InvertedPendulum only) adds a hand-written quadratic terminal
value ``-(5 x^2 + 20 theta^2 + 0.5 xdot^2 + 0.5 thetadot^2)`` of the observation: no learning, but a
planning objective beyond the env's reward. The env's reward alone (+1 while ``|theta| <= 0.2``) says
nothing about the cart's position, and without it the cart drifts into the end of its rail.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch as th

from sb3_demo import DMDMPCPlanner, MuJoCoRolloutDynamics


def upright_value(obs: th.Tensor) -> th.Tensor:
    """InvertedPendulum: quadratic penalty on ``[x, theta, xdot, thetadot]`` (cart centred, pole upright)."""
    weights = th.tensor([5.0, 20.0, 0.5, 0.5], dtype=obs.dtype, device=obs.device)
    return -(weights * obs**2).sum(dim=1)


TERMINAL_VALUES = {"none": None, "upright": upright_value}


def run_episode(
    env_id: str,
    steps: int,
    horizon: int,
    samples: int,
    iterations: int,
    temperature: float,
    seed: int,
    nthread: int | None,
    **planner_kwargs,
) -> dict[str, float]:
    """Plan-and-act for up to ``steps`` env steps; return the episode's statistics."""
    env = gym.make(env_id, max_episode_steps=steps)
    env.reset(seed=seed)
    dynamics = MuJoCoRolloutDynamics(env, nthread=nthread)
    planner = DMDMPCPlanner(
        dynamics,
        dynamics.action_dim,
        horizon=horizon,
        num_samples=samples,
        num_iterations=iterations,
        temperature=temperature,
        action_low=env.action_space.low,
        action_high=env.action_space.high,
        dtype=th.float64,
        seed=seed,
        **planner_kwargs,
    )
    total, length, terminated = 0.0, 0, False
    plan_time = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        result = planner.plan(dynamics.state_from_env()[None])
        plan_time += time.perf_counter() - start
        _, reward, terminated, truncated, _ = env.step(result.action[0].numpy().astype(np.float32))
        total += float(reward)
        length += 1
        if terminated or truncated:
            break
    dynamics.close()
    return {
        "return": total,
        "length": length,
        "terminated": bool(terminated),
        "plan_ms_per_step": 1e3 * plan_time / max(length, 1),
        "physics_steps_per_control_step": samples * iterations * horizon * dynamics.frame_skip,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--nthread", type=int, default=None)
    parser.add_argument("--init-std", type=float, default=0.5)
    parser.add_argument("--terminal-value", choices=sorted(TERMINAL_VALUES), default="none")
    args = parser.parse_args()
    th.set_num_threads(1)
    for seed in args.seeds:
        stats = run_episode(
            args.env,
            args.steps,
            args.horizon,
            args.samples,
            args.iterations,
            args.temperature,
            seed,
            args.nthread,
            init_std=args.init_std,
            terminal_value=TERMINAL_VALUES[args.terminal_value],
        )
        config = {
            "env": args.env,
            "seed": seed,
            "horizon": args.horizon,
            "samples": args.samples,
            "iterations": args.iterations,
            "init_std": args.init_std,
            "terminal_value": args.terminal_value,
        }
        print(json.dumps({**config, **stats}), flush=True)


if __name__ == "__main__":
    main()
