"""Where a MuJoCo env step's wall clock goes: SAC against DeMoSAC settings, per part, on a quiet machine.

Each configuration is built as ``benchmarks/sample_efficiency.py`` builds it (RL Zoo's SAC settings with
learning starting at 1000 steps; DeMoSAC's settings or a named ``--variant`` of them), trained untimed up to
``learning_starts`` (random actions; DeMoSAC's first model fit and first rollouts fall due there), then timed
over ``--steps`` more env steps, a multiple of the model's fit interval so every run pays its share of fits and
rollout rounds. DeMoSAC's ``part_times`` split the timed window into planning, imagined transitions, model fits,
branched rollouts and gradient steps; the rest (env step, replay buffer, SB3's bookkeeping) is "other".

Prints a markdown table (ms per env step, per part, ratio to SAC) and writes
``benchmarks/results/mujoco_cost_<env>.json``. One torch thread; run it with nothing else of yours running and
note the load average beside the numbers::

    python benchmarks/mujoco_cost.py --env HalfCheetah-v5 --configs sac default branched-utd10 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch as th
from harness import RESULTS, table_header
from sample_efficiency import make_algo

from sb3_demo.common.part_times import PARTS


def time_config(config: str, env_id: str, steps: int, seed: int) -> dict[str, Any]:
    """ms per env step over ``steps`` trained steps, in total and per part."""
    name, variant = ("sac", None) if config == "sac" else ("demosac", None if config == "default" else config)
    model = make_algo(name, env_id, seed, variant)
    model.learn(model.learning_starts)  # random actions; the first model fit and rollouts fall due at the end
    parts = getattr(model, "part_times", None)
    before = dict(parts.seconds) if parts is not None else {}
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    row: dict[str, Any] = {"config": config, "steps": steps, "ms_per_step": 1000 * wall / steps}
    if parts is not None:
        for part in PARTS:
            row[part] = 1000 * (parts.seconds[part] - before[part]) / steps
        row["other"] = row["ms_per_step"] - sum(row[part] for part in PARTS)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--configs", nargs="+", default=["sac", "default", "branched-utd10"])
    parser.add_argument("--steps", type=int, default=1000, help="timed env steps after learning_starts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    rows = [time_config(config, args.env, args.steps, args.seed) for config in args.configs]
    load = os.getloadavg()
    sac = next((r["ms_per_step"] for r in rows if r["config"] == "sac"), None)
    lines = [f"{args.env}, {args.steps} timed env steps, ms per env step (load average {load[0]:.2f} at the end)", ""]
    lines += table_header("config", "total", *PARTS, "other", "/ SAC")
    for r in rows:
        parts = [f"{r[p]:.1f}" if p in r else "" for p in (*PARTS, "other")]
        ratio = f"{r['ms_per_step'] / sac:.1f}" if sac else ""
        lines.append(f"| {r['config']} | {r['ms_per_step']:.1f} | " + " | ".join(parts) + f" | {ratio} |")
    print("\n".join(lines))
    out = {"command": "python benchmarks/mujoco_cost.py " + " ".join(sys.argv[1:]), "load_average": load, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"mujoco_cost_{args.env}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
