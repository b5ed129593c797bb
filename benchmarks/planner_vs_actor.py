"""A trained DeMo agent's planner against its own bare actor, under several planner settings.

The planner adds return only where planning through the learned model, with the critic's value at the end,
improves on the actor it starts from. This script takes one saved agent (``sample_efficiency.py
--save-models``) and evaluates, on the same episode starts, the bare actor and the planner with the settings
it trained with and with one change each (horizon, the critic's terminal value, samples, the actor's share
of them, the width of the search, the weights). Deterministic evaluation, as in ``sample_efficiency.py``.

Example (a HalfCheetah-v5 agent after 20k steps)::

    python benchmarks/planner_vs_actor.py \
        models/HalfCheetah-v5_branched-utd20-delay20_s1_demosac_branched-utd20-delay20_seed1.zip \
        --env HalfCheetah-v5 --episodes 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from harness import EVAL_SEED_OFFSET, RESULTS, table_header
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_demo import DeMoSAC, DeMoTD3

# name -> (planner settings over the trained ones, other DeMo settings over the trained ones)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "as trained": ({}, {}),
    "horizon 1": ({"horizon": 1}, {}),
    "horizon 5": ({"horizon": 5}, {}),
    "no terminal value": ({}, {"use_terminal_value": False}),
    "critic mean": ({}, {"critic_reduce": "mean"}),
    "400 samples": ({"num_samples": 400}, {}),
    "actor's share 0.5": ({"prior_fraction": 0.5}, {}),
    "narrow search (init_std 0.1)": ({"init_std": 0.1, "min_std": 0.05}, {}),
    "centred on the actor (shift prior)": ({"shift": "prior"}, {}),
    "centred on the actor, narrow": ({"shift": "prior", "init_std": 0.1, "min_std": 0.05}, {}),
    "standardised returns": ({"normalize_returns": True, "temperature": 0.5}, {}),
}


def evaluate(model: Any, env_id: str, episodes: int, seed: int) -> tuple[list[float], float]:
    """Episode returns of ``model.predict`` (deterministic) from the evaluation starts of ``seed``, and ms per step."""
    env = Monitor(gym.make(env_id))
    env.reset(seed=EVAL_SEED_OFFSET + seed)
    t0 = time.perf_counter()
    returns, lengths = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True
    )
    ms = 1000 * (time.perf_counter() - t0) / max(1, int(np.sum(lengths)))
    return [float(r) for r in np.atleast_1d(returns)], ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a saved DeMoSAC / DeMoTD3 (.zip)")
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", default="demosac", choices=["demosac", "demotd3"])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="evaluation starts of this seed (+10000), as in training")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    th.set_num_threads(1)
    cls = DeMoSAC if args.algo == "demosac" else DeMoTD3
    trained = cls.load(args.model, env=gym.make(args.env))
    rows: list[dict[str, Any]] = []

    trained.predict_with_planner = False
    returns, ms = evaluate(trained, args.env, args.episodes, args.seed)
    rows.append({"policy": "bare actor", "returns": returns, "ms_per_step": ms})
    for name in args.variants:
        planner_change, demo_change = VARIANTS[name]
        model = cls.load(
            args.model,
            env=gym.make(args.env),
            planner_kwargs={**trained.planner_kwargs, **planner_change},
            predict_with_planner=True,
            **demo_change,
        )
        returns, ms = evaluate(model, args.env, args.episodes, args.seed)
        rows.append({"policy": f"planner, {name}", "returns": returns, "ms_per_step": ms})
        print(f"{name}: {np.mean(returns):.1f} ({ms:.1f} ms per step)", flush=True)

    actor = float(np.mean(rows[0]["returns"]))
    lines = [f"{args.env}, {Path(args.model).name}, {args.episodes} episodes", ""]
    lines += table_header("policy", "return per episode", "mean", "minus the bare actor's", "ms per step")
    for row in rows:
        mean = float(np.mean(row["returns"]))
        per_episode = " / ".join(f"{r:.0f}" for r in row["returns"])
        lines.append(
            f"| {row['policy']} | {per_episode} | {mean:.1f} | {mean - actor:+.1f} | {row['ms_per_step']:.1f} |"
        )
    print("\n".join(lines))
    out = {"model": args.model, "env": args.env, "episodes": args.episodes, "rows": rows}
    out["command"] = "python benchmarks/planner_vs_actor.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"planner_vs_actor_{args.env}{args.tag}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
