"""``-optimize`` for the demorl algorithms: planner + SAC/TD3 search space, merging into the yml, shared storage."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from zoo_helpers import run_python, subprocess_env

import sb3_demo.zoo
from sb3_demo import DeMoSAC
from sb3_demo.zoo.optimize import (
    PLANNER_PARAMS,
    convert_demorl_ars_params,
    convert_demorl_params,
    current_base_hyperparams,
    merge_hyperparams,
    sample_demorl_ars_params,
    sample_demorl_sac_params,
    sample_demorl_td3_params,
)

NO_HER = {"using_her_replay_buffer": False, "her_kwargs": {}}


def optimize_command(storage: Path, n_trials: int, log_folder: Path) -> list[str]:
    return [
        "-m", "rl_zoo3.train", "--algo", "demorl_sac", "--env", "Pendulum-v1", "-n", "120",
        "-optimize", "--n-trials", str(n_trials), "--n-evaluations", "1", "--eval-episodes", "1",
        "--sampler", "random", "--pruner", "none", "--no-optim-plots",
        "--storage", str(storage), "--study-name", "demorl_pendulum",
        "--optimization-log-path", str(log_folder / "trials"),
        "--num-threads", "1", "--seed", "0", "-f", str(log_folder),
        "--hyperparams", "learning_starts:50", "--env-kwargs", "max_episode_steps:50",
    ]  # fmt: skip


def test_two_workers_share_one_study_through_a_journal_file(tmp_path: Path) -> None:
    storage = tmp_path / "study.log"
    # worker B (1 trial) runs while worker A (2 trials) runs: one study, three trials in all
    worker_b = subprocess.Popen(
        [sys.executable, *optimize_command(storage, 1, tmp_path / "logs_b")],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        proc_a = run_python(optimize_command(storage, 2, tmp_path / "logs_a"), cwd=tmp_path, timeout=400)
        out_b, _ = worker_b.communicate(timeout=400)
    finally:
        if worker_b.poll() is None:
            worker_b.kill()
            worker_b.wait()
    assert worker_b.returncode == 0, out_b[-4000:]
    assert "Number of finished trials:" in proc_a.stdout

    study = optuna.load_study(
        study_name="demorl_pendulum",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage))),
    )
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 3
    for trial in finished:
        assert {
            "horizon",
            "num_samples",
            "num_iterations",
            "utility",
            "imagined_fraction",
            "learning_rate",
        } <= set(trial.params)
        assert ("temperature" in trial.params) != ("elite_fraction" in trial.params)

    # each trial trained a DeMoSAC with the sampled planner merged into the yml's planner_kwargs
    saved = sorted((tmp_path / "logs_a" / "trials").glob("trial_*/best_model.zip"))
    assert saved, "no trial model saved"
    number = int(saved[0].parent.name.removeprefix("trial_"))
    params = next(t.params for t in study.trials if t.number == number)
    model = DeMoSAC.load(saved[0], device="cpu")
    assert model.planner_kwargs["horizon"] == params["horizon"]
    assert model.planner_kwargs["num_samples"] == params["num_samples"]
    assert model.planner_kwargs["num_particles"] == 1  # the yml's, kept by the merge
    assert model.replay_buffer.imagined_fraction == pytest.approx(params["imagined_fraction"])

    # --trial-id: a later training run takes a stored trial's settings, merged into the yml's
    sb3_demo.zoo.register()
    from rl_zoo3.exp_manager import ExperimentManager

    manager = ExperimentManager(
        argparse.Namespace(),
        "demorl_sac",
        "Pendulum-v1",
        str(tmp_path / "logs_c"),
        storage=str(storage),
        study_name="demorl_pendulum",
        trial_id=number,
        hyperparams={"learning_starts": 7},
    )
    hyperparams, _ = manager.read_hyperparameters()
    assert hyperparams["planner_kwargs"]["horizon"] == params["horizon"]
    assert hyperparams["planner_kwargs"]["num_particles"] == 1
    assert hyperparams["model"] == "ensemble"  # the yml's, kept by the merge
    assert hyperparams["learning_rate"] == pytest.approx(params["learning_rate"])
    assert hyperparams["learning_starts"] == 7  # the command line still wins


@pytest.mark.parametrize("sampler", [sample_demorl_sac_params, sample_demorl_td3_params])
def test_sampler_samples_planner_and_rl_settings_and_keeps_the_yml_ones(sampler) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base = {
        "planner_kwargs": {"num_particles": 1, "horizon": 99, "gamma_std": 0.5},
        "replay_buffer_kwargs": {"imagined_buffer_size": 123, "imagined_fraction": 0.9},
        "model": "analytic",
    }
    for _ in range(5):
        trial = study.ask()
        with current_base_hyperparams(base):
            params = sampler(trial, 1, 1, NO_HER)
        planner = params["planner_kwargs"]
        assert planner["horizon"] == trial.params["horizon"] != 99
        assert planner["num_particles"] == 1 and planner["gamma_std"] == 0.5
        assert planner["utility"] in ("exp", "elite")
        assert ("temperature" in planner) == (planner["utility"] == "exp")
        assert params["replay_buffer_kwargs"] == {
            "imagined_buffer_size": 123,
            "imagined_fraction": trial.params["imagined_fraction"],
        }
        assert 0.0 <= params["replay_buffer_kwargs"]["imagined_fraction"] <= 0.5
        # SAC's/TD3's own search space (rl_zoo3's sampler) is there too
        assert {"gamma", "learning_rate", "batch_size", "tau", "policy_kwargs"} <= set(params)
        assert "model" not in params  # settings that were not sampled stay the yml's
        study.tell(trial, 0.0)


def test_converter_turns_stored_params_into_constructor_arguments() -> None:
    stored = {
        "one_minus_gamma": 0.01,
        "batch_size_pow": 7,
        "learning_rate": 1e-3,
        "train_freq": 4,
        "tau": 0.01,
        "net_arch": "small",
        "noise_type": "normal",
        "noise_std": 0.2,
        "horizon": 4,
        "num_samples": 64,
        "num_iterations": 2,
        "utility": "elite",
        "elite_fraction": 0.1,
        "imagined_fraction": 0.2,
    }
    converted = convert_demorl_params(stored)
    assert converted["gamma"] == pytest.approx(0.99)
    assert converted["batch_size"] == 128
    assert converted["gradient_steps"] == 4
    assert converted["policy_kwargs"] == {"net_arch": [64, 64]}
    assert converted["planner_kwargs"] == {
        "horizon": 4,
        "num_samples": 64,
        "num_iterations": 2,
        "utility": "elite",
        "elite_fraction": 0.1,
    }
    assert converted["replay_buffer_kwargs"] == {"imagined_fraction": 0.2}
    assert not set(PLANNER_PARAMS) & set(converted)
    assert "noise_type" not in converted


def test_merge_replaces_string_settings_and_merges_dicts() -> None:
    base = {
        "planner_kwargs": {"horizon": 3, "num_particles": 4},
        "policy_kwargs": "dict(net_arch=[8])",
        "gamma": 0.9,
    }
    merged = merge_hyperparams(base, {"planner_kwargs": {"horizon": 5}, "policy_kwargs": {"net_arch": [64]}})
    assert merged == {
        "planner_kwargs": {"horizon": 5, "num_particles": 4},
        "policy_kwargs": {"net_arch": [64]},
        "gamma": 0.9,
    }
    assert base["planner_kwargs"] == {"horizon": 3, "num_particles": 4}  # not modified in place


def test_ars_sampler_and_converter() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    with current_base_hyperparams({"planner_kwargs": {"num_particles": 1}}):
        params = sample_demorl_ars_params(trial, 1, 1, NO_HER)
    assert params["planner_kwargs"]["num_particles"] == 1
    assert params["planner_kwargs"]["horizon"] == trial.params["horizon"]
    assert "replay_buffer_kwargs" not in params and "imagined_fraction" not in trial.params  # ARS has no buffer
    assert 1 <= params["n_top"] <= params["n_delta"]
    converted = convert_demorl_ars_params(trial.params)
    assert converted["n_delta"] == params["n_delta"] and converted["planner_kwargs"] == {
        key: value for key, value in params["planner_kwargs"].items() if key != "num_particles"
    }
