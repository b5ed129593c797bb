"""The DeMo Layer on classic control: linear policies trained with the layer in the loop, and weak policies
with the layer on top.

Part ``steps`` (side by side, same seeds, same process): plain ARS with a linear policy and RL Zoo's ARS
hyperparameters (read from rl_zoo3's own ``hyperparams/ars.yml``, ``policy`` switched to ``LinearPolicy``
and its MLP ``policy_kwargs`` dropped) against :class:`sb3_demo.DeMoARS` (the same ARS settings plus the
layer). Every ``--eval-every`` env steps the *linear policy alone* (deterministic, no layer) is evaluated
on 10 fixed-seed episodes of a separate env; the steps to the task's threshold are the training env steps
at the first evaluation whose mean return reaches it. All of DeMoARS's env steps count (ARS candidates,
guided rollouts, checks of distilled policies); evaluation steps count for neither.

Part ``layer``: weak policies (ARS after a small budget, a short SAC run) evaluated with
``evaluate_policy`` (10 episodes) alone and with :class:`sb3_demo.DeMoPolicy` on top.

    python benchmarks/demo_layer.py --part steps --seeds 0 1 2
    python benchmarks/demo_layer.py --part layer --seeds 0 1 2

Results are appended to ``benchmarks/results/demo_layer.json`` (one record per run) and the markdown
tables printed; ``--budget-scale`` shrinks every budget (smoke runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from harness import format_iqm, iqm_ci, zoo_hyperparams

RESULTS = os.path.join(os.path.dirname(__file__), "results", "demo_layer.json")

THRESHOLDS = {"Pendulum-v1": -200.0, "MountainCarContinuous-v0": 90.0, "InvertedPendulum-v5": 950.0}

# env steps per run; a run stops at the threshold.
BUDGETS = {
    "Pendulum-v1": {"ars": 30_000, "demo_ars": 30_000},
    "MountainCarContinuous-v0": {"ars": 100_000, "demo_ars": 100_000},
    "InvertedPendulum-v5": {"ars": 100_000, "demo_ars": 100_000},
}

# DeMoARS's additions to the ARS settings, per task
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": dict(
        model="analytic",
        planner_kwargs=dict(horizon=15, num_samples=64, num_iterations=2),
        labels_per_update=128,
    ),
    "MountainCarContinuous-v0": dict(
        model="analytic",
        # a 100-step look-ahead with brown noise (slowly varying sequences) finds the goal from the start
        # state; one layer-run episode per update, distilled before ARS's candidates explore
        planner_kwargs=dict(horizon=100, noise_beta=2.0, num_samples=100, num_iterations=2),
        guided_episodes=1,
        labels_per_update=256,
        min_label_advantage=1.0,
    ),
    "InvertedPendulum-v5": dict(
        # a small learned ensemble after 300 random steps: fits of at most 20 epochs from 200 transitions on, every 1000
        **dict(model="ensemble", model_kwargs=dict(hidden_sizes=[64, 64], num_members=5, num_elites=3)),
        **dict(
            model_fit_kwargs=dict(max_epochs=20), model_learning_starts=200, random_steps=300, model_train_freq=1000
        ),
        # 10-step plans whose terminal value is 40 steps of the linear policy through the model
        **dict(planner_kwargs=dict(horizon=10, num_samples=64, num_iterations=2), value_rollout_steps=40),
        labels_per_update=64,
        # every 5th update one episode run by the layer, distilled before the candidates
        **dict(guided_episodes=1, guided_every=5),
        # a distilled policy replaces ARS's only if a check rollout shows it is not worse
        **dict(distill_ridge=0.01, distill_check=True, distill_patience=10),
    ),
}


def zoo_ars_hyperparams(env_id: str) -> tuple[dict[str, Any], bool]:
    """RL Zoo's ARS hyperparameters for ``env_id`` with a linear policy: (ARS kwargs, normalize obs)."""
    params, normalize = zoo_hyperparams("ars", env_id)
    for key in ("policy", "policy_kwargs"):  # the linear policy replaces RL Zoo's MLP and its net_arch
        params.pop(key, None)
    return params, normalize is not None and normalize.get("norm_obs", True)


def make_train_env(env_id: str, seed: int, normalize: bool):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_vec_env(env_id, n_envs=1, seed=seed)
    return VecNormalize(env, norm_obs=True, norm_reward=False) if normalize else env


def evaluate_linear(model: Any, eval_env: gym.Env, episodes: int = 10) -> float:
    """Mean return of the policy alone (deterministic), on fixed-seed episodes, obs normalised as in training."""
    vec_norm = model.get_vec_normalize_env()
    returns = []
    for episode in range(episodes):
        obs, _ = eval_env.reset(seed=10_000 + episode)
        total, done = 0.0, False
        while not done:
            policy_obs = vec_norm.normalize_obs(obs) if vec_norm is not None else obs
            action, _ = model.predict(policy_obs, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def run_steps(env_id: str, algo: str, seed: int, budget: int, eval_every: int) -> dict[str, Any]:
    """One training run; evaluations of the linear policy alone every ``eval_every`` env steps."""
    from sb3_contrib import ARS

    from sb3_demo import DeMoARS

    th.manual_seed(seed)
    ars_kwargs, normalize = zoo_ars_hyperparams(env_id)
    env = make_train_env(env_id, seed, normalize)
    if algo == "ars":
        model = ARS("LinearPolicy", env, seed=seed, **ars_kwargs)
    else:
        model = DeMoARS("LinearPolicy", env, seed=seed, **ars_kwargs, **DEMO_SETTINGS[env_id])
    eval_env = gym.make(env_id)
    threshold = THRESHOLDS[env_id]
    start, cpu_start = time.perf_counter(), time.process_time()
    curve: list[tuple[int, float]] = [(0, evaluate_linear(model, eval_env))]
    hit = 0 if curve[0][1] >= threshold else None
    next_eval = eval_every
    while hit is None and model.num_timesteps < budget:
        model.learn(1, reset_num_timesteps=False)  # one ARS update (DeMoARS: plus the layer's work)
        if model.num_timesteps >= next_eval or model.num_timesteps >= budget:
            score = evaluate_linear(model, eval_env)
            curve.append((int(model.num_timesteps), round(score, 2)))
            next_eval = (model.num_timesteps // eval_every + 1) * eval_every
            if score >= threshold:
                hit = int(model.num_timesteps)
    record: dict[str, Any] = dict(
        part="steps",
        env_id=env_id,
        algo=algo,
        seed=seed,
        budget=budget,
        threshold=threshold,
        steps_to_threshold=hit,
        final_return=curve[-1][1],
        best_return=max(score for _, score in curve),
        env_steps=int(model.num_timesteps),
        wall_s=round(time.perf_counter() - start, 1),
        cpu_s=round(time.process_time() - cpu_start, 1),
        curve=curve,
        ars_hyperparams=json.loads(json.dumps(ars_kwargs, default=str)),  # schedules as their repr
        normalize_obs=normalize,
    )
    if algo == "demo_ars":
        record.update(
            guided_steps=model.num_guided_steps,
            labels=model.num_labels,
            distill_accepted=model.num_distill_accepted,
            distill_rejected=model.num_distill_rejected,
            settings=DEMO_SETTINGS[env_id],
        )
    return record


def run_layer(env_id: str, base: str, seed: int, base_steps: int, layer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A weak policy alone and with the DeMo Layer on top (evaluate_policy, 10 episodes in 10 envs)."""
    from sb3_contrib import ARS
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_demo import DeMoPolicy

    th.manual_seed(seed)
    if base == "ars":
        ars_kwargs, normalize = zoo_ars_hyperparams(env_id)
        model: Any = ARS("LinearPolicy", make_train_env(env_id, seed, normalize), seed=seed, **ars_kwargs)
    else:
        model = SAC("MlpPolicy", env_id, seed=seed, learning_rate=1e-3)  # RL Zoo's SAC for Pendulum-v1
    model.learn(base_steps)
    layer = DeMoPolicy.from_agent(model, dynamics="analytic", env_id=env_id, seed=seed, **layer_kwargs)
    eval_env = make_vec_env(env_id, n_envs=10, seed=1_000 + seed)
    vec_norm = model.get_vec_normalize_env()
    if vec_norm is not None:  # the base alone sees normalised observations, as in training
        from stable_baselines3.common.vec_env import VecNormalize

        base_env: Any = VecNormalize(
            make_vec_env(env_id, n_envs=10, seed=1_000 + seed), training=False, norm_obs=True, norm_reward=False
        )
        base_env.obs_rms = vec_norm.obs_rms.copy()
    else:
        base_env = make_vec_env(env_id, n_envs=10, seed=1_000 + seed)
    base_mean, base_std = evaluate_policy(model, base_env, n_eval_episodes=10, deterministic=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    layer_mean, layer_std = evaluate_policy(layer, eval_env, n_eval_episodes=10, deterministic=True)
    return dict(
        part="layer",
        env_id=env_id,
        base=base,
        base_steps=base_steps,
        seed=seed,
        base_return=round(float(base_mean), 1),
        base_std=round(float(base_std), 1),
        layer_return=round(float(layer_mean), 1),
        layer_std=round(float(layer_std), 1),
        fallbacks=layer.num_fallbacks,
        plans=layer.num_plans,
        uses_critic=layer.uses_terminal_value,
        layer_kwargs=layer_kwargs,
        layer_eval_wall_s=round(time.perf_counter() - start, 1),
        layer_eval_cpu_s=round(time.process_time() - cpu_start, 1),
    )


LAYER_CASES = [
    # (env id, base, base training steps, layer planner settings)
    ("Pendulum-v1", "ars", 5_000, dict(horizon=15, num_samples=100, num_iterations=3)),
    ("Pendulum-v1", "sac", 3_000, dict(horizon=15, num_samples=100, num_iterations=3)),
]


def _append(record: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def load_records(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def steps_table(records: list[dict[str, Any]]) -> str:
    """Markdown: per task and seed, steps to threshold of ARS and DeMoARS, and the ratio."""
    lines = [
        "| task (threshold; budget ARS / ours) | seed | ARS steps to threshold | DeMoARS steps to threshold "
        "| ratio ARS/ours "
        "| ARS best / final return | DeMoARS best / final return | DeMoARS distilled policies kept / checked, "
        "labels | wall s ARS / ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    runs = {(r["env_id"], r["algo"], r["seed"]): r for r in records if r["part"] == "steps"}
    for env_id in THRESHOLDS:
        pairs = []
        for seed in sorted({s for (e, _, s) in runs if e == env_id}):
            ars, ours = runs.get((env_id, "ars", seed)), runs.get((env_id, "demo_ars", seed))
            if ars is None or ours is None:
                continue
            pairs.append((ars, ours))

            def fmt(r: dict[str, Any]) -> str:
                steps = r["steps_to_threshold"]
                return f"{steps:,}" if steps is not None else f"> {r['env_steps']:,}"

            a, o = ars["steps_to_threshold"], ours["steps_to_threshold"]
            if a is not None and o is not None:
                ratio = f"{a / max(o, 1):.1f}"
            elif o is not None:
                ratio = f"> {ars['env_steps'] / max(o, 1):.1f}"
            elif a is not None:
                ratio = f"< {a / ours['env_steps']:.2f}"
            else:
                ratio = "neither"
            kept, checked = (
                ours.get("distill_accepted", 0),
                ours.get("distill_accepted", 0) + ours.get("distill_rejected", 0),
            )
            lines.append(
                f"| {env_id} ({ars['threshold']:g}; {ars['budget']:,} / {ours['budget']:,}) | {seed} "
                f"| {fmt(ars)} | {fmt(ours)} | {ratio} "
                f"| {ars['best_return']:.1f} / {ars['final_return']:.1f} "
                f"| {ours['best_return']:.1f} / {ours['final_return']:.1f} "
                f"| {kept} / {checked}, {ours.get('labels', 0):,} labels "
                f"| {ars['wall_s']:.0f} / {ours['wall_s']:.0f} |"
            )
        if len(pairs) >= 3:
            # a run that stopped short of the threshold counts as its env steps: a lower bound
            iqm = iqm_ci(
                {
                    algo: [r["steps_to_threshold"] or r["env_steps"] for r in runs_of_algo]
                    for algo, runs_of_algo in zip(("ars", "demo_ars"), zip(*pairs))
                }
            )
            lines.append(
                f"| {env_id}: IQM [95% CI] over {len(pairs)} seeds | | {format_iqm(iqm['ars'])} "
                f"| {format_iqm(iqm['demo_ars'])} | | | | | |"
            )
    return "\n".join(lines)


def layer_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| task | base policy (training steps) | seed | base alone | base + DeMo Layer | terminal value "
        "| fallbacks / plans |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["part"] != "layer":
            continue
        lines.append(
            f"| {r['env_id']} | {r['base'].upper()} ({r['base_steps']:,}) | {r['seed']} "
            f"| {r['base_return']:.1f} ± {r['base_std']:.1f} | {r['layer_return']:.1f} ± {r['layer_std']:.1f} "
            f"| {'critic' if r['uses_critic'] else 'none'} | {r['fallbacks']} / {r['plans']} |"
        )
    return "\n".join(lines)


def plot_curves(records: list[dict[str, Any]], path: str) -> None:
    """Learning curves of the linear policy alone (mean of 10 episodes) against env steps, per task (the
    latest run of each task, algorithm and seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the latest record of each (task, algorithm, seed), as in the table
    runs = list({(r["env_id"], r["algo"], r["seed"]): r for r in records if r["part"] == "steps"}.values())
    env_ids = [e for e in THRESHOLDS if any(r["env_id"] == e for r in runs)]
    if not env_ids:
        return
    fig, axes = plt.subplots(1, len(env_ids), figsize=(5 * len(env_ids), 3.8), squeeze=False)
    colors = {"ars": "tab:gray", "demo_ars": "tab:blue"}
    labels = {"ars": "ARS (RL Zoo, linear)", "demo_ars": "DeMoARS (layer in the loop)"}
    for ax, env_id in zip(axes[0], env_ids):
        seen = set()
        for r in runs:
            if r["env_id"] != env_id:
                continue
            steps, returns = zip(*r["curve"])
            label = labels[r["algo"]] if r["algo"] not in seen else None
            seen.add(r["algo"])
            ax.plot(steps, returns, color=colors[r["algo"]], alpha=0.8, label=label)
        ax.axhline(THRESHOLDS[env_id], color="k", linestyle="--", linewidth=0.8)
        ax.set_title(f"{env_id}: linear policy alone")
        ax.set_xlabel("env steps (all of them)")
        ax.set_ylabel("mean return, 10 episodes")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["steps", "layer", "tables", "plot"], default="steps")
    parser.add_argument("--envs", nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--algos", nargs="+", default=["ars", "demo_ars"], choices=["ars", "demo_ars"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--eval-every", type=int, default=2_000, help="env steps between evaluations (1: after every ARS update)"
    )
    parser.add_argument("--budget-scale", type=float, default=1.0)
    parser.add_argument("--results", default=RESULTS, help="JSON-lines file the records are appended to")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.part == "steps":
        for env_id in args.envs:
            for seed in args.seeds:
                for algo in args.algos:
                    budget = int(BUDGETS[env_id][algo] * args.budget_scale)
                    record = run_steps(env_id, algo, seed, budget, args.eval_every)
                    _append(record, args.results)
                    print(
                        f"{env_id} {algo} seed={seed}: steps to {record['threshold']:g} = "
                        f"{record['steps_to_threshold']}, best {record['best_return']}, "
                        f"{record['wall_s']} s wall / {record['cpu_s']} s CPU",
                        flush=True,
                    )
    elif args.part == "layer":
        for env_id, base, steps, layer_kwargs in LAYER_CASES:
            if env_id not in args.envs:
                continue
            for seed in args.seeds:
                record = run_layer(env_id, base, seed, int(steps * args.budget_scale), layer_kwargs)
                _append(record, args.results)
                print(record, flush=True)
    records = load_records(args.results)
    if args.part == "plot":
        plot_curves(records, os.path.join(os.path.dirname(os.path.abspath(args.results)), "demo_layer_curves.png"))
    print(steps_table(records))
    print()
    print(layer_table(records))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\nprocess CPU time {usage.ru_utime + usage.ru_stime:.0f} s")


if __name__ == "__main__":
    main()
