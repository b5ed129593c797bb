"""What the benchmark scripts share: RL Zoo's hyperparameters, one evaluation recorder, steps to a threshold,
the interquartile mean with a bootstrap confidence interval, and the learning-curve plot.

- :func:`zoo_hyperparams` reads an RL Zoo hyperparameter file the way ``rl_zoo3.train`` does (its
  ``ExperimentManager``: the env's entry or ``default``, schedules, ``policy_kwargs``, normalisation, action noise).
- :func:`eval_recorder` is SB3's ``EvalCallback`` (``DeMoEvalCallback`` for DeMo algorithms, which also evaluates
  the bare actor) that keeps one row of mean returns per evaluation; every evaluation starts from the same
  episode starts.
- :func:`steps_to_threshold` is the first evaluation step whose mean return reaches a threshold.
- :func:`iqm_ci` is rliable's interquartile mean over seeds with a 95% stratified bootstrap confidence interval.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.callbacks import EvalCallback

from sb3_demo import DeMoEvalCallback

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

# the offset between a run's seed and its evaluation env's seed: the evaluation episodes differ from training's
EVAL_SEED_OFFSET = 10_000


# ---------------------------------------------------------------------------------------------- RL Zoo


def zoo_hyperparams(algo: str, env_id: str, config: str | Path | None = None) -> tuple[dict[str, Any], dict | None]:
    """RL Zoo's hyperparameters of ``algo`` for ``env_id``: (constructor kwargs, VecNormalize kwargs or None).

    ``config`` is a hyperparameter file (default: rl_zoo3's own ``hyperparams/<algo>.yml``). The file is read and
    converted by rl_zoo3's ``ExperimentManager``, as ``python -m rl_zoo3.train`` would: the env's entry (for a
    ``-v5`` MuJoCo env missing from the file its ``-v4`` entry, else ``default``), schedules, ``policy_kwargs``
    and normalisation; ``noise_type`` / ``noise_std`` become the action noise. The kwargs keep ``policy``.
    """
    import rl_zoo3
    from rl_zoo3.exp_manager import ExperimentManager

    path = Path(config) if config is not None else Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"
    table = yaml.safe_load(path.read_text())
    v4 = env_id.replace("-v5", "-v4")
    key = v4 if env_id not in table and v4 in table else env_id
    manager = ExperimentManager(argparse.Namespace(), algo, key, tempfile.gettempdir(), config=str(path), verbose=0)
    with contextlib.redirect_stdout(io.StringIO()):  # the manager prints every setting it reads
        params, saved = manager.read_hyperparameters()
        params, *_ = manager._preprocess_hyperparams(params)
        if params.get("noise_type") is not None:
            params = manager._preprocess_action_noise(params, saved, gym.make(env_id))
    return params, (manager.normalize_kwargs if manager.normalize else None)


# ---------------------------------------------------------------------------------------------- evaluation


class _Rows:
    """What both recorders add to SB3's evaluation callbacks: a reseeded start and a row per evaluation.

    Every evaluation first resets the evaluation env with ``reset_seed``, so every evaluation of a run (and of
    every algorithm with the same seed) plays the same episode starts. The row holds ``steps``, one mean return
    per evaluated policy, ``training`` (the mean return of the training episodes that ended since the last row:
    for DeMo algorithms the planner acting, exploring) and ``train_wall_s`` (time since the recorder was built,
    evaluations excluded).
    """

    eval_env: Any
    eval_freq: int
    n_calls: int
    num_timesteps: int

    def _start_rows(self, reset_seed: int, ready: Callable[[], bool] | None = None) -> None:
        self.reset_seed, self.ready = reset_seed, ready
        self.rows: list[dict[str, float]] = []
        self.training_returns: list[float] = []  # training episodes finished since the last row
        self.eval_time = 0.0
        self.start = time.perf_counter()

    def _evaluate(self, row: dict[str, float]) -> bool:
        raise NotImplementedError

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:  # a Monitor-wrapped training env finished an episode
                self.training_returns.append(float(info["episode"]["r"]))
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return super()._on_step()  # type: ignore[misc]
        if self.ready is not None and not self.ready():
            return True
        t0 = time.perf_counter()
        self.eval_env.envs[0].reset(seed=self.reset_seed)
        row: dict[str, float] = {"steps": self.num_timesteps}
        continue_training = self._evaluate(row)
        if self.training_returns:  # what acted in training (DeMo: the planner, exploring), since the last row
            row["training"] = float(np.mean(self.training_returns))
            self.training_returns = []
        self.eval_time += time.perf_counter() - t0
        row["train_wall_s"] = time.perf_counter() - self.start - self.eval_time
        self.rows.append(row)
        values = ", ".join(f"{k}={v:.1f}" for k, v in row.items() if k != "steps")
        print(f"  {self.num_timesteps:>6} steps: {values}", flush=True)
        return continue_training


class EvalRecorder(_Rows, EvalCallback):
    """SB3's ``EvalCallback`` with a row per evaluation: ``key`` is the mean return of ``model.predict``.

    With ``ready``, an evaluation runs (and makes a row) only when ``ready()`` is true.
    """

    def __init__(
        self,
        eval_env: Any,
        eval_freq: int,
        n_episodes: int,
        reset_seed: int,
        key: str = "actor",
        ready: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(eval_env, eval_freq=eval_freq, n_eval_episodes=n_episodes, verbose=0)
        self.key = key
        self._start_rows(reset_seed, ready)

    def _evaluate(self, row: dict[str, float]) -> bool:
        continue_training = EvalCallback._on_step(self)
        row[self.key] = self.last_mean_reward
        return continue_training


class DeMoEvalRecorder(_Rows, DeMoEvalCallback):
    """``DeMoEvalCallback`` with a row per evaluation: ``actor`` (bare actor) and ``planner`` (``predict`` plans).

    Until the planner can act (a learned model not fitted yet, or before the planner starts) ``predict`` gives the
    bare actor's actions, so the planner's evaluation is not run and ``planner`` repeats ``actor``. With the
    simulator as model (``model="mujoco"``) ``predict`` cannot plan (it has no evaluation env's physics state):
    ``planner`` is nan, and ``training`` is the planner's only measure.
    """

    def __init__(self, eval_env: Any, eval_freq: int, n_episodes: int, reset_seed: int) -> None:
        super().__init__(eval_env, eval_freq=eval_freq, n_eval_episodes=n_episodes, verbose=0)
        self._start_rows(reset_seed)

    def _evaluate(self, row: dict[str, float]) -> bool:
        model: Any = self.model
        plans = not hasattr(model.dynamics, "state_from_env")
        if plans and (model.planner_active() or getattr(model, "model_fitted", False)):
            continue_training = DeMoEvalCallback._on_step(self)  # the bare actor, then the planner
            row["actor"] = float(np.mean(self.actor_results[-1]))
            row["planner"] = self.last_mean_reward
            return continue_training
        saved, model.predict_with_planner = model.predict_with_planner, False
        try:
            continue_training = EvalCallback._on_step(self)
        finally:
            model.predict_with_planner = saved
        row["actor"] = self.last_mean_reward
        row["planner"] = self.last_mean_reward if plans else float("nan")
        return continue_training


def eval_recorder(
    model: Any, env_id: str, eval_freq: int, n_episodes: int, seed: int, eval_env: gym.Env | None = None
) -> EvalRecorder | DeMoEvalRecorder:
    """The recorder for ``model``: planner and bare actor for DeMo algorithms, ``model.predict`` otherwise.

    ``eval_env`` defaults to ``Monitor(gym.make(env_id))``; its episode starts come from ``seed`` + 10000.
    """
    from stable_baselines3.common.monitor import Monitor

    env = eval_env if eval_env is not None else Monitor(gym.make(env_id))
    reset_seed = EVAL_SEED_OFFSET + seed
    if hasattr(model, "predict_with_planner"):
        return DeMoEvalRecorder(env, eval_freq, n_episodes, reset_seed)
    return EvalRecorder(env, eval_freq, n_episodes, reset_seed)


# ---------------------------------------------------------------------------------------------- summaries


def steps_to_threshold(rows: list[dict[str, float]], key: str, threshold: float) -> float:
    """The first evaluation step whose mean return under ``key`` reaches ``threshold`` (nan: never)."""
    for row in rows:
        if key in row and row[key] >= threshold:
            return row["steps"]
    return float("nan")


RECENT_EVALS = 3


@dataclass
class SeedSummary:
    """One evaluated policy over seeds: steps to the threshold and final returns, with IQM [95% CI] (3+ seeds)."""

    hits: list[float]  # per seed; nan: never
    counted: np.ndarray  # per seed, never counted as the budget
    finals: np.ndarray  # per seed, the last evaluation
    recent: np.ndarray  # per seed, the mean of the last RECENT_EVALS evaluations (one checkpoint can swing by hundreds)
    iqm_steps: str = "-"
    iqm_final: str = "-"

    @property
    def hits_text(self) -> str:
        return ", ".join("never" if not np.isfinite(h) else f"{h:.0f}" for h in self.hits)


def seed_summary(rows_per_seed: list[list[dict[str, float]]], key: str, threshold: float, budget: float) -> SeedSummary:
    """Summarise the evaluations under ``key`` of several seeds. A run that never reaches the threshold counts as
    ``budget``: a lower bound for a run whose own budget it is, conservative for one with a shorter budget."""
    hits = [steps_to_threshold(rows, key, threshold) for rows in rows_per_seed]
    counted = np.array([h if np.isfinite(h) else budget for h in hits])
    returns = [[row[key] for row in rows if key in row] for rows in rows_per_seed]
    finals = np.array([r[-1] for r in returns])
    recent = np.array([np.mean(r[-RECENT_EVALS:]) for r in returns])
    summary = SeedSummary(hits, counted, finals, recent)
    if len(rows_per_seed) >= 3:
        iqm = iqm_ci({"steps": counted, "final": finals})
        summary.iqm_steps, summary.iqm_final = format_iqm(iqm["steps"]), format_iqm(iqm["final"])
    return summary


def iqm_ci(scores: dict[str, Any], reps: int = 2000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """rliable's interquartile mean over runs with its 95% stratified bootstrap confidence interval.

    ``scores`` maps a name to an array whose first axis is the runs (seeds); further axes (tasks) are pooled as
    rliable does (its stratified bootstrap resamples the runs of each task on their own). Returns
    ``{name: (IQM, CI low, CI high)}``; the resampling is seeded, so a table is reproducible.
    """
    from rliable import library as rly
    from rliable import metrics

    # sorted over runs, so the interval does not depend on the order the seeds were run or merged in
    arrays = {name: np.sort(np.asarray(a, dtype=np.float64).reshape(len(a), -1), axis=0) for name, a in scores.items()}
    # rliable's stratified bootstrap draws its indices from numpy's global generator (the random_state it takes
    # is not used for them): that generator is seeded for each name, so an interval depends only on its own
    # scores, and its state is put back afterwards
    saved = np.random.get_state()  # noqa: NPY002
    result = {}
    try:
        for name, array in arrays.items():
            np.random.seed(seed)  # noqa: NPY002
            with warnings.catch_warnings():  # the bootstrap library deprecates the random_state rliable passes it
                warnings.simplefilter("ignore", FutureWarning)
                points, intervals = rly.get_interval_estimates(
                    {name: array},
                    lambda x: np.array([metrics.aggregate_iqm(x)]),
                    reps=reps,
                    confidence_interval_size=0.95,
                )
            low, high = intervals[name][:, 0]
            result[name] = (float(points[name][0]), float(low), float(high))
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    return result


def table_header(*columns: str) -> list[str]:
    """The first two lines of a markdown table."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def format_iqm(iqm: tuple[float, float, float]) -> str:
    return f"{iqm[0]:.0f} [{iqm[1]:.0f}, {iqm[2]:.0f}]"


def plot_curves(
    curves: list[tuple[str, np.ndarray, np.ndarray]],
    threshold: float,
    title: str,
    path: Path,
    fontsize: int = 10,
    ylabel: str = "mean eval return",
) -> None:
    """Learning curves: per label the steps and a (runs, evaluations) array of returns; mean and min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, steps, returns in curves:
        ax.plot(steps, returns.mean(0), label=label)
        ax.fill_between(steps, returns.min(0), returns.max(0), alpha=0.2)
    ax.axhline(threshold, color="k", ls="--", lw=0.8)
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
