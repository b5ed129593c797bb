"""Stock SAC + DeMoVecEnvWrapper/DeMoCallback beside stock SAC, same run, several seeds: steps to a threshold.

Both use RL Zoo's SAC hyperparameters for the env (``rl_zoo3/hyperparams/sac.yml``; envs missing there
take its ``default`` entry, i.e. SAC's defaults). The guided run adds only the wrapper (planner settings
below) and the callback. Every ``--eval-freq`` env steps each agent is evaluated on a separate env with
deterministic actions: the bare SAC actor (what ``model.predict`` gives, no planner) for both, and for
the guided run also the actor with the wrapper in the loop (deterministic plans, ``--guided-episodes``
episodes). Seeds and configurations run interleaved in one process.

Writes ``benchmarks/results/wrapper_<env>.json`` and ``wrapper_<env>.png`` and prints a markdown table.

Example (what ``benchmarks/results/wrapper.md`` reports)::

    python benchmarks/wrapper_vs_stock.py --env Pendulum-v1 --steps 10000 --seeds 0 1 2
    python benchmarks/wrapper_vs_stock.py --env InvertedPendulum-v5 --steps 10000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from harness import RESULTS, EvalRecorder, eval_recorder, plot_curves, seed_summary, table_header, zoo_hyperparams
from sample_efficiency import DEMO_SETTINGS
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor

from sb3_demo import AugmentedReplayBuffer, DeMoCallback, DeMoVecEnvWrapper, DeMoWrapper

THRESHOLDS = {"Pendulum-v1": -200.0, "InvertedPendulum-v5": 950.0}

# Pendulum swing-up needs a long look-ahead until the critic is good: 15 steps, sharp weights (temperature 0.1)
PENDULUM_PLANNER = dict(horizon=15, num_samples=64, num_particles=1, num_iterations=2, temperature=0.1, gamma_std=1.0)

# the planner alone (exact model, no critic) scores about -150 with these settings (tests/planner)
PENDULUM_PLANNER_H20 = dict(horizon=20, num_samples=200, num_particles=1, num_iterations=2, gamma_std=1.0)

# what the guided run adds: the wrapper's and the callback's settings per env and model
WRAPPER_SETTINGS: dict[str, dict[str, Any]] = {
    "Pendulum-v1/analytic": dict(
        wrapper=dict(
            model="analytic",
            planner_kwargs=PENDULUM_PLANNER,
        ),
        callback=dict(),
    ),
    # critic warm-up: the critic's terminal value enters the planner's returns after 3000 SAC updates (before
    # that a young critic misleads the planner; RL Zoo's SAC reaches -200 at about 2500-3000 steps)
    "Pendulum-v1/analytic-h20-warm": dict(
        wrapper=dict(model="analytic", planner_kwargs=PENDULUM_PLANNER_H20, terminal_value_starts=3000),
        callback=dict(),
    ),
    # the agent's own actions run on the other steps: SAC sees (and corrects) what its actor does
    "Pendulum-v1/analytic-p0.5": dict(
        wrapper=dict(model="analytic", planner_kwargs=PENDULUM_PLANNER, guide_prob=0.5),
        callback=dict(),
    ),
    # the planner's share decays linearly from 1 to 0 over the budget
    "Pendulum-v1/analytic-lin": dict(
        wrapper=dict(model="analytic", planner_kwargs=PENDULUM_PLANNER, guide_prob="lin_1.0"),
        callback=dict(),
    ),
    "Pendulum-v1/analytic+imagined": dict(
        wrapper=dict(
            model="analytic",
            planner_kwargs=PENDULUM_PLANNER,
        ),
        callback=dict(),
        # the planner's imagined transitions (its mean plan rolled through the model) fill half of each batch
        agent=dict(replay_buffer_class=AugmentedReplayBuffer, replay_buffer_kwargs=dict(imagined_fraction=0.5)),
    ),
    "Pendulum-v1/ensemble": dict(
        wrapper=dict(
            model="ensemble",
            model_kwargs=dict(num_members=5, num_elites=3, hidden_sizes=(200, 200, 200)),
            planner_kwargs=PENDULUM_PLANNER,
        ),
        callback=dict(model_train_freq=250, model_fit_kwargs=dict(max_epochs=25)),
    ),
    "InvertedPendulum-v5/ensemble": dict(
        wrapper=dict(
            model="ensemble",
            model_kwargs=dict(num_members=5, num_elites=3, hidden_sizes=(200, 200, 200)),
            # DeMoSAC's InvertedPendulum planner (standardised returns for the +1-per-step reward)
            planner_kwargs=DEMO_SETTINGS["InvertedPendulum-v5"]["planner_kwargs"],
        ),
        callback=dict(model_train_freq=250, model_fit_kwargs=dict(max_grad_steps=500)),
    ),
}


def zoo_sac_hyperparams(env_id: str) -> dict[str, Any]:
    """RL Zoo's SAC hyperparameters for ``env_id`` (its ``default`` entry when the env is not listed)."""
    params, _ = zoo_hyperparams("sac", env_id)
    params.pop("policy")
    return params


def run(env_id: str, config: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    # the guided evaluation env is a gymnasium wrapper and the training env a VecEnv wrapper, on purpose
    warnings.filterwarnings("ignore", "Training and eval env are not of the same type")
    params = zoo_sac_hyperparams(env_id)
    venv: Any = make_vec_env(env_id, n_envs=1, seed=seed)
    callbacks: list[BaseCallback] = []
    guided_env = None
    demo_callback = None
    if config != "sac":
        settings = WRAPPER_SETTINGS[f"{env_id}/{config.split(':')[1]}"]
        venv = DeMoVecEnvWrapper(venv, **settings["wrapper"])
        # built before learn(): DeMoCallback attaches it for evaluation (deterministic plans, training model)
        guided_env = DeMoWrapper(Monitor(gym.make(env_id)), **settings["wrapper"])
        demo_callback = DeMoCallback(**settings["callback"])
        callbacks.append(demo_callback)
        params.update(settings.get("agent", {}))
    agent = SAC("MlpPolicy", venv, seed=seed, **params)
    recorder = eval_recorder(agent, env_id, args.eval_freq, args.eval_episodes, seed)
    callbacks.append(recorder)
    if guided_env is not None:
        # the actor with the wrapper in the loop, on the episode starts the bare actor was evaluated on, once the
        # planner is on (before that the wrapper passes the actor's actions through)
        guided = EvalRecorder(
            guided_env,
            args.guided_eval_freq,
            args.guided_episodes,
            recorder.reset_seed,
            key="guided",
            ready=lambda: guided_env.guide.active,
        )
        callbacks.append(guided)
    t0 = time.perf_counter()
    agent.learn(args.steps, callback=callbacks)
    train_wall = time.perf_counter() - t0 - sum(getattr(c, "eval_time", 0.0) for c in callbacks)
    if guided_env is not None:
        guided_returns = {row["steps"]: row["guided"] for row in guided.rows}
        for row in recorder.rows:
            if row["steps"] % args.guided_eval_freq == 0:
                row["guided"] = guided_returns.get(row["steps"], row["actor"])
    out: dict[str, Any] = {"seed": seed, "rows": recorder.rows, "train_wall_s": train_wall}
    if demo_callback is not None:
        out["model_fits"] = demo_callback.num_model_fits
        out["guided_fraction"] = venv.guide.num_planned / max(venv.guide.num_steps, 1)
    return out


def run_seed(job: tuple[str, list[str], int, argparse.Namespace]) -> tuple[int, dict[str, Any]]:
    """Every configuration for one seed, back to back (one worker process)."""
    env_id, configs, seed, args = job
    th.set_num_threads(1)
    runs = {}
    for config in configs:
        print(f"{env_id} {config} seed {seed}", flush=True)
        runs[config] = run(env_id, config, seed, args)
    return seed, runs


def curve(rows: list[dict[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and returns of the evaluations that measured ``key``."""
    kept = [row for row in rows if key in row]
    return np.array([row["steps"] for row in kept]), np.array([row[key] for row in kept])


def summary(results: dict[str, Any]) -> str:
    threshold, budget = results["threshold"], results["steps"]
    lines = [
        f"**{results['env']}**: threshold {threshold:g}, budget {budget} steps, seeds {results['seeds']}, "
        f"eval every {results['eval_freq']} steps ({results['eval_episodes']} episodes); guided eval every "
        f"{results['guided_eval_freq']} steps ({results['guided_episodes']} episodes)",
        "",
        *table_header(
            "run",
            "evaluated policy",
            "steps to threshold per seed",
            "mean (never = budget)",
            "IQM [95% CI]",
            "final return per seed",
            "IQM [95% CI]",
            "train wall s (mean)",
        ),
    ]
    means: dict[str, float] = {}
    for config, runs in results["runs"].items():
        for key in ("actor",) if config == "sac" else ("actor", "guided"):
            seeds = seed_summary([r["rows"] for r in runs], key, threshold, budget)
            means[f"{config}/{key}"] = mean = float(np.mean(seeds.counted))
            final_s = ", ".join(f"{f:.0f}" for f in seeds.finals)
            wall = np.mean([r["train_wall_s"] for r in runs])
            what = "bare SAC actor" if key == "actor" else "actor + wrapper (deterministic plans)"
            lines.append(
                f"| {config} | {what} | {seeds.hits_text} | {mean:.0f} | {seeds.iqm_steps} | {final_s} "
                f"| {seeds.iqm_final} | {wall:.0f} |"
            )
    lines.append("")
    base = means.get("sac/actor")
    for config in results["runs"]:
        if config == "sac" or base is None:
            continue
        for key in ("actor", "guided"):
            lines.append(
                f"- steps-to-threshold ratio SAC / {config} ({key}): **{base / means[f'{config}/{key}']:.2f}** "
                "(means over seeds; a run that never reaches the threshold counts as the budget)"
            )
        wall = np.mean([r["train_wall_s"] for r in results["runs"][config]]) / np.mean(
            [r["train_wall_s"] for r in results["runs"]["sac"]]
        )
        lines.append(f"- training wall-clock {config} / SAC: {wall:.2f}x")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    curves = []
    for config, runs in results["runs"].items():
        for key in ("actor",) if config == "sac" else ("actor", "guided"):
            steps = curve(runs[0]["rows"], key)[0]
            returns = np.array([curve(r["rows"], key)[1] for r in runs])
            label = "SAC" if config == "sac" else f"SAC + {config.split(':')[1]} wrapper ({key})"
            curves.append((label, steps, returns))
    title = f"{results['env']}: {len(results['seeds'])} seeds (mean, min-max)"
    plot_curves(curves, results["threshold"], title, path, fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1", choices=sorted(THRESHOLDS))
    parser.add_argument(
        "--configs",
        nargs="+",
        default=None,
        help="'sac' and 'wrapper:<model>' (default: sac plus every model listed for the env)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-freq", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--guided-episodes", type=int, default=1)
    parser.add_argument("--guided-eval-freq", type=int, default=1000, help="a multiple of --eval-freq")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    th.set_num_threads(1)
    models = [key.split("/")[1] for key in WRAPPER_SETTINGS if key.startswith(args.env + "/")]
    configs = args.configs or ["sac"] + [f"wrapper:{model}" for model in models]
    results: dict[str, Any] = {
        "env": args.env,
        "threshold": THRESHOLDS[args.env],
        "steps": args.steps,
        "seeds": args.seeds,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "guided_episodes": args.guided_episodes,
        "guided_eval_freq": args.guided_eval_freq,
        "sac_hyperparams": {k: str(v) for k, v in zoo_sac_hyperparams(args.env).items()},
        "wrapper_settings": {k: str(v) for k, v in WRAPPER_SETTINGS.items() if k.startswith(args.env + "/")},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {th.__version__}, "
        f"1 thread per process, {args.jobs} processes",
        "runs": {},
    }
    start = time.perf_counter()
    stem = f"wrapper_{args.env}{args.tag}"
    by_seed: dict[int, dict[str, Any]] = {}
    jobs = [(args.env, configs, seed, args) for seed in args.seeds]
    with multiprocessing.get_context("spawn").Pool(min(args.jobs, len(jobs))) as pool:
        for seed, runs in pool.imap_unordered(run_seed, jobs):
            by_seed[seed] = runs
            results["runs"] = {c: [by_seed[s][c] for s in args.seeds if s in by_seed] for c in configs}
            results["total_wall_s"] = time.perf_counter() - start
            RESULTS.mkdir(exist_ok=True)  # saved after every seed: a cut-off benchmark keeps what it measured
            (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1))
    plot(results, RESULTS / f"{stem}.png")
    print(summary(results))
    print(f"total wall-clock: {results['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
