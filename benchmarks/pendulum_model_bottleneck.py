"""Why DeMoSAC's planner dips on Pendulum-v1: swap one ingredient at a time after a short training run.

Trains DeMoSAC with the Pendulum-v1 settings of ``sample_efficiency.py`` for ``--steps`` env steps, then
evaluates the planner (5 deterministic episodes from ``reset(seed=10_000 + seed)``, the benchmark's
evaluation) with the *same* trained actor, critic and learned model, changing one thing at a time:

- the critic's terminal value off, the actor's proposals off, both off;
- the exact model (``PendulumDynamics``) instead of the learned ensemble (with and without critic/prior);
- the ensemble's predictions sampled from its members' Gaussians, or their means (``deterministic``);
- the ensemble's ``disagreement_penalty`` at each value of ``--penalties``;
- ``--refit``: the ensemble refitted once more on the run's replay buffer, warm-started, until hold-out early
  stopping with no cap on gradient steps; and a new ensemble of the same size fitted from scratch on the same
  data (``--rows fit``: only these, the trained model and the exact model).

    python benchmarks/pendulum_model_bottleneck.py --seed 1 --steps 500 --penalties 1 5 20
    python benchmarks/pendulum_model_bottleneck.py --seed 1 --steps 500 --penalties --variant sampled
    python benchmarks/pendulum_model_bottleneck.py --seed 3 --steps 2250 --variant capped --refit --rows fit
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import gymnasium as gym
import torch as th
from sample_efficiency import make_algo  # this folder is on sys.path when run as a script
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_demo import PendulumDynamics
from sb3_demo.common.model_factory import make_dynamics
from sb3_demo.common.schedule import fit_model_from_buffer
from sb3_demo.common.seeding import PREDICT_PLANNER


def evaluate(model: Any, seed: int, no_value: bool = False, no_prior: bool = False) -> float:
    planner = model.make_planner(PREDICT_PLANNER, deterministic_prior=True)
    if no_value:
        planner.terminal_value = None
    if no_prior:
        planner.prior_fraction = 0.0
    model._eval_planner = planner
    env = Monitor(gym.make("Pendulum-v1"))
    env.reset(seed=10_000 + seed)
    return float(evaluate_policy(model, env, 5)[0])


def new_ensemble(agent: Any, seed: int) -> Any:
    """A new, unfitted ensemble of the agent's size and settings (its ``model_kwargs``)."""
    return make_dynamics(
        "ensemble",
        agent.observation_space,
        agent.action_space,
        env_id="Pendulum-v1",
        model_kwargs=agent.model_kwargs,
        seed=seed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--penalties", nargs="*", type=float, default=[1.0, 5.0, 20.0])
    parser.add_argument("--variant", default=None, help="named DeMo settings of sample_efficiency.py")
    parser.add_argument(
        "--refit", action="store_true", help="also refit the ensemble without a cap, and fit a new one from scratch"
    )
    parser.add_argument(
        "--rows", choices=["all", "fit"], default="all", help="fit: as trained, exact, and the --refit rows"
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    model = make_algo("demosac", "Pendulum-v1", args.seed, args.variant)
    model.learn(args.steps)
    learned = model.dynamics
    head = f"seed {args.seed}, {args.steps} steps" + (f", variant {args.variant}" if args.variant else "")
    rows = [
        ("learned model, as trained", False, False, False),
        ("learned model, no critic value", False, True, False),
        ("learned model, no actor proposals", False, False, True),
        ("learned model, neither", False, True, True),
        ("exact model, as trained", True, False, False),
        ("exact model, neither", True, True, True),
    ]
    if args.rows == "fit":
        rows = [rows[0], rows[4]]
    for label, exact, no_value, no_prior in rows:
        model.dynamics = PendulumDynamics() if exact else learned
        t0 = time.perf_counter()
        ret = evaluate(model, args.seed, no_value, no_prior)
        print(f"{head}, {label}: {ret:.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    model.dynamics = learned
    if args.refit:
        fresh = new_ensemble(model, seed=args.seed + 1)
        for label, candidate, fit_kwargs in [
            ("learned model refitted without a gradient-step cap", copy.deepcopy(learned), {"max_grad_steps": None}),
            ("a new ensemble of the same size fitted to early stopping on the same data", fresh, {}),
        ]:
            t0 = time.perf_counter()
            stats = fit_model_from_buffer(candidate, model.replay_buffer, fit_kwargs)
            fit_s = time.perf_counter() - t0
            model.dynamics = candidate
            ret = evaluate(model, args.seed)
            fit = f"{int(stats['grad_steps'])} gradient steps, hold-out MSE {stats['holdout_mse']:.2g}, {fit_s:.0f} s"
            print(f"{head}, {label} ({fit}): {ret:.1f}", flush=True)
        model.dynamics = learned
    if args.rows == "fit":
        return
    trained_as = learned.deterministic
    for deterministic in (False, True):
        learned.deterministic = deterministic
        ret = evaluate(model, args.seed)
        kind = "members' means" if deterministic else "sampled predictions"
        print(f"{head}, learned model, {kind}: {ret:.1f}", flush=True)
    learned.deterministic = trained_as
    for penalty in args.penalties:
        learned.disagreement_penalty = penalty
        ret = evaluate(model, args.seed)
        print(f"{head}, learned model, disagreement_penalty {penalty}: {ret:.1f}", flush=True)


if __name__ == "__main__":
    main()
