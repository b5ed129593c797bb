"""``make demo``: DeMoSAC (learned ensemble) beside SAC on Pendulum-v1 through RL Zoo, then a summary.

Both trainings are ``python -m rl_zoo3.train`` runs with the same seed, started at once (one core each):
DeMoSAC in the foreground with its progress bar, SAC with its output in ``<log folder>/sac.log``. DeMoSAC
gets fewer steps than SAC: it reaches -200 within a few hundred steps (BENCHMARKS.md), SAC within a few
thousand. Afterwards, one line per algorithm (env steps to the threshold, final evaluation return,
minutes) and a PNG of both learning curves, read from the ``evaluations.npz`` that RL Zoo's evaluation
callback writes in each run folder.

::

    python -m sb3_demo.demo                      # train both, then summarise
    python -m sb3_demo.demo --summary-only       # summarise the latest runs in the log folder again
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEMO_ALGO = "demorl_sac"
BASELINE_ALGO = "sac"
TIMES_FILE = "demo_minutes.json"


@dataclass
class RunSummary:
    """What the demo reports of one training run.

    :param algo: RL Zoo algorithm name
    :param steps: env steps of the evaluations
    :param returns: mean evaluation return at each of ``steps``
    :param steps_to_threshold: first evaluation at or above the threshold (``None``: never)
    :param minutes: wall-clock minutes of the run (``None``: unknown)
    """

    algo: str
    steps: np.ndarray
    returns: np.ndarray
    steps_to_threshold: int | None
    minutes: float | None

    def line(self, threshold: float) -> str:
        reached = (
            f"reached {threshold:g} at {self.steps_to_threshold} env steps"
            if self.steps_to_threshold is not None
            else f"not {threshold:g} within {int(self.steps[-1])} env steps"
        )
        minutes = "?" if self.minutes is None else f"{self.minutes:.1f}"
        return f"{self.algo:<10} {reached}, final return {self.returns[-1]:.0f}, {minutes} min"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--demo-steps", type=int, default=1500, help="env steps of DeMoSAC")
    parser.add_argument("--sac-steps", type=int, default=5000, help="env steps of SAC")
    parser.add_argument("--eval-freq", type=int, default=250, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=-200.0, help="return that counts as solved")
    parser.add_argument("--log-folder", type=Path, default=Path("logs/demo"))
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: <log folder>/demo_<env>.png)")
    parser.add_argument("--summary-only", action="store_true", help="do not train; summarise the latest runs")
    args = parser.parse_args(argv)
    for name in ("demo_steps", "sac_steps", "eval_freq", "eval_episodes"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.eval_freq > min(args.demo_steps, args.sac_steps):
        parser.error(f"--eval-freq {args.eval_freq} leaves a run without an evaluation")
    if args.plot is None:
        args.plot = args.log_folder / f"demo_{args.env}.png"
    return args


def train_command(args: argparse.Namespace, algo: str, steps: int, progress: bool) -> list[str]:
    """The ``python -m rl_zoo3.train`` command line of one run."""
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", args.env, "-n", str(steps)]
    command += ["--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes)]
    command += ["--seed", str(args.seed), "--num-threads", "1", "-f", str(args.log_folder)]
    return [*command, "--progress"] if progress else command


def train_both(args: argparse.Namespace) -> dict[str, float]:
    """Run DeMoSAC (foreground) and SAC (output to a log file) at once; return the minutes of each."""
    args.log_folder.mkdir(parents=True, exist_ok=True)
    sac_log = args.log_folder / f"{BASELINE_ALGO}.log"
    print(f"{DEMO_ALGO} and {BASELINE_ALGO} train at once; {BASELINE_ALGO}'s output goes to {sac_log}", flush=True)
    start = time.perf_counter()
    minutes: dict[str, float] = {}
    with sac_log.open("w") as log:
        baseline = subprocess.Popen(
            train_command(args, BASELINE_ALGO, args.sac_steps, progress=False), stdout=log, stderr=subprocess.STDOUT
        )

        def time_baseline() -> None:  # SAC may finish first: its minutes are its own, not the demo's
            baseline.wait()
            minutes[BASELINE_ALGO] = (time.perf_counter() - start) / 60

        waiter = threading.Thread(target=time_baseline, daemon=True)
        waiter.start()
        try:
            demo_rc = subprocess.call(train_command(args, DEMO_ALGO, args.demo_steps, progress=True))
            minutes[DEMO_ALGO] = (time.perf_counter() - start) / 60
            if demo_rc != 0:
                raise SystemExit(f"{DEMO_ALGO} failed (exit status {demo_rc})")
            if waiter.is_alive():
                print(f"waiting for {BASELINE_ALGO} (progress in {sac_log})", flush=True)
            waiter.join()
        finally:
            if baseline.poll() is None:
                baseline.terminate()
                baseline.wait()
    if baseline.returncode != 0:
        raise SystemExit(f"{BASELINE_ALGO} failed (exit status {baseline.returncode}); see {sac_log}")
    (args.log_folder / TIMES_FILE).write_text(json.dumps(minutes))
    return minutes


def latest_run(log_folder: Path, algo: str, env_id: str) -> Path:
    """The newest RL Zoo run folder ``<log_folder>/<algo>/<env>_<n>`` (largest ``n``)."""
    prefix = f"{env_id}_"
    runs = [
        path for path in (log_folder / algo).glob(f"{prefix}*") if path.is_dir() and path.name[len(prefix) :].isdigit()
    ]
    if not runs:
        raise FileNotFoundError(f"no {algo} run for {env_id} in {log_folder / algo}")
    return max(runs, key=lambda path: int(path.name[len(prefix) :]))


def summarize_run(run_folder: Path, algo: str, threshold: float, minutes: float | None) -> RunSummary:
    """Read one run's ``evaluations.npz`` (RL Zoo's ``--eval-freq``)."""
    path = run_folder / "evaluations.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: was the run trained with --eval-freq?")
    with np.load(path) as data:
        steps = np.asarray(data["timesteps"], dtype=np.int64)
        returns = np.asarray(data["results"], dtype=np.float64).reshape(len(steps), -1).mean(axis=1)
    if len(steps) == 0:
        raise ValueError(f"{path} holds no evaluation")
    hits = np.flatnonzero(returns >= threshold)
    first = int(steps[hits[0]]) if len(hits) else None
    return RunSummary(algo, steps, returns, first, minutes)


def plot(summaries: Sequence[RunSummary], threshold: float, env_id: str, path: Path) -> None:
    """Both learning curves in one PNG (matplotlib: the ``benchmarks`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for summary in summaries:
        ax.plot(summary.steps, summary.returns, marker="o", label=summary.algo)
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"{threshold:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean evaluation return")
    ax.set_title(f"{env_id}: DeMoSAC (learned model) and SAC, same seed")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(args: argparse.Namespace, minutes: dict[str, float] | None = None) -> list[RunSummary]:
    """Print one line per algorithm and write the PNG."""
    if minutes is None:
        times_file = args.log_folder / TIMES_FILE
        minutes = json.loads(times_file.read_text()) if times_file.is_file() else {}
    summaries = [
        summarize_run(latest_run(args.log_folder, algo, args.env), algo, args.threshold, minutes.get(algo))
        for algo in (DEMO_ALGO, BASELINE_ALGO)
    ]
    for summary in summaries:
        print(summary.line(args.threshold))
    plot(summaries, args.threshold, args.env, args.plot)
    print(f"learning curves: {args.plot}")
    return summaries


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    minutes = None if args.summary_only else train_both(args)
    summarize(args, minutes)


if __name__ == "__main__":
    main()
