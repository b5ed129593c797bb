"""DeMoSAC beside SAC (and DeMoTD3 beside TD3), same run, several seeds: steps to a threshold.

Every algorithm is evaluated every ``--eval-freq`` env steps on a separate env (deterministic actions,
``--eval-episodes`` episodes). DeMo algorithms are evaluated twice: with the planner (``predict``) and
with the bare actor. Results go to ``benchmarks/results/sample_efficiency_<env>.json``, a PNG of the
learning curves and a markdown table printed to stdout.

Example (what BENCHMARKS.md reports)::

    python benchmarks/sample_efficiency.py --env Pendulum-v1 --algos demosac sac demotd3 td3 --seeds 0 1 2 \
        --steps 5000 --demo-steps 1500 --eval-freq 250 --eval-episodes 5
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
import yaml
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise

from sb3_demo import DeMoSAC, DeMoTD3

RESULTS = Path(__file__).parent / "results"
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
        # plan through the members' means: with 1 particle and sharp weights the sampled noise of a model fitted
        # on a few hundred transitions is what the planner optimises (BENCHMARKS.md, session 5)
        model_kwargs=dict(hidden_sizes=(128, 128), num_members=5, num_elites=3, deterministic=True),
        model_train_freq=250,
        # session 7: the first fit (100 transitions) left warm-started fits stuck (BENCHMARKS.md). Fresh weights
        # and normalisation whenever the data has doubled; warm fits in between wait 100 gradient steps for an
        # improvement before early stopping; at most 2000 gradient steps a fit
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

# Named alternatives to DEMO_SETTINGS (``--variant``), per env: what each one changes.
# session 5's Pendulum settings: fits capped at 500 gradient steps (warm-started)
_CAPPED = {**DEMO_SETTINGS["Pendulum-v1"], "model_fit_kwargs": dict(max_grad_steps=500)}
# session 6's: warm-started fits to early stopping, no cap
_UNCAPPED = {**_CAPPED, "model_fit_kwargs": dict(max_grad_steps=None)}
# sessions 1-4's settings, which the session-4 pilots below changed: the model samples each prediction
_SAMPLED = {**_CAPPED, "model_kwargs": {**_CAPPED["model_kwargs"], "deterministic": False}}
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
        # sessions 1-4's benchmarked settings (the model samples each prediction)
        "sampled": _SAMPLED,
        # session 5's benchmarked settings (the means, fits capped at 500 gradient steps)
        "capped": _CAPPED,
        # session 6's benchmarked settings (warm-started fits to early stopping, no cap)
        "uncapped": _UNCAPPED,
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


def zoo_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """RL Zoo's tuned hyperparameters for the baseline (the -v4 MuJoCo entries stand in for -v5)."""
    import rl_zoo3

    path = Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"
    table = yaml.safe_load(path.read_text())
    key = env_id if env_id in table else env_id.replace("-v5", "-v4")
    params = dict(table.get(key, {}))
    for drop in ("n_timesteps", "policy", "normalize", "env_wrapper", "callback", "n_envs"):
        params.pop(drop, None)
    noise_type, noise_std = params.pop("noise_type", None), params.pop("noise_std", None)
    if "policy_kwargs" in params and isinstance(params["policy_kwargs"], str):
        params["policy_kwargs"] = eval(params["policy_kwargs"])  # RL Zoo's own convention
    if noise_type == "normal":
        n = gym.make(env_id).action_space.shape[0]
        params["action_noise"] = NormalActionNoise(np.zeros(n), noise_std * np.ones(n))
    return params


class EvalRecorder(BaseCallback):
    """Evaluate every ``eval_freq`` steps (planner and bare actor for DeMo algorithms)."""

    def __init__(self, env_id: str, eval_freq: int, n_episodes: int, seed: int) -> None:
        super().__init__()
        self.eval_env = Monitor(gym.make(env_id))
        self.eval_freq, self.n_episodes, self.seed = eval_freq, n_episodes, seed
        self.rows: list[dict[str, float]] = []
        self.start = time.perf_counter()
        self.eval_time = 0.0

    def _evaluate(self) -> None:
        t0 = time.perf_counter()
        self.eval_env.reset(seed=10_000 + self.seed)
        row: dict[str, float] = {"steps": self.num_timesteps}
        uses_planner = hasattr(self.model, "predict_with_planner")
        if uses_planner:
            self.model.predict_with_planner = False  # type: ignore[attr-defined]
            row["actor"] = float(evaluate_policy(self.model, self.eval_env, self.n_episodes)[0])
            self.model.predict_with_planner = True  # type: ignore[attr-defined]
            planner_ready = self.model.planner_active() or getattr(self.model, "model_fitted", False)  # type: ignore[attr-defined]
            row["planner"] = (
                float(evaluate_policy(self.model, self.eval_env, self.n_episodes)[0]) if planner_ready else row["actor"]
            )
        else:
            row["actor"] = float(evaluate_policy(self.model, self.eval_env, self.n_episodes)[0])
        self.eval_time += time.perf_counter() - t0
        row["train_wall_s"] = time.perf_counter() - self.start - self.eval_time
        self.rows.append(row)
        print(f"  {self.num_timesteps:>6} steps: " + ", ".join(f"{k}={v:.1f}" for k, v in row.items() if k != "steps"))

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            self._evaluate()
        return True


def make_algo(name: str, env_id: str, seed: int, variant: str | None = None) -> Any:
    base = "sac" if name in ("sac", "demosac") else "td3"
    params = zoo_hyperparams(base, env_id)
    if "learning_starts" in params:  # RL Zoo's MuJoCo entries wait 10k steps: more than these budgets
        params["learning_starts"] = min(params["learning_starts"], 1000)
    env = Monitor(gym.make(env_id))
    if name == "sac":
        return SAC("MlpPolicy", env, seed=seed, **params)
    if name == "td3":
        return TD3("MlpPolicy", env, seed=seed, **params)
    cls = DeMoSAC if name == "demosac" else DeMoTD3
    return cls("MlpPolicy", env, seed=seed, **params, **demo_settings(env_id, variant))


def steps_to_threshold(rows: list[dict[str, float]], key: str, threshold: float) -> float:
    for row in rows:
        if row[key] >= threshold:
            return row["steps"]
    return float("nan")


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
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, f"sample_efficiency_{args.env}{args.tag}")
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
            recorder = EvalRecorder(args.env, args.eval_freq, args.eval_episodes, seed)
            t0 = time.perf_counter()
            steps = args.demo_steps if (name.startswith("demo") and args.demo_steps) else args.steps
            model.learn(steps, callback=recorder)
            wall = time.perf_counter() - t0 - recorder.eval_time
            results["runs"].setdefault(name, []).append(
                {
                    "seed": seed,
                    "rows": recorder.rows,
                    "train_wall_s": wall,
                    "wall_per_step_ms": 1000 * wall / steps,
                }
            )
            RESULTS.mkdir(exist_ok=True)  # partial results survive an interrupted run
            (RESULTS / f"sample_efficiency_{args.env}{args.tag}.partial.json").write_text(json.dumps(results))

    finish(results, RESULTS / f"sample_efficiency_{args.env}{args.tag}")


def finish(results: dict[str, Any], stem: Path) -> None:
    """Write the JSON, print the table, draw the curves."""
    RESULTS.mkdir(exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(summary_table(results))
    plot(results, stem.with_suffix(".png"))


def merge(paths: list[str], out: str) -> None:
    """Combine runs of the same env and algorithms saved by separate processes (e.g. one per seed)."""
    merged: dict[str, Any] | None = None
    for path in paths:
        part = json.loads(Path(path).read_text())
        if merged is None:
            merged = {**part, "runs": {}, "command": []}
        for name, runs in part["runs"].items():
            merged["runs"].setdefault(name, []).extend(runs)
        merged["command"].append(part.get("command", "?"))
    assert merged is not None
    finish(merged, RESULTS / out)


def summary_table(results: dict[str, Any]) -> str:
    threshold = results["threshold"]
    lines = [
        f"{results['env']}, threshold {threshold}, {results['steps']} steps",
        "",
        "| algorithm | eval | steps to threshold per seed | median | final return (mean over seeds) | ms / env step |",
        "|---|---|---|---|---|---|",
    ]
    medians: dict[str, float] = {}
    for name, runs in results["runs"].items():
        for key in ("planner", "actor") if name.startswith("demo") else ("actor",):
            hits = [steps_to_threshold(r["rows"], key, threshold) for r in runs]
            # a run that never reaches the threshold counts as the baselines' (largest) budget: conservative for
            # the DeMo runs, whose own budget is shorter, and a lower bound for the baselines
            budget = results["steps"]
            med = float(np.median([h if np.isfinite(h) else budget for h in hits]))
            medians[f"{name}/{key}"] = med
            final = np.mean([r["rows"][-1][key] for r in runs])
            ms = np.mean([r["wall_per_step_ms"] for r in runs])
            hit_s = ", ".join("never" if not np.isfinite(h) else str(int(h)) for h in hits)
            lines.append(f"| {name} | {key} | {hit_s} | {med:.0f} | {final:.1f} | {ms:.1f} |")
    for demo, base in (("demosac", "sac"), ("demotd3", "td3")):
        if demo in results["runs"] and base in results["runs"]:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in results["runs"].items():
        for key in ("planner", "actor") if name.startswith("demo") else ("actor",):
            steps = np.array([row["steps"] for row in runs[0]["rows"]])
            runs = [r for r in runs if len(r["rows"]) == len(steps)]
            curves = np.array([[row[key] for row in r["rows"]] for r in runs])
            label = (f"{name} ({key})" if name.startswith("demo") else name) + f", {len(runs)} seeds"
            ax.plot(steps, curves.mean(0), label=label)
            ax.fill_between(steps, curves.min(0), curves.max(0), alpha=0.2)
    ax.axhline(results["threshold"], color="k", ls="--", lw=0.8)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean eval return")
    ax.set_title(f"{results['env']}: mean over seeds, min-max band")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
