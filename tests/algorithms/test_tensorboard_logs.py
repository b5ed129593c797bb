"""``tensorboard_log=``: the planner's and the learned model's statistics reach TensorBoard's event file."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
from tensorboard.backend.event_processing import event_accumulator  # the tests extra installs tensorboard

from sb3_demo import DeMoSAC

# what the README lists as worth plotting
PLANNER_KEYS = {"planner/latency_ms", "planner/expected_return", "planner/ess", "planner/iterations"}
MODEL_KEYS = {"model/holdout_mse", "model/train_loss", "model/grad_steps", "model/fit_time_s"}


def test_demosac_writes_planner_and_model_keys_to_the_event_file(tmp_path: Path) -> None:
    model = DeMoSAC(
        "MlpPolicy",
        gym.make("Pendulum-v1", max_episode_steps=50),
        model="ensemble",
        model_kwargs=dict(hidden_sizes=(16, 16), num_members=2, num_elites=1),
        model_train_freq=50,
        model_fit_kwargs=dict(max_grad_steps=10),
        planner_kwargs=dict(horizon=2, num_samples=8, num_iterations=1, num_particles=1),
        learning_starts=50,
        batch_size=32,
        policy_kwargs=dict(net_arch=[16, 16]),
        tensorboard_log=str(tmp_path),
        seed=0,
    )
    model.learn(150, log_interval=1, tb_log_name="demosac")
    event_files = list(tmp_path.glob("demosac_*/events.out.tfevents.*"))
    assert len(event_files) == 1, list(tmp_path.rglob("*"))
    accumulator = event_accumulator.EventAccumulator(str(event_files[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert PLANNER_KEYS <= tags, sorted(tags)
    assert MODEL_KEYS <= tags, sorted(tags)
    mse = [event.value for event in accumulator.Scalars("model/holdout_mse")]
    assert mse and all(value >= 0.0 for value in mse)
    assert all(event.value > 0.0 for event in accumulator.Scalars("planner/latency_ms"))
