"""The literal RL Zoo commands, run as a user would: train, load, enjoy, plots, ``-conf``, ``sb3_demo.train``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from zoo_helpers import SMALL_PLANNER, run_python, saved_model, zoo_train

from sb3_demo import AugmentedReplayBuffer, DeMoSAC, DeMoTD3
from sb3_demo.ars import DeMoARS
from sb3_demo.zoo import hyperparams_path


@pytest.fixture(scope="module")
def sac_logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One short ``python -m rl_zoo3.train --algo demorl_sac`` run (with evaluations, replay buffer saved)."""
    logs = tmp_path_factory.mktemp("zoo_sac") / "logs"
    stdout = zoo_train(
        "demorl_sac",
        logs,
        "--hyperparams",
        SMALL_PLANNER,
        "model:'analytic'",
        "learning_starts:100",
        "--eval-freq",
        "150",
        "--eval-episodes",
        "2",  # rl_zoo3.plots.all_plots fails on a single run evaluated with a single episode
        "--save-replay-buffer",
    )
    return logs, stdout


def test_rl_zoo3_train_demorl_sac_reads_our_yml_and_saves_a_demosac(sac_logs: tuple[Path, str]) -> None:
    logs, stdout = sac_logs
    # no -conf: the hyperparameters came from the package's file
    assert f"Loading hyperparameters from: {hyperparams_path('demorl_sac')}" in stdout
    model = DeMoSAC.load(saved_model(logs, "demorl_sac"), device="cpu")
    assert isinstance(model, DeMoSAC)
    assert model.num_timesteps == 300
    assert model.model == "analytic"  # from --hyperparams
    assert model.model_fit_kwargs["reinit_growth"] == 2.0  # from the yml's Pendulum-v1 entry
    assert model.lr_schedule(1.0) == pytest.approx(1e-3)
    assert model.planner_kwargs["horizon"] == 2  # from --hyperparams
    assert model.planner_kwargs["num_samples"] == 16
    assert model.learning_starts == 100
    # the planner chose the rollout actions: its imagined transitions are in the saved replay buffer
    model.load_replay_buffer(logs / "demorl_sac" / "Pendulum-v1_1" / "replay_buffer.pkl")
    buffer = model.replay_buffer
    assert isinstance(buffer, AugmentedReplayBuffer)
    assert buffer.pos == 300
    assert buffer.imagined_pos > 0 or buffer.imagined_full
    # the saved model plans at predict time
    action, _ = model.predict(np.array([1.0, 0.0, 0.0], dtype=np.float32), deterministic=True)
    assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0
    # rl_zoo3's own config record shows what was used
    config = yaml.load(
        (logs / "demorl_sac" / "Pendulum-v1_1" / "Pendulum-v1" / "config.yml").read_text(),
        Loader=yaml.UnsafeLoader,
    )
    assert dict(config)["model"] == "analytic"


def test_rl_zoo3_enjoy_runs_a_trained_demorl_model(sac_logs: tuple[Path, str]) -> None:
    logs, _ = sac_logs
    enjoy = ["-m", "rl_zoo3.enjoy", "--algo", "demorl_sac", "--env", "Pendulum-v1", "-f", str(logs), "-n", "200"]
    proc = run_python([*enjoy, "--no-render", "--num-threads", "1", "--seed", "1"], cwd=logs.parent)
    assert "Loading latest experiment, id=1" in proc.stdout
    assert "Episode Length 200" in proc.stdout
    assert "Mean reward:" in proc.stdout


def test_rl_zoo3_plots_read_demorl_logs(sac_logs: tuple[Path, str]) -> None:
    pytest.importorskip("seaborn", reason="rl_zoo3.plots needs the plots extra: pip install 'sb3_demo[plots]'")
    logs, _ = sac_logs
    output = logs.parent / "all_plots"
    all_plots = ["-m", "rl_zoo3.plots.all_plots", "-a", "demorl_sac", "-e", "Pendulum-v1", "-f", str(logs)]
    run_python([*all_plots, "-o", str(output), "--no-display", "-max", "1000"], cwd=logs.parent)
    with open(f"{output}.pkl", "rb") as f:
        results = pickle.load(f)
    curve = results["Pendulum-v1"][f"DEMORL_SAC-{logs}"]
    assert list(curve["timesteps"]) == [150, 300]  # the two evaluations of the run
    assert np.all(np.isfinite(curve["mean"]))
    run_python(
        [
            "-m",
            "rl_zoo3.plots.plot_train",
            "-a",
            "demorl_sac",
            "-e",
            "Pendulum-v1",
            "-f",
            str(logs),
            "-w",
            "1",
        ],
        cwd=logs.parent,
    )


def test_rl_zoo3_train_demorl_td3(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    stdout = zoo_train("demorl_td3", logs, "--hyperparams", SMALL_PLANNER, "model:'analytic'", "learning_starts:100")
    assert f"Loading hyperparameters from: {hyperparams_path('demorl_td3')}" in stdout
    model = DeMoTD3.load(saved_model(logs, "demorl_td3"), device="cpu")
    assert isinstance(model, DeMoTD3)
    assert model.num_timesteps == 300
    assert model.model == "analytic"  # from --hyperparams
    assert model.gamma == pytest.approx(0.98)  # RL Zoo's TD3 Pendulum setting, kept in our yml
    assert model.planner_kwargs["horizon"] == 2


def test_conf_file_overrides_and_sb3_demo_train_entry_point(tmp_path: Path) -> None:
    conf = tmp_path / "my_demorl.yml"
    conf.write_text(
        "Pendulum-v1:\n"
        "  n_timesteps: 1000\n"
        "  policy: 'MlpPolicy'\n"
        "  gamma: 0.9\n"
        "  learning_starts: 50\n"
        "  model: 'analytic'\n"
        "  planner_kwargs:\n"
        "    horizon: 3\n"
        "    num_samples: 8\n"
        "    num_iterations: 1\n"
        "    num_particles: 1\n"
        "  replay_buffer_kwargs:\n"
        "    imagined_fraction: 0.0\n"
    )
    logs = tmp_path / "logs"
    stdout = zoo_train("demorl_sac", logs, "-conf", str(conf), n_timesteps=100, module="sb3_demo.train")
    assert f"Loading hyperparameters from: {conf}" in stdout
    model = DeMoSAC.load(saved_model(logs, "demorl_sac"), device="cpu")
    assert model.gamma == pytest.approx(0.9)
    assert model.planner_kwargs["num_samples"] == 8
    assert model.learning_starts == 50


def test_rl_zoo3_train_demorl_ars(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    ars = ["n_delta:1", "n_top:1", "labels_per_update:16"]  # one ARS update: 2 episodes of 200 steps
    stdout = zoo_train("demorl_ars", logs, "--hyperparams", SMALL_PLANNER, *ars, n_timesteps=400)
    assert f"Loading hyperparameters from: {hyperparams_path('demorl_ars')}" in stdout
    assert "distill_num_pairs" in stdout  # the layer labelled visited states and the policy was distilled
    model = DeMoARS.load(saved_model(logs, "demorl_ars"), device="cpu")
    assert isinstance(model, DeMoARS)
    assert model.num_timesteps == 400
    assert model.planner_kwargs["horizon"] == 2
