"""Replay DeMoSAC's online model-fit schedule on a recorded Pendulum-v1 replay buffer, one fitting procedure at a time.

DeMoSAC fits its ensemble at ``learning_starts`` (100 transitions on Pendulum) and every ``model_train_freq``
(250) steps after. This script trains DeMoSAC for ``--steps`` env steps, then replays that schedule on the
run's replay buffer (fits at 100, 350, 600, ... transitions, in the order the data was collected) with a new
ensemble of the benchmark's size for each procedure below, and reports, after each fit, its gradient steps,
its hold-out MSE and its MSE on the next 250 transitions (data it has not seen, from where the agent went
next) and on all of them. MSEs are of the mean next-observation prediction, per dimension divided by the
variance of the state change over all the data, averaged over dimensions.

With ``--evaluate``, each procedure's last model is put into the trained agent (same actor and critic) and the
planner is evaluated as in ``pendulum_model_bottleneck.py`` (5 deterministic episodes), beside the exact model.

    python benchmarks/ensemble_fit_schedule.py --seed 3 --steps 2250 --variant capped --evaluate
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch as th
from harness import RESULTS
from pendulum_model_bottleneck import evaluate, new_ensemble  # this folder is on sys.path when run as a script
from sample_efficiency import make_algo

from sb3_demo import PendulumDynamics
from sb3_demo.common.schedule import transitions_from_buffer

# name -> the keyword arguments of every fit; the last one is what DeMoSAC's Pendulum benchmark uses
# (sample_efficiency.DEMO_SETTINGS), the first two its variants "capped" and "uncapped"
PROCEDURES: dict[str, dict[str, Any]] = {
    "warm, <= 500 steps": dict(max_grad_steps=500),
    "warm, to early stopping": dict(max_grad_steps=None),
    "fresh on doubling, <= 500 steps": dict(reinit_growth=2.0, max_grad_steps=500),
    "fresh on doubling": dict(reinit_growth=2.0, max_grad_steps=None),
    "fresh on doubling, patience 100 steps, <= 2000 steps": dict(
        reinit_growth=2.0, patience_steps=100, max_grad_steps=2000
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2250, help="env steps of the recorded run")
    parser.add_argument("--variant", default="capped", help="named DeMo settings of sample_efficiency.py")
    parser.add_argument("--evaluate", action="store_true", help="evaluate the planner with each last model")
    parser.add_argument("--out", default=None, help="JSON file (default: results/ensemble_fit_schedule_sSEED.json)")
    args = parser.parse_args()
    th.set_num_threads(1)

    agent = make_algo("demosac", "Pendulum-v1", args.seed, args.variant)
    agent.learn(args.steps)
    obs, act, next_obs, rew, term = transitions_from_buffer(agent.replay_buffer, actions_normalized=True)
    n_all = obs.shape[0]
    delta_var = th.as_tensor((next_obs - obs).var(axis=0))
    schedule = list(range(agent.learning_starts, n_all + 1, agent.model_train_freq))

    def mse(model: Any, lo: int, hi: int) -> float:
        with th.no_grad():
            pred, _, _ = model(th.as_tensor(obs[lo:hi]), th.as_tensor(act[lo:hi]).reshape(hi - lo, -1))
        return float((((pred - th.as_tensor(next_obs[lo:hi])) ** 2).mean(dim=0) / delta_var).mean())

    results: dict[str, Any] = {"seed": args.seed, "steps": args.steps, "variant": args.variant, "procedures": {}}
    learned = agent.dynamics
    for name, fit_kwargs in PROCEDURES.items():
        model = new_ensemble(agent, seed=args.seed)
        model.deterministic = True
        rows, fit_s = [], 0.0
        for n in schedule:
            t0 = time.perf_counter()
            stats = model.fit(obs[:n], act[:n], next_obs[:n], rew[:n], term[:n], **fit_kwargs)
            fit_s += time.perf_counter() - t0
            future = mse(model, n, min(n + agent.model_train_freq, n_all)) if n < n_all else float("nan")
            rows.append(
                dict(
                    n=n,
                    grad_steps=int(stats["grad_steps"]),
                    fresh=bool(stats.get("reinitialized", 0.0)),
                    holdout_mse=stats["holdout_mse"],
                    next_mse=future,
                    all_mse=mse(model, 0, n_all),
                )
            )
            r = rows[-1]
            print(
                f"{name}: n={n} steps={r['grad_steps']} fresh={int(r['fresh'])} hold-out={r['holdout_mse']:.2g} "
                f"next={r['next_mse']:.2g} all={r['all_mse']:.2g}",
                flush=True,
            )
        entry: dict[str, Any] = {"fit_kwargs": fit_kwargs, "fits": rows, "fit_s": fit_s}
        if args.evaluate:
            agent.dynamics = model
            entry["planner_return"] = evaluate(agent, args.seed)
        results["procedures"][name] = entry
        print(f"{name}: fit time {fit_s:.0f} s, planner {entry.get('planner_return', float('nan')):.1f}", flush=True)
    if args.evaluate:
        agent.dynamics = learned
        results["planner_return_as_trained"] = evaluate(agent, args.seed)
        agent.dynamics = PendulumDynamics()
        results["planner_return_exact_model"] = evaluate(agent, args.seed)
        print(
            f"as trained {results['planner_return_as_trained']:.1f}, "
            f"exact model {results['planner_return_exact_model']:.1f}",
            flush=True,
        )
    out = Path(args.out) if args.out else RESULTS / f"ensemble_fit_schedule_s{args.seed}.json"
    out.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {out}")
    print(table(results))


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per procedure, MSE on the next 250 transitions after each fit."""
    procs = results["procedures"]
    first = next(iter(procs.values()))["fits"]
    head = "| procedure | " + " | ".join(str(r["n"]) for r in first) + " | fit time | planner |"
    lines = [head, "|" + "---|" * (len(first) + 3)]
    for name, entry in procs.items():
        cells = [f"{r['next_mse']:.2g}" + ("*" if r["fresh"] else "") for r in entry["fits"]]
        ret = entry.get("planner_return")
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {entry['fit_s']:.0f} s | {'' if ret is None else f'{ret:.0f}'} |"
        )
    return "\n".join(lines) + "\n\n(* a fit from fresh weights; nan: no later data)"


if __name__ == "__main__":
    main()
