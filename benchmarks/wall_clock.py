"""Wall-clock per env step: DeMoSAC against SAC on Pendulum-v1, in one process, interleaved, several seeds.

The configurations are timed over the same number of env steps (``learn(steps)``, no evaluation):

- ``sac``: stable_baselines3.SAC with RL Zoo's Pendulum-v1 hyperparameters (lr 1e-3, one gradient step per
  env step, learning starts at 100);
- ``demosac-defaults``: ``DeMoSAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3)``: the class defaults, i.e.
  the 2022 reference planner with 2 iterations (horizon 3, 100 samples + 5 prior, 4 particles) and ensemble
  (7 members of 4x200, 5 elites, fitted every 250 steps with hold-out early stopping, at most 500
  gradient steps per fit);
- ``demosac-zoo``: the Pendulum-v1 entry of ``zoo_hyperparams/demorl_sac.yml`` (what
  ``python -m rl_zoo3.train --algo demorl_sac --env Pendulum-v1`` and ``make demo`` train: analytic model);
- ``demosac-bench``: the learned-ensemble settings of ``benchmarks/sample_efficiency.py`` (the
  steps-to-threshold numbers in BENCHMARKS.md), with RL Zoo's SAC settings;
- ``demosac-reference``: the 2022 reference: planner with 5 iterations, fits until early stopping (no cap);
- ``demosac-it2`` / ``demosac-p1``: the reference with 2 iterations / 1 particle (fits not capped).

After training, each run's deterministic policy (the planner for DeMoSAC) is evaluated on ``--eval-episodes``
episodes (not timed): a rough check that a cheaper setting did not buy its speed with its return.

Every configuration runs in this process with one torch thread, seeds interleaved (every configuration for
seed 0, then seed 1, ...), so machine noise hits all of them alike. Prints a markdown table of ms per env step
and the ratios to SAC, writes ``benchmarks/results/wall_clock_pendulum<tag>.json``.

    python benchmarks/wall_clock.py --steps 1500 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from harness import RESULTS, ROOT, zoo_hyperparams
from stable_baselines3 import SAC
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_demo import DeMoSAC
from sb3_demo.common.policy_planner import REFERENCE_PLANNER_KWARGS


def zoo_entry() -> dict[str, Any]:
    """The Pendulum-v1 entry of our RL Zoo file, as rl_zoo3.train reads it (``policy`` left out)."""
    entry, _ = zoo_hyperparams("demorl_sac", "Pendulum-v1", ROOT / "zoo_hyperparams" / "demorl_sac.yml")
    entry.pop("policy")
    return entry


def make(config: str, seed: int) -> Any:
    if config == "sac":
        return SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=seed)
    if config == "demosac-defaults":
        return DeMoSAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=seed)
    if config in ("demosac-reference", "demosac-it2", "demosac-p1"):
        change = {"demosac-it2": {"num_iterations": 2}, "demosac-p1": {"num_particles": 1}}.get(config, {})
        planner_kwargs = {**REFERENCE_PLANNER_KWARGS, **change}
        return DeMoSAC(
            "MlpPolicy",
            "Pendulum-v1",
            learning_rate=1e-3,
            seed=seed,
            planner_kwargs=planner_kwargs,
            model_fit_kwargs={"max_grad_steps": None},  # the reference fits until early stopping
        )
    if config == "demosac-zoo":
        return DeMoSAC("MlpPolicy", "Pendulum-v1", seed=seed, **zoo_entry())
    from sample_efficiency import DEMO_SETTINGS  # this folder is on sys.path when run as a script

    return DeMoSAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=seed, **DEMO_SETTINGS["Pendulum-v1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=["sac", "demosac-defaults", "demosac-zoo", "demosac-bench"])
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    th.set_num_threads(1)
    ms: dict[str, list[float]] = {c: [] for c in args.configs}
    returns: dict[str, list[float]] = {c: [] for c in args.configs}
    for seed in args.seeds:
        for config in args.configs:
            model = make(config, seed)
            t0 = time.perf_counter()
            model.learn(args.steps)
            ms[config].append(1000 * (time.perf_counter() - t0) / args.steps)
            eval_env = Monitor(gym.make("Pendulum-v1"))
            eval_env.reset(seed=10_000 + seed)
            returns[config].append(float(evaluate_policy(model, eval_env, args.eval_episodes)[0]))
            print(f"seed {seed} {config}: {ms[config][-1]:.1f} ms/step, return {returns[config][-1]:.0f}", flush=True)
    lines = [
        f"Pendulum-v1, {args.steps} env steps per run, seeds {args.seeds}, 1 torch thread",
        "",
        "| configuration | ms / env step per seed | mean | ratio to SAC (mean of per-seed ratios) "
        f"| eval return after training ({args.eval_episodes} episodes) per seed |",
        "|---|---|---|---|---|",
    ]
    for config, values in ms.items():
        ratio = np.mean([v / s for v, s in zip(values, ms["sac"])]) if "sac" in ms else float("nan")
        per_seed = ", ".join(f"{v:.1f}" for v in values)
        rets = ", ".join(f"{r:.0f}" for r in returns[config])
        lines.append(f"| {config} | {per_seed} | {np.mean(values):.1f} | {ratio:.2f} | {rets} |")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    out = {
        "command": "python benchmarks/wall_clock.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "seeds": args.seeds,
        "ms_per_step": ms,
        "eval_return": returns,
        "zoo_entry": str(zoo_entry()),
    }
    (RESULTS / f"wall_clock_pendulum{args.tag}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
