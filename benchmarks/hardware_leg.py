"""Hardware benchmark on the simulated 2R leg (``sb3_demo/Leg2R-v0``, wall clock, 125 Hz).

Two parts:

``latency``: the real-time contract at the default planner size on this machine. A learned ensemble
(the leg's size by default, ``--model-size``) is fitted on leg data, an SB3 SAC policy gives the planner
its prior and terminal value, and the planner runs inside the control loop of the wall-clock env under a
:class:`~sb3_demo.realtime.RealTimeController` (``--controllers deadline``: planned after the observation,
deadline = 75 % of the 8 ms period, counted from the observation's tick) or a
:class:`~sb3_demo.realtime.PlanAheadController` (``ahead``: planned from the predicted observation while the
previous action executes; acting is a lookup). Reported per controller, planner size and model: latency
p50/p99/max from the tick to the action, deadline-miss rate, fallback rate (stale and late plans), share of
steps whose action came from at least one completed iteration, and the env's late steps and step-period
jitter; plus the unconstrained latency of one full plan (no deadline), to show how far a size is from the
period.

``train``: SAC or DeMoSAC (learned ensemble, planner under the controller) on the wall-clock env:
env steps and wall-clock minutes until the tracking return (mean reward per step of a 4 s episode x 500,
i.e. the return of an on-time episode; moving average over 3 episodes) first reaches ``--threshold``.
Training happens between episodes (``train_freq=(1, "episode")``) or in a thread (``--threaded``).
``--sim --unconstrained`` measures sample efficiency alone (virtual clock, no deadline).

Usage (from the repository root)::

    python benchmarks/hardware_leg.py latency --out benchmarks/results/hardware_latency.json
    python benchmarks/hardware_leg.py latency --rt-priority 10 --sizes medium --models ensemble \
        --controllers ahead --loop-steps 2000 --out benchmarks/results/hardware_latency_ahead.json
    python benchmarks/hardware_leg.py train --algo sac --sim --steps 10000 --full --seed 0 --out sac_0.json
    python benchmarks/hardware_leg.py train --algo demosac --size medium --sim --unconstrained --steps 10000 \
        --full --seed 0 --out demosac_0.json
    python benchmarks/hardware_leg.py compare sac_*.json demosac_*.json --out curves.png

Without ``--sim`` the runs use the wall-clock leg (``sb3_demo/Leg2R-v0``) instead of its virtual-clock twin
(``sb3_demo/Leg2RSim-v0``). DeMoSAC's defaults here are the measured ones: the medium planner on standardised
returns (``COMMON_PLANNER``), the planned mean executed as it is (``--exploration none``), no critic's
terminal value (``--terminal-value-starts N`` adds it after N gradient updates), no imagined transitions
(``--imagined-rollouts``: each is a model rollout between the observation and the next plan) and the actor
imitating the executed actions (``--imitation-coef 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor

from sb3_demo.envs import Leg2REnv, Leg2RNominalDynamics, ik_tracking_action, leg_reward_fn
from sb3_demo.realtime import (
    LatencyStats,
    PlanAheadController,
    RealTimeController,
    RealTimeRolloutCallback,
    ThreadedTrainCallback,
    check_model_allowed,
)

PERIOD = 0.008
BUDGET_FRACTION = 0.75
SIZES: dict[str, dict[str, Any]] = {
    # the 2022 reference defaults (DeMoSAC's DEFAULT_PLANNER_KWARGS)
    "default": dict(horizon=3, num_samples=100, num_particles=4, num_iterations=5),
    "medium": dict(horizon=3, num_samples=32, num_particles=1, num_iterations=2),
    "small": dict(horizon=2, num_samples=16, num_particles=1, num_iterations=1),
    "tiny": dict(horizon=1, num_samples=8, num_particles=1, num_iterations=1),
}
# returns standardised per step before the exp weights: the leg's rewards (<= 1 a step) differ little between
# candidates, and raw returns at temperature 1 weigh them almost equally (benchmarks/leg_planner_alone.py: with
# the nominal model, horizon 3, no critic, tracking return 176 raw, 463 standardised at temperature 0.5; IK 483)
COMMON_PLANNER = dict(
    prior_fraction=0.05,
    utility="exp",
    normalize_returns=True,
    temperature=0.5,
    gamma_mean=1.0,
    gamma_std=0.9,
    init_std=0.5,
)
MODEL_SIZES: dict[str, dict[str, Any]] = {
    # the leg's: its observation has 10 dimensions; a small ensemble keeps a model call near its per-op floor
    "leg": dict(num_members=5, num_elites=4, hidden_sizes=(64, 64)),
    # the PETS reference for MuJoCo locomotion (EnsembleDynamics' defaults)
    "reference": dict(num_members=7, num_elites=5, hidden_sizes=(200, 200, 200, 200)),
}


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": th.get_num_threads(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": th.__version__,
    }


def planner_size(args: argparse.Namespace) -> dict[str, Any]:
    """The planner's settings: the named size, with ``--horizon`` and ``--planner KEY=VALUE`` overrides."""
    horizon = {} if args.horizon is None else {"horizon": args.horizon}
    overrides = {}
    for item in args.planner:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    return {**COMMON_PLANNER, **SIZES[args.size], **horizon, **overrides}


def make_env(sim: bool, **kwargs: Any) -> Leg2REnv:
    return Leg2REnv(realtime=not sim, **kwargs)


# ---------------------------------------------------------------------------------------------- latency


def collect_transitions(env: Leg2REnv, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Leg data for the model: the IK controller with exploration noise."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    data: dict[str, list[np.ndarray]] = {"obs": [], "act": [], "next": [], "rew": []}
    noise = 0.3
    for _ in range(steps):
        action = np.clip(ik_tracking_action(obs, 0.03) + rng.normal(0, noise, 2), -1, 1).astype(np.float32)
        next_obs, reward, _, truncated, _ = env.step(action)
        data["obs"].append(obs)
        data["act"].append(action)
        data["next"].append(next_obs)
        data["rew"].append(np.float32(reward))
        obs = next_obs
        if truncated:
            obs, _ = env.reset()
            noise = float(rng.uniform(0.05, 0.6))
    return {k: np.asarray(v) for k, v in data.items()}


def fit_ensemble(data: dict[str, np.ndarray], seed: int, size: str) -> tuple[Any, dict[str, float]]:
    from sb3_demo.dynamics.ensemble import EnsembleDynamics

    model = EnsembleDynamics(10, 2, reward_fn=leg_reward_fn, seed=seed, **MODEL_SIZES[size])
    start = time.perf_counter()
    stats = model.fit(data["obs"], data["act"], data["next"], data["rew"], max_epochs=30)
    stats = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
    stats["fit_seconds"] = time.perf_counter() - start
    return model, stats


class Priority:
    """Run the control loop (this thread and the leg's plant process) at a higher priority, as a robot's
    controller would: a lower niceness, or the ``SCHED_FIFO`` real-time policy (what stops wake-ups from
    being late by milliseconds on a busy machine). Restored on exit; both need the privilege."""

    def __init__(self, env: Leg2REnv, niceness: int | None = None, rt_priority: int | None = None) -> None:
        self.pids = [0, env._process.pid]
        self.niceness, self.rt_priority = niceness, rt_priority
        self.saved_nice: list[int] = []
        self.saved_policy: list[tuple[int, os.sched_param]] = []

    def __enter__(self) -> Priority:
        if self.niceness is not None:
            self.saved_nice = [os.getpriority(os.PRIO_PROCESS, pid) for pid in self.pids]
            for pid in self.pids:
                os.setpriority(os.PRIO_PROCESS, pid, self.niceness)
        if self.rt_priority is not None:
            self.saved_policy = [(os.sched_getscheduler(pid), os.sched_getparam(pid)) for pid in self.pids]
            for pid in self.pids:
                os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(self.rt_priority))
        return self

    def __exit__(self, *exc: Any) -> None:
        for pid, (policy, param) in zip(self.pids, self.saved_policy):
            os.sched_setscheduler(pid, policy, param)
        for pid, value in zip(self.pids, self.saved_nice):
            os.setpriority(os.PRIO_PROCESS, pid, value)


def run_loop(
    env: Leg2REnv, act: Any, steps: int, seed: int, args: argparse.Namespace, reset: Any = None
) -> dict[str, float]:
    """``steps`` control steps of the wall-clock env; ``act(obs, step_start) -> action``; ``reset()`` at
    every episode's end (the plans of the ended episode are dropped)."""
    with Priority(env, args.niceness, args.rt_priority):
        return _run_loop(env, act, steps, seed, reset)


def _run_loop(env: Leg2REnv, act: Any, steps: int, seed: int, reset: Any = None) -> dict[str, float]:
    obs, _ = env.reset(seed=seed)
    periods, delays, late, rewards, episode_return = [], [], 0, [], 0.0
    for _ in range(steps):
        action = act(obs, env.last_observation_time)
        obs, reward, _, truncated, info = env.step(action)
        periods.append(info["step_period"])
        delays.append(info.get("delivery_delay", 0.0))
        late += int(info["late"])
        episode_return += reward
        if truncated:
            rewards.append(episode_return)
            episode_return = 0.0
            if reset is not None:
                reset()
            obs, _ = env.reset()
    p = np.asarray(periods[1:]) * 1e3
    return {
        "period_mean_ms": float(p.mean()),
        "period_std_ms": float(p.std()),
        "period_p99_ms": float(np.percentile(p, 99)),
        "period_max_ms": float(p.max()),
        "late_step_rate": late / steps,
        "delivery_delay_p50_ms": float(np.percentile(delays, 50) * 1e3),
        "delivery_delay_p99_ms": float(np.percentile(delays, 99) * 1e3),
        "mean_reward": float(np.mean(rewards) / 500 if rewards else episode_return / steps),
    }


def latency(args: argparse.Namespace) -> dict[str, Any]:
    th.manual_seed(args.seed)
    results: dict[str, Any] = {
        "machine": machine(),
        "terminal_value": args.terminal_value,
        "niceness": args.niceness,
        "rt_priority": args.rt_priority,
        "period_ms": PERIOD * 1e3,
        "budget_fraction": BUDGET_FRACTION,
    }
    sim = make_env(True)
    try:
        data = collect_transitions(sim, args.data_steps, args.seed)
    finally:
        sim.close()
    ensemble, fit_stats = fit_ensemble(data, args.seed, args.model_size)
    results["ensemble_fit"] = fit_stats
    results["model_size"] = {"name": args.model_size, **MODEL_SIZES[args.model_size]}
    env = make_env(args.sim)
    try:
        sac = SAC("MlpPolicy", env, seed=args.seed, device="cpu")  # the actor/critic a DeMoSAC run would use
        models: dict[str, Any] = {"ensemble": ensemble, "nominal": Leg2RNominalDynamics(PERIOD)}
        models = {name: models[name] for name in args.models}
        for dynamics in models.values():
            check_model_allowed(env, dynamics)  # learned and nominal models never touch the plant

        def actor_only(obs: np.ndarray, step_start: float) -> np.ndarray:
            return sac.predict(obs, deterministic=True)[0]

        results["actor_only_loop"] = run_loop(env, actor_only, args.loop_steps, args.seed, args)
        runs = []
        for model_name, dynamics in models.items():
            for size_name in args.sizes:
                for controller_name in args.controllers:
                    runs.append(latency_run(env, sac, dynamics, data, model_name, size_name, controller_name, args))
                    print(json.dumps(runs[-1]), flush=True)
        results["runs"] = runs
    finally:
        env.close()
    results["machine_after"] = machine()
    return results


def make_controller(
    name: str, planner: Any, stats: LatencyStats, on_stale: str = "actor", **kwargs: Any
) -> RealTimeController:
    """``deadline``: plan after the observation, under the deadline; ``ahead``: plan while the previous
    action executes (:class:`~sb3_demo.realtime.PlanAheadController`; ``on_stale``: what replaces a plan
    the observation contradicts)."""
    if name == "ahead":
        return PlanAheadController(
            planner, PERIOD, budget_fraction=BUDGET_FRACTION, stats=stats, on_stale=on_stale, **kwargs
        )
    return RealTimeController(planner, PERIOD, budget_fraction=BUDGET_FRACTION, stats=stats, **kwargs)


def latency_run(
    env: Leg2REnv,
    sac: SAC,
    dynamics: Any,
    data: dict[str, np.ndarray],
    model_name: str,
    size_name: str,
    controller_name: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One planner size under one controller: an unconstrained plan's latency, then the control loop."""
    from sb3_demo.common.policy_planner import make_policy_planner

    settings = {**COMMON_PLANNER, **SIZES[size_name]}
    from sb3_demo.common.policy_planner import CriticValue

    # the critic's terminal value costs one critic call per iteration; DeMoSAC's leg runs train without it
    critic = CriticValue() if args.terminal_value == "critic" else None
    planner = make_policy_planner(dynamics, sac.policy, env.action_space, settings, critic=critic, seed=args.seed)
    # unconstrained: how long one full plan takes
    full = []
    with Priority(env, args.niceness, args.rt_priority):
        for i in range(args.full_plans):
            x = th.as_tensor(data["obs"][i * 37 % len(data["obs"])][None])
            start = time.perf_counter()
            planner.plan(x)
            full.append(time.perf_counter() - start)
    planner.reset()
    stats = LatencyStats()
    controller = make_controller(controller_name, planner, stats, on_stale=args.on_stale)

    def planned(obs: np.ndarray, start: float) -> Any:
        return controller.act(obs, start).action[0].numpy()

    try:
        loop = run_loop(env, planned, args.loop_steps, args.seed, args, reset=controller.reset)
    finally:
        close = getattr(controller, "close", None)
        if close is not None:
            close()
    return {
        "model": model_name,
        "size": size_name,
        "controller": controller_name,
        "on_stale": args.on_stale if controller_name == "ahead" else None,
        "planner": SIZES[size_name],
        "unconstrained_plan_p50_ms": float(np.percentile(full, 50) * 1e3),
        "unconstrained_plan_p99_ms": float(np.percentile(full, 99) * 1e3),
        **{f"rt_{k}": v for k, v in stats.summary().items()},
        **{f"env_{k}": v for k, v in loop.items()},
    }


# ---------------------------------------------------------------------------------------------- training


class EpisodeLog(BaseCallback):
    """Episode returns against env steps and wall-clock time; stops at ``max_minutes``."""

    def __init__(self, threshold: float, window: int, max_minutes: float) -> None:
        super().__init__()
        self.threshold, self.window, self.max_minutes = threshold, window, max_minutes
        self.episodes: list[dict[str, float]] = []
        self.reached: dict[str, float] | None = None
        self.start = time.perf_counter()
        self.late = 0
        self._late_at_episode_start = 0
        self.watchdog_trips = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self.late += int(info.get("late", False))
            self.watchdog_trips = max(self.watchdog_trips, int(info.get("watchdog_trips", 0)))
            if "episode" in info:
                minutes = (time.perf_counter() - self.start) / 60
                length = int(info["episode"]["l"])
                self.episodes.append(
                    {
                        "steps": self.num_timesteps,
                        "return": float(info["episode"]["r"]),
                        "length": length,
                        # per-step tracking reward x 500: a late (slower) loop is not penalised for its
                        # fewer steps, only for tracking worse
                        "tracking_return": float(info["episode"]["r"]) / length * 500,
                        "late_steps": self.late - self._late_at_episode_start,
                        "minutes": minutes,
                    }
                )
                self._late_at_episode_start = self.late
                recent = [e["tracking_return"] for e in self.episodes[-self.window :]]
                print(f"{self.num_timesteps} steps {minutes:.2f} min return {recent[-1]:.1f}", flush=True)
                if self.reached is None and len(recent) == self.window and np.mean(recent) >= self.threshold:
                    self.reached = {"steps": self.num_timesteps, "minutes": minutes}
                    if self.model_stop_at_threshold:
                        return False
        return (time.perf_counter() - self.start) / 60 < self.max_minutes

    model_stop_at_threshold = True


class EpisodeModelFit(BaseCallback):
    """Fit DeMoSAC's learned model at episode ends only (training off the control loop), every
    ``every`` env steps once ``starts`` steps were collected."""

    def __init__(self, every: int, starts: int) -> None:
        super().__init__()
        self.every, self.starts, self.last = every, starts, -(10**9)
        self.fit_seconds: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self.starts and self.num_timesteps - self.last >= self.every:
            wait_idle = getattr(self.model.planner, "wait_idle", None)  # type: ignore[attr-defined]
            if wait_idle is not None:  # no plan made ahead reads the model while it is fitted
                wait_idle()
            start = time.perf_counter()
            self.model.fit_model()  # type: ignore[attr-defined]
            self.fit_seconds.append(time.perf_counter() - start)
            self.last = self.num_timesteps


def bare_actor_return(model: Any, seed: int, episodes: int = 2) -> float:
    """Mean return of the trained actor alone (deterministic, no planner) on the virtual-clock leg: what
    a user deploys without the planner."""
    env = make_env(sim=True)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed + episode)
        total, done = 0.0, False
        while not done:
            action, _ = model.policy.predict(obs, deterministic=True)  # the policy: never the planner
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def train(args: argparse.Namespace) -> dict[str, Any]:
    th.manual_seed(args.seed)
    leg = make_env(args.sim)
    env = Monitor(leg)
    sac_kwargs = dict(
        learning_starts=1000,
        learning_rate=1e-3,
        batch_size=256,
        train_freq=(1, "episode"),
        gradient_steps=-1,
        seed=args.seed,
        device="cpu",
    )
    stats: LatencyStats | None = None
    try:
        if args.algo == "sac":
            model = SAC("MlpPolicy", env, **sac_kwargs)
        else:
            from sb3_demo import DeMoSAC

            # the planner under the real-time contract (DeMoSAC's own controller on a hardware env; the step
            # starts at the leg's latest observation)
            realtime: dict[str, Any] = dict(budget_fraction=BUDGET_FRACTION, budget=1e6 if args.unconstrained else None)
            if args.plan_ahead:
                realtime.update(plan_ahead=True, on_stale=args.on_stale)
            model = DeMoSAC(
                "MlpPolicy",
                env,
                planner_kwargs=planner_size(args),
                model_kwargs=dict(reward_fn=leg_reward_fn, **MODEL_SIZES[args.model_size]),
                model_learning_starts=10**9,  # fitted by EpisodeModelFit, between episodes
                model_fit_kwargs=dict(max_epochs=args.model_epochs),
                realtime=realtime,
                exploration=args.exploration,
                imagined_rollouts=args.imagined_rollouts,
                imitation_coef=args.imitation_coef,
                # the critic's terminal value after that many gradient updates, or never
                use_terminal_value=args.terminal_value_starts is not None,
                terminal_value_starts=args.terminal_value_starts or 0,
                **sac_kwargs,
            )
            check_model_allowed(leg, model.dynamics)
            stats = model.latency_stats
        log = EpisodeLog(args.threshold, args.window, args.max_minutes)
        log.model_stop_at_threshold = not args.full
        callbacks: list[BaseCallback] = [log]
        # first in the list: back to normal priority (and the garbage collector on) before the model fit
        if args.rt_priority is not None:
            rt = RealTimeRolloutCallback(args.rt_priority, extra_pids=(leg._process.pid,))
        else:
            rt = RealTimeRolloutCallback(None)
        callbacks.insert(0, rt)
        model_fit = None
        if args.algo == "demosac":
            model_fit = EpisodeModelFit(every=500, starts=1000)
            callbacks.append(model_fit)
        if args.threaded:
            callbacks.append(ThreadedTrainCallback(sync="rollout"))
        model.learn(args.steps, callback=CallbackList(callbacks))
        actor_return = bare_actor_return(model, args.seed) if args.sim else None
    finally:
        leg.close()
    return {
        "bare_actor_tracking_return": actor_return,
        "machine": machine(),
        "algo": args.algo,
        "size": args.size if args.algo == "demosac" else None,
        "planner_kwargs": planner_size(args) if args.algo == "demosac" else None,
        "model_size": {"name": args.model_size, **MODEL_SIZES[args.model_size]} if args.algo == "demosac" else None,
        "plan_ahead": args.plan_ahead,
        "exploration": args.exploration if args.algo == "demosac" else None,
        "imagined_rollouts": args.imagined_rollouts if args.algo == "demosac" else None,
        "imitation_coef": args.imitation_coef if args.algo == "demosac" else None,
        "terminal_value_starts": args.terminal_value_starts if args.algo == "demosac" else None,
        "seed": args.seed,
        "wall_clock": not args.sim,
        "threaded": args.threaded,
        "unconstrained": args.unconstrained,
        "rt_priority": args.rt_priority,
        "threshold": args.threshold,
        "window": args.window,
        "reached": log.reached,
        "episodes": log.episodes,
        "late_steps": log.late,
        "watchdog_trips": log.watchdog_trips,
        "planner": stats.summary() if stats is not None else None,
        "model_fit_seconds": model_fit.fit_seconds if model_fit is not None else None,
    }


def steps_to(episodes: list[dict[str, float]], threshold: float, window: int) -> float:
    """Env steps at which the moving average of ``window`` episodes' tracking returns first reaches
    ``threshold`` (nan: never)."""
    returns = [e["tracking_return"] for e in episodes]
    for i in range(window - 1, len(returns)):
        if np.mean(returns[i - window + 1 : i + 1]) >= threshold:
            return float(episodes[i]["steps"])
    return float("nan")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """SAC against DeMoSAC over seeds from ``train`` result files: steps to each threshold per seed, the ratio
    SAC / DeMoSAC, rliable's IQM with its 95% bootstrap interval, the bare actors' returns; a PNG of the
    curves (mean and min-max over seeds)."""
    from harness import format_iqm, iqm_ci, plot_curves, table_header

    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in args.inputs:
        with open(path) as f:
            run = json.load(f)
        runs.setdefault(run["algo"], {})[run["seed"]] = run
    seeds = sorted(set(runs["sac"]) & set(runs["demosac"]))
    lines = table_header(
        "seed",
        *(f"steps to {t:.0f}: SAC / DeMoSAC" for t in args.thresholds),
        "bare actor after training: SAC / DeMoSAC",
    )
    hits = {algo: {t: [] for t in args.thresholds} for algo in ("sac", "demosac")}
    for seed in seeds:
        cells = []
        for t in args.thresholds:
            pair = [steps_to(runs[algo][seed]["episodes"], t, args.window) for algo in ("sac", "demosac")]
            for algo, h in zip(("sac", "demosac"), pair):
                hits[algo][t].append(h)
            cells.append(" / ".join("never" if np.isnan(h) else f"{h:.0f}" for h in pair))
        actors = [runs[algo][seed].get("bare_actor_tracking_return") for algo in ("sac", "demosac")]
        cells.append(" / ".join("-" if a is None else f"{a:.0f}" for a in actors))
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    summary: dict[str, Any] = {"seeds": seeds, "window": args.window}
    for t in args.thresholds:
        sac, demo = np.array(hits["sac"][t]), np.array(hits["demosac"][t])
        entry: dict[str, Any] = {"sac": sac.tolist(), "demosac": demo.tolist()}
        if np.isfinite(sac).all() and np.isfinite(demo).all():
            entry["median_ratio"] = float(np.median(sac) / np.median(demo))
            if len(seeds) >= 3:
                iqm = iqm_ci({"sac": sac, "demosac": demo})
                entry["iqm"] = {name: format_iqm(v) for name, v in iqm.items()}
                entry["iqm_ratio"] = iqm["sac"][0] / iqm["demosac"][0]
        summary[f"steps_to_{t:.0f}"] = entry
    print("\n".join(lines))
    print(json.dumps(summary, indent=1))
    curves = []
    for algo, label in (("sac", "SAC"), ("demosac", "DeMoSAC")):
        n = min(len(runs[algo][s]["episodes"]) for s in seeds)
        steps = np.array([e["steps"] for e in runs[algo][seeds[0]]["episodes"][:n]])
        returns = np.array([[e["tracking_return"] for e in runs[algo][s]["episodes"][:n]] for s in seeds])
        curves.append((label, steps, returns))
    title = f"Leg2RSim-v0, {len(seeds)} seeds (mean, min-max)"
    plot_curves(curves, max(args.thresholds), title, Path(args.out), ylabel="training episode's tracking return")
    summary["table"] = lines
    return summary


def plot(args: argparse.Namespace) -> dict[str, Any]:
    """Tracking return against env steps (and wall-clock minutes) of ``train`` result files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for path in args.inputs:
        with open(path) as f:
            run = json.load(f)
        size = f"-{run['size']}" if run.get("size") else ""
        label = f"{run['algo']}{size} ({'wall clock' if run['wall_clock'] else 'virtual clock'})"
        steps = [e["steps"] for e in run["episodes"]]
        returns = [e["tracking_return"] for e in run["episodes"]]
        axes[0].plot(steps, returns, marker=".", label=label)
        if run["wall_clock"]:
            axes[1].plot([e["minutes"] for e in run["episodes"]], returns, marker=".", label=label)
    for ax, xlabel in zip(axes, ("env steps", "wall-clock minutes (wall-clock runs)")):
        ax.axhline(args.threshold, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("tracking return (mean reward per step x 500)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("2R leg, seed 0: SAC vs DeMoSAC")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    return {"plot": args.out}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    lat.add_argument("--data-steps", type=int, default=3000)
    lat.add_argument("--loop-steps", type=int, default=375)
    lat.add_argument("--full-plans", type=int, default=10)
    lat.add_argument(
        "--niceness", type=int, default=None, help="niceness of the control loop while measuring (e.g. -10)"
    )
    lat.add_argument(
        "--rt-priority",
        type=int,
        default=None,
        help="SCHED_FIFO priority of the control loop while measuring",
    )
    lat.add_argument(
        "--terminal-value",
        choices=["critic", "none"],
        default="critic",
        help="the planner's terminal value: the SAC critic's, or none (as DeMoSAC trains on the leg)",
    )
    lat.add_argument("--models", nargs="+", default=["ensemble", "nominal"], choices=["ensemble", "nominal"])
    lat.add_argument(
        "--controllers",
        nargs="+",
        default=["deadline", "ahead"],
        choices=["deadline", "ahead"],
        help="plan after the observation under the deadline, and/or ahead of it while the last action executes",
    )
    tr = sub.add_parser("train")
    tr.add_argument("--algo", choices=["sac", "demosac"], default="sac")
    tr.add_argument("--size", choices=list(SIZES), default="default")
    tr.add_argument(
        "--terminal-value-starts",
        type=int,
        default=None,
        help="SAC gradient updates before the critic's terminal value enters the planner's returns (default: never; "
        "on the leg it set tracking back for 2-3k steps whenever it entered)",
    )
    tr.add_argument(
        "--imagined-rollouts",
        type=int,
        default=0,
        help="DeMoSAC's imagined transitions per step (0: none; each is a model rollout between the observation "
        "and the next plan)",
    )
    tr.add_argument(
        "--imitation-coef", type=float, default=1.0, help="DeMoSAC's actor steps toward the planned actions (0: off)"
    )
    tr.add_argument("--horizon", type=int, default=None, help="the planner's horizon instead of the size's")
    tr.add_argument(
        "--planner", nargs="*", default=[], metavar="KEY=VALUE", help="planner settings (JSON values) over the size's"
    )
    tr.add_argument("--steps", type=int, default=20_000)
    tr.add_argument("--unconstrained", action="store_true", help="DeMoSAC plans without a deadline")
    tr.add_argument("--threshold", type=float, default=400.0)
    tr.add_argument("--window", type=int, default=3)
    tr.add_argument("--max-minutes", type=float, default=60.0)
    tr.add_argument("--model-epochs", type=int, default=20)
    tr.add_argument("--threaded", action="store_true")
    tr.add_argument(
        "--plan-ahead", action="store_true", help="plan each step while the previous action executes (DeMoSAC)"
    )
    tr.add_argument("--full", action="store_true", help="do not stop at the threshold")
    tr.add_argument(
        "--exploration",
        choices=["planner", "actor", "none"],
        default="none",
        help="DeMoSAC's rollout exploration: the planner's sampled action, SAC's actor noise around the plan, none",
    )
    tr.add_argument(
        "--rt-priority",
        type=int,
        default=None,
        help="SCHED_FIFO priority of the control loop during episodes",
    )
    cmp = sub.add_parser("compare", help="SAC vs DeMoSAC over seeds from train result files")
    cmp.add_argument("inputs", nargs="+")
    cmp.add_argument("--thresholds", nargs="+", type=float, default=[300.0, 350.0, 400.0])
    cmp.add_argument("--window", type=int, default=3)
    cmp.add_argument("--out", type=str, required=True, help="the PNG of the curves")
    pl = sub.add_parser("plot")
    pl.add_argument("inputs", nargs="+")
    pl.add_argument("--threshold", type=float, default=400.0)
    pl.add_argument("--out", type=str, required=True)
    for p in (lat, tr):
        p.add_argument("--model-size", choices=list(MODEL_SIZES), default="leg", help="the learned ensemble's size")
        p.add_argument(
            "--on-stale",
            choices=["actor", "replan"],
            default="actor",
            help="planning ahead: a plan the observation contradicts gives way to the actor, or to a plan made now",
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--sim", action="store_true", help="virtual-clock twin instead of the wall clock")
        p.add_argument("--out", type=str, default=None)
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.command == "plot":
        print(plot(args))
        return
    if args.command == "compare":
        compare(args)
        return
    result = latency(args) if args.command == "latency" else train(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("episodes", "runs")}, indent=1))


if __name__ == "__main__":
    main()
