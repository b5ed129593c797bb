"""`python -m rl_zoo3.train --algo sac -conf zoo_hyperparams/sac_demo.yml`: stock SAC + wrapper + callback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from stable_baselines3 import SAC

REPO = Path(__file__).resolve().parents[2]


def test_rl_zoo3_trains_stock_sac_with_the_wrapper_and_callback_from_the_yml(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    cmd = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "-conf",
        str(REPO / "zoo_hyperparams" / "sac_demo.yml"),
        "-n",
        "200",
        "--seed",
        "0",
        "--eval-freq",
        "150",
        "--eval-episodes",
        "1",
        "--log-interval",
        "1",
        "--log-folder",
        str(logs),
        "-params",
        "learning_starts:50",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "sb3_demo.DeMoVecEnvWrapper" in out and "sb3_demo.DeMoCallback" in out
    # the planner acted after learning_starts: the logger's table (keys grouped as "demo/" + "guided_fraction")
    assert "guided_fraction | 0.75" in out and "latency_ms" in out, out[-4000:]
    run_dir = logs / "sac" / "Pendulum-v1_1"
    # RL Zoo's evaluation env (built with the same wrapper) was attached by the callback and evaluated
    evaluations = np.load(run_dir / "evaluations.npz")
    assert evaluations["timesteps"].tolist() == [150]
    assert np.isfinite(evaluations["results"]).all()
    model = SAC.load(run_dir / "Pendulum-v1.zip", device="cpu")
    assert type(model) is SAC and model.num_timesteps == 200
