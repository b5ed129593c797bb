"""Helpers for the RL Zoo tests: run rl_zoo3 / sb3_demo entry points as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# a planner small enough for a few hundred Pendulum steps in seconds (exact model: one particle)
SMALL_PLANNER = "planner_kwargs:dict(horizon=2,num_samples=16,num_iterations=1,num_particles=1)"
SMALL_RUN = ["--num-threads", "1", "--eval-freq", "-1", "--seed", "0", "--verbose", "1"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment, single-threaded, with a headless matplotlib and warnings shown."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONWARNINGS="default")
    env.pop("SB3_DEMO_ZOO_HOOK", None)
    env.update(extra)
    return env


def run_python(
    args: list[str], cwd: Path, timeout: float = 240.0, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """``python ARGS`` in ``cwd``; fails the test with the output when it exits non-zero and ``check``."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env if env is not None else subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"`python {' '.join(args)}` exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def zoo_train(algo: str, log_folder: Path, *extra: str, n_timesteps: int = 300, module: str = "rl_zoo3.train") -> str:
    """``python -m rl_zoo3.train --algo ALGO --env Pendulum-v1 -n N -f LOG_FOLDER ...``; returns stdout."""
    args = [
        "-m",
        module,
        "--algo",
        algo,
        "--env",
        "Pendulum-v1",
        "-n",
        str(n_timesteps),
        "-f",
        str(log_folder),
    ]
    proc = run_python([*args, *SMALL_RUN, *extra], cwd=log_folder.parent)
    return proc.stdout


def saved_model(log_folder: Path, algo: str, run: int = 1) -> Path:
    """Where rl_zoo3 saves the final model of run ``run``."""
    path = log_folder / algo / f"Pendulum-v1_{run}" / "Pendulum-v1.zip"
    assert path.is_file(), f"no model at {path}; found {sorted(p.name for p in log_folder.rglob('*'))}"
    return path
