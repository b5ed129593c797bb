"""DeMoSAC beside SAC (and DeMoTD3 beside TD3), same run, several seeds: steps to a threshold.

Every algorithm is evaluated every ``--eval-freq`` env steps on a separate env (deterministic actions,
``--eval-episodes`` episodes). DeMo algorithms are evaluated twice: with the planner (``predict``) and
with the bare actor. Results go to ``benchmarks/results/sample_efficiency_<env>.json``, a PNG of the
learning curves and a markdown table printed to stdout.

With 3 or more seeds the table adds rliable's interquartile mean (IQM) over seeds with its 95% stratified
bootstrap confidence interval, for the steps to the threshold and the final return. ``--merge`` combines
result files of separate processes (e.g. one per seed) and prints the same table.

Example (the Pendulum-v1 result of BENCHMARKS.md: one process per seed, then merged)::

    for s in 0 1 2 3 4 5; do python benchmarks/sample_efficiency.py --env Pendulum-v1 --algos demosac sac \
        --seeds $s --steps 5000 --demo-steps 3000 --eval-freq 250 --eval-episodes 5 --tag _s$s; done
    python benchmarks/sample_efficiency.py --env Pendulum-v1 \
        --merge benchmarks/results/sample_efficiency_Pendulum-v1_s?.json
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
from harness import RECENT_EVALS, RESULTS, eval_recorder, plot_curves, seed_summary, table_header, zoo_hyperparams
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.monitor import Monitor

from sb3_demo import DeMoSAC, DeMoTD3

THRESHOLDS = {"Pendulum-v1": -200.0, "InvertedPendulum-v5": 1000.0, "Hopper-v5": 3000.0, "HalfCheetah-v5": 5000.0}

MUJOCO_SETTINGS: dict[str, Any] = dict(
    planner_kwargs=dict(num_particles=1, num_iterations=3),
    model_kwargs=dict(hidden_sizes=(200, 200, 200), num_members=5, num_elites=3),
    model_train_freq=1000,
    model_fit_kwargs=dict(max_grad_steps=500),
)

# DeMo settings per env (the SAC/TD3 part is shared with the baseline).
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": dict(
        # swing-up needs a long look-ahead while the critic is poor; sharp weights (temperature 0.1)
        planner_kwargs=dict(
            horizon=15, num_samples=100, num_particles=1, num_iterations=2, gamma_std=1.0, temperature=0.1
        ),
        # plan through the members' means: with 1 particle and sharp weights, sampling each prediction lets the
        # planner optimise the noise of a model fitted on a few hundred transitions
        model_kwargs=dict(hidden_sizes=(128, 128), num_members=5, num_elites=3, deterministic=True),
        model_train_freq=250,
        # a fit warm-started from the first one (100 transitions) stays stuck near it, so the ensemble restarts
        # from fresh weights and normalisation whenever the data has doubled; warm fits in between wait 100
        # gradient steps for an improvement before early stopping; at most 2000 gradient steps a fit
        model_fit_kwargs=dict(reinit_growth=2.0, patience_steps=100, max_grad_steps=2000),
    ),
    "InvertedPendulum-v5": dict(
        # the +1-per-step reward gives near-equal returns: standardise them (sharp weights), more actor proposals
        planner_kwargs=dict(
            horizon=5, num_samples=100, num_particles=1, num_iterations=2, normalize_returns=True, prior_fraction=0.2
        ),
        model_kwargs=dict(hidden_sizes=(200, 200, 200)),
        model_train_freq=250,
        model_fit_kwargs=dict(max_grad_steps=500),
    ),
    # MuJoCo on a 2-core CPU: the reference planner (horizon 3, 100 + 5 actor samples, exp weights) with one
    # particle and 3 iterations, a 5x3x200 ensemble fitted every 1000 steps (500 gradient steps, warm-started)
    "Hopper-v5": MUJOCO_SETTINGS,
    "HalfCheetah-v5": MUJOCO_SETTINGS,
}


# MBPO's Hopper rollout-length schedule: 1 model step until 20k env steps, growing to 15 by 150k
_HOPPER_ROLLOUT_LENGTH = (20_000, 150_000, 1, 15)


def _mbpo_variant(rollout_length: Any, gradient_steps: int) -> dict[str, Any]:
    """MBPO's regime over MUJOCO_SETTINGS: 100k rollouts every 250 env steps (400 per step) right after a model
    fit every 250 steps, 95% model data in each batch (real_ratio 0.05), model data of the last 1000 env steps
    only (model_retain_epochs=1)."""
    return {
        **MUJOCO_SETTINGS,
        "model_train_freq": 250,
        "branched_rollouts": dict(num_rollouts=100_000, rollout_freq=250, rollout_length=rollout_length),
        "replay_buffer_kwargs": dict(imagined_fraction=0.95, imagined_buffer_size=400_000, imagined_max_age=1000),
        "gradient_steps": gradient_steps,
    }


# Named alternatives to DEMO_SETTINGS (``--variant``), per env: what each one changes.
# always warm-started fits, capped at 500 gradient steps
_CAPPED = {**DEMO_SETTINGS["Pendulum-v1"], "model_fit_kwargs": dict(max_grad_steps=500)}
# always warm-started fits, run to early stopping
_UNCAPPED = {**_CAPPED, "model_fit_kwargs": dict(max_grad_steps=None)}
# the model samples each prediction (instead of planning through the members' means)
_SAMPLED = {**_CAPPED, "model_kwargs": {**_CAPPED["model_kwargs"], "deterministic": False}}
# the diagnosis of #19: the same planner through the env's own simulator instead of the learned ensemble
_TRUE_MODEL = {k: v for k, v in MUJOCO_SETTINGS.items() if k not in ("model_kwargs", "model_fit_kwargs")}
_TRUE_MODEL["model"] = "mujoco"
# ... and without the critic's terminal value: 10 steps of the simulator's rewards (the planner alone reaches a
# return of 441 in 300 HalfCheetah steps this way), so the data is the planner's and the critic only learns
_TRUE_MODEL_NO_CRITIC = {
    **_TRUE_MODEL,
    "planner_kwargs": dict(horizon=10, num_samples=64, num_particles=1, num_iterations=2),
    "use_terminal_value": False,
}
# ... with the actor imitating the planner's executed actions (a behaviour-cloning step after each SAC step)
_TRUE_MODEL_NO_CRITIC_IMITATION = {**_TRUE_MODEL_NO_CRITIC, "imitation_coef": 1.0}
# HalfCheetah's critic slopes are far larger than the leg's: a stronger pull
_TRUE_MODEL_NO_CRITIC_IMITATION_30 = {**_TRUE_MODEL_NO_CRITIC, "imitation_coef": 30.0}
# today's DeMoSAC (learned ensemble, horizon 3, the critic's terminal value) with that pull
_IMITATION_30 = {**MUJOCO_SETTINGS, "imitation_coef": 30.0}
# the planner's weights on standardised returns (temperature 0.5): on raw returns the critic's terminal value,
# large against H=3 steps of reward, makes the exp weights an argmax that picks the critic's largest error
_NORMALIZED = {
    **MUJOCO_SETTINGS,
    "planner_kwargs": {**MUJOCO_SETTINGS["planner_kwargs"], "normalize_returns": True, "temperature": 0.5},
}
_TRUE_MODEL_NORMALIZED = {**_TRUE_MODEL, "planner_kwargs": _NORMALIZED["planner_kwargs"]}
# the diagnosis of #19 (BENCHMARKS.md "Where the MuJoCo gain is lost"), the same on both MuJoCo tasks
_DIAGNOSIS: dict[str, dict[str, Any]] = {
    "true-model": _TRUE_MODEL,
    "true-model-normalized": _TRUE_MODEL_NORMALIZED,
    "true-model-no-critic": _TRUE_MODEL_NO_CRITIC,
    "true-model-no-critic-imitation": _TRUE_MODEL_NO_CRITIC_IMITATION,
    "true-model-no-critic-imitation30": _TRUE_MODEL_NO_CRITIC_IMITATION_30,
    "normalized": _NORMALIZED,
    "imitation30": _IMITATION_30,
}
DEMO_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "Pendulum-v1": {
        # the wrapper benchmark's planner (horizon 20, 200 samples) and a critic warm-up: the young critic's
        # terminal value is left out of the planner's returns until 3000 gradient updates
        "h20-warm": {
            **_SAMPLED,
            "planner_kwargs": {**_CAPPED["planner_kwargs"], "horizon": 20, "num_samples": 200},
            "terminal_value_starts": 3000,
        },
        # the reference ensemble (7 members of 4x200, 5 elites) under the same fitting budget
        "ref-model": {
            **_SAMPLED,
            "model_kwargs": dict(hidden_sizes=(200, 200, 200, 200), num_members=7, num_elites=5),
        },
        # 3 particles per sequence (one per elite): a sequence's return is the mean over the elites, so one
        # member's error is less easily exploited by the sharp weights
        "p3": {**_SAMPLED, "planner_kwargs": {**_CAPPED["planner_kwargs"], "num_particles": 3}},
        "sampled": _SAMPLED,
        "capped": _CAPPED,
        "uncapped": _UNCAPPED,
        # branched model rollouts (MBPO-style): 100 one-step rollouts from real replay states with the actor
        # every env step, half of each batch model data (model data older than 1000 env steps unused), 10
        # gradient steps per env step
        "branched": {
            **DEMO_SETTINGS["Pendulum-v1"],
            "branched_rollouts": dict(num_rollouts=100, rollout_freq=1, rollout_length=1),
            "replay_buffer_kwargs": dict(imagined_fraction=0.5, imagined_buffer_size=100_000, imagined_max_age=1000),
            "gradient_steps": 10,
        },
    },
    # MBPO's regime (jannerm/mbpo configs), not measured here: HalfCheetah's one-step rollouts and 40 gradient steps
    # per env step; Hopper's rollout length 1 -> 15 between 20k and 150k env steps and 20 gradient steps
    # "branched-utd10" / "-utd20": the same at 10 / 20 gradient steps per env step (what 2 CPU cores afford)
    "HalfCheetah-v5": {
        "branched": _mbpo_variant(rollout_length=1, gradient_steps=40),
        "branched-utd10": _mbpo_variant(rollout_length=1, gradient_steps=10),
        "branched-utd20": _mbpo_variant(rollout_length=1, gradient_steps=20),
        # REDQ's spread: 20 critic updates per env step, the actor and entropy coefficient once
        "branched-utd20-delay20": {**_mbpo_variant(rollout_length=1, gradient_steps=20), "policy_delay": 20},
        # ... with a LayerNorm in the critics: at 20 critic updates the collapsing seeds' critics overvalued
        # their own trajectories (BENCHMARKS.md)
        "branched-utd20-delay20-ln": {
            **_mbpo_variant(rollout_length=1, gradient_steps=20),
            "policy_delay": 20,
            "policy_kwargs": dict(critic_layer_norm=True),
        },
        **_DIAGNOSIS,
    },
    "Hopper-v5": {
        "branched": _mbpo_variant(rollout_length=_HOPPER_ROLLOUT_LENGTH, gradient_steps=20),
        "branched-utd10": _mbpo_variant(rollout_length=_HOPPER_ROLLOUT_LENGTH, gradient_steps=10),
        # the model's 5-step error on a 20k agent's own states is 5 % of the states' spread (1 step: 2 %), so
        # rollouts grow to 5 steps between 5k and 15k env steps instead of MBPO's 1 until 20k; the model store
        # holds the last 1000 env steps of them (4 rounds of 100k rollouts x 5 steps)
        "branched-utd10-len5": {
            **_mbpo_variant(rollout_length=(5_000, 15_000, 1, 5), gradient_steps=10),
            "replay_buffer_kwargs": dict(imagined_fraction=0.95, imagined_buffer_size=2_000_000, imagined_max_age=1000),
        },
        # the planner searching near the actor (each step's plan starts from the actor's actions, init_std 0.1):
        # on the trained 30k agents the only planner setting that matched their actors at evaluation
        # (BENCHMARKS.md "Hopper-v5 at 30k")
        "branched-utd10-prior": {
            **_mbpo_variant(rollout_length=_HOPPER_ROLLOUT_LENGTH, gradient_steps=10),
            "planner_kwargs": {**MUJOCO_SETTINGS["planner_kwargs"], "shift": "prior", "init_std": 0.1, "min_std": 0.05},
        },
        "branched-utd20-delay20-ln": {
            **_mbpo_variant(rollout_length=_HOPPER_ROLLOUT_LENGTH, gradient_steps=20),
            "policy_delay": 20,
            "policy_kwargs": dict(critic_layer_norm=True),
        },
        **_DIAGNOSIS,
    },
}


def demo_settings(env_id: str, variant: str | None) -> dict[str, Any]:
    """The DeMo settings of ``env_id``: the benchmarked ones, or a named variant of them."""
    if variant is None:
        return DEMO_SETTINGS.get(env_id, {})
    variants = DEMO_VARIANTS.get(env_id, {})
    if variant not in variants:
        raise ValueError(f"no variant {variant!r} for {env_id}; known: {sorted(variants)}")
    return variants[variant]


def make_algo(name: str, env_id: str, seed: int, variant: str | None = None) -> Any:
    base = "sac" if name in ("sac", "demosac") else "td3"
    params, _ = zoo_hyperparams(base, env_id)
    params.pop("policy")
    if "learning_starts" in params:  # RL Zoo's MuJoCo entries wait 10k steps: more than these budgets
        params["learning_starts"] = min(params["learning_starts"], 1000)
    env = Monitor(gym.make(env_id))
    if name == "sac":
        return SAC("MlpPolicy", env, seed=seed, **params)
    if name == "td3":
        return TD3("MlpPolicy", env, seed=seed, **params)
    cls = DeMoSAC if name == "demosac" else DeMoTD3
    return cls("MlpPolicy", env, seed=seed, **{**params, **demo_settings(env_id, variant)})  # a variant may set SAC's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--algos", nargs="+", default=["demosac", "sac"], choices=["demosac", "sac", "demotd3", "td3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=6000, help="budget of the baselines")
    parser.add_argument("--demo-steps", type=int, default=None, help="budget of the DeMo algorithms (default: --steps)")
    parser.add_argument("--eval-freq", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--tag", default="")
    parser.add_argument("--variant", default=None, help="named DeMo settings (DEMO_VARIANTS) instead of the defaults")
    parser.add_argument("--merge", nargs="+", default=None, help="JSON files to combine instead of running")
    parser.add_argument(
        "--save-models", default=None, help="folder for each run's final model (<env><tag>_<algorithm>_seed<seed>.zip)"
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, f"sample_efficiency_{args.env}{args.tag}", args.threshold)
        return
    th.set_num_threads(1)
    threshold = THRESHOLDS.get(args.env, 0.0) if args.threshold is None else args.threshold
    demo_settings(args.env, args.variant)  # an unknown variant fails before any training

    results: dict[str, Any] = {"env": args.env, "threshold": threshold, "steps": args.steps, "runs": {}}
    results["command"] = "python benchmarks/sample_efficiency.py " + " ".join(sys.argv[1:])
    for seed in args.seeds:  # interleaved: every algorithm of a seed runs back to back on the same machine state
        for name in args.algos:
            print(f"{name} seed {seed}")
            model = make_algo(name, args.env, seed, args.variant)
            recorder = eval_recorder(model, args.env, args.eval_freq, args.eval_episodes, seed)
            t0 = time.perf_counter()
            steps = args.demo_steps if (name.startswith("demo") and args.demo_steps) else args.steps
            model.learn(steps, callback=recorder)
            wall = time.perf_counter() - t0 - recorder.eval_time
            label = f"{name}:{args.variant}" if args.variant and name.startswith("demo") else name
            results["runs"].setdefault(label, []).append(
                {
                    "seed": seed,
                    "rows": recorder.rows,
                    "train_wall_s": wall,
                    "wall_per_step_ms": 1000 * wall / steps,
                    # DeMo only: seconds in planning, model fits, branched rollouts, gradient steps, ...
                    "part_seconds": dict(model.part_times.seconds) if hasattr(model, "part_times") else None,
                }
            )
            if args.save_models:  # e.g. to study the trained planner against its own actor afterwards
                Path(args.save_models).mkdir(parents=True, exist_ok=True)
                model.save(Path(args.save_models) / f"{args.env}{args.tag}_{label.replace(':', '_')}_seed{seed}.zip")
            RESULTS.mkdir(exist_ok=True)  # partial results survive an interrupted run
            (RESULTS / f"sample_efficiency_{args.env}{args.tag}.partial.json").write_text(json.dumps(results))

    finish(results, RESULTS / f"sample_efficiency_{args.env}{args.tag}")


def finish(results: dict[str, Any], stem: Path) -> None:
    """Write the JSON, print the table, draw the curves."""
    RESULTS.mkdir(exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(summary_table(results))
    plot(results, stem.with_suffix(".png"))


def merge(paths: list[str], out: str, threshold: float | None = None) -> None:
    """Combine runs of the same env and algorithms saved by separate processes (e.g. one per seed); a
    ``threshold`` replaces the files' own."""
    merged: dict[str, Any] | None = None
    for path in paths:
        part = json.loads(Path(path).read_text())
        if merged is None:
            merged = {**part, "runs": {}, "command": []}
        for name, runs in part["runs"].items():
            merged["runs"].setdefault(name, []).extend(runs)
        command = part.get("command", "?")
        merged["command"].extend(command if isinstance(command, list) else [command])
    assert merged is not None
    if threshold is not None:
        merged["threshold"] = threshold
    finish(merged, RESULTS / out)


def summary_table(results: dict[str, Any]) -> str:
    """Steps to the threshold and final returns per algorithm and evaluated policy; IQM [95% CI] with 3+ seeds."""
    threshold, budget = results["threshold"], results["steps"]
    columns = ["algorithm", "eval", "steps to threshold per seed", "median", "IQM [95% CI]"]
    columns += ["final return per seed", "mean", "IQM [95% CI]", f"mean of the last {RECENT_EVALS} evaluations"]
    columns += ["ms / env step"]
    lines = [f"{results['env']}, threshold {threshold}, {budget} steps", "", *table_header(*columns)]
    medians: dict[str, float] = {}
    for name, runs in results["runs"].items():
        for key in ("planner", "actor") if name.startswith("demo") else ("actor",):
            # the budget is the baselines' (the largest): never counts as it for the DeMo runs too
            seeds = seed_summary([r["rows"] for r in runs], key, threshold, budget)
            medians[f"{name}/{key}"] = med = float(np.median(seeds.counted))
            ms = np.mean([r["wall_per_step_ms"] for r in runs])
            lines.append(
                f"| {name} | {key} | {seeds.hits_text} | {med:.0f} | {seeds.iqm_steps} "
                f"| {' / '.join(f'{f:.0f}' for f in seeds.finals)} | {np.mean(seeds.finals):.1f} | {seeds.iqm_final} "
                f"| {np.mean(seeds.recent):.1f} | {ms:.1f} |"
            )
    for demo in results["runs"]:  # every DeMo run (today's settings, ``name:variant``) against its base algorithm
        base = demo.split(":")[0].removeprefix("demo")
        if not demo.startswith("demo") or base not in results["runs"]:
            continue
        ratio = medians[f"{base}/actor"] / medians[f"{demo}/planner"]
        wall = np.mean([r["wall_per_step_ms"] for r in results["runs"][demo]]) / np.mean(
            [r["wall_per_step_ms"] for r in results["runs"][base]]
        )
        lines.append(
            f"\nsteps-to-threshold ratio {base} / {demo} (planner eval): {ratio:.2f}; "
            f"wall-clock per env step {demo} / {base}: {wall:.2f}"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    curves = []
    for name, runs in results["runs"].items():
        for key in ("planner", "actor") if name.startswith("demo") else ("actor",):
            steps = np.array([row["steps"] for row in runs[0]["rows"]])
            runs = [r for r in runs if len(r["rows"]) == len(steps)]
            returns = np.array([[row[key] for row in r["rows"]] for r in runs])
            label = (f"{name} ({key})" if name.startswith("demo") else name) + f", {len(runs)} seeds"
            curves.append((label, steps, returns))
    plot_curves(curves, results["threshold"], f"{results['env']}: mean over seeds, min-max band", path)


if __name__ == "__main__":
    main()
