"""Branched model rollouts: schedule, start states, the model's transitions, terminations, retention, batch
share, settings errors, and DeMoSAC / DeMoTD3 / stock SAC + DeMoCallback training with them."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env

from sb3_demo import AugmentedReplayBuffer, DeMoCallback, DeMoSAC, DeMoTD3, DeMoVecEnvWrapper, PendulumDynamics
from sb3_demo.common.imagination import model_rollout
from sb3_demo.common.model_rollouts import (
    BranchedRollouts,
    ModelRolloutRunner,
    check_rollout_target,
    rollout_generator,
    rollout_settings,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_PLANNER = dict(horizon=4, num_samples=24, num_particles=1, num_iterations=2)


def _small() -> dict[str, Any]:
    """Small-agent settings (fresh each time: SB3 writes into ``policy_kwargs``)."""
    return dict(learning_starts=50, batch_size=64, policy_kwargs=dict(net_arch=[32, 32]), seed=0)


ROLLOUTS = dict(num_rollouts=16, rollout_freq=1, rollout_length=2)
MODEL_DATA = dict(imagined_fraction=0.5, imagined_buffer_size=20_000)


def _demo(algo: type, **kwargs: Any) -> Any:
    kw: dict[str, Any] = dict(
        model="analytic",
        planner_kwargs=SMALL_PLANNER,
        branched_rollouts=ROLLOUTS,
        replay_buffer_kwargs=MODEL_DATA,
        **_small(),
    )
    kw.update(kwargs)
    return algo("MlpPolicy", gym.make("Pendulum-v1"), **kw)


def _filled_sac(steps: int = 60, **buffer_kwargs: Any) -> SAC:
    """A SAC agent whose AugmentedReplayBuffer holds ``steps`` real Pendulum transitions (no training)."""
    agent = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        replay_buffer_class=AugmentedReplayBuffer,
        replay_buffer_kwargs={**MODEL_DATA, **buffer_kwargs},
        learning_starts=1000,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
    )
    agent.learn(steps)
    return agent


def _run(runner: ModelRolloutRunner, agent: SAC, num_timesteps: int, dynamics: Any = None) -> int:
    return runner.maybe_run(
        num_timesteps, agent.replay_buffer, dynamics or PendulumDynamics(), agent.policy, agent.action_space
    )


def _stored(buffer: AugmentedReplayBuffer) -> tuple[np.ndarray, ...]:
    n = buffer.imagined_size()
    return (
        buffer.imagined_observations[:n],
        buffer.imagined_actions[:n],
        buffer.imagined_next_observations[:n],
        buffer.imagined_rewards[:n],
        buffer.imagined_dones[:n],
    )


# ---------------------------------------------------------------------------------------------- settings


def test_rollout_length_schedule() -> None:
    assert BranchedRollouts(rollout_length=3).length_at(10**6) == 3
    schedule = BranchedRollouts(rollout_length=(1000, 5000, 1, 15))  # MBPO's Hopper schedule, in env steps
    lengths = [schedule.length_at(t) for t in (0, 1000, 2000, 3000, 4999, 5000, 10**6)]
    assert lengths == [1, 1, 4, 8, 14, 15, 15]
    # a yml list becomes the tuple
    assert BranchedRollouts(rollout_length=[0, 10, 2, 4]).rollout_length == (0, 10, 2, 4)  # type: ignore[arg-type]


def test_rounds_follow_rollout_freq() -> None:
    settings = BranchedRollouts(rollout_freq=250)
    assert settings.rounds_due(1000, -1) == 1  # the first round as soon as rollouts may run
    assert settings.rounds_due(1249, 1000) == 0
    assert settings.rounds_due(1250, 1000) == 1
    assert settings.rounds_due(1600, 1000) == 2  # e.g. one collection of a whole episode


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(num_rollout=5), r"unknown setting\(s\) \['num_rollout'\]; allowed: \['num_rollouts'"),
        (dict(num_rollouts=0), "num_rollouts must be an integer >= 1, got 0"),
        (dict(rollout_freq=1.5), "rollout_freq must be an integer >= 1, got 1.5"),
        (dict(rollout_length=0), "rollout_length must be an integer >= 1 or a tuple"),
        (dict(rollout_length=(10, 5, 1, 4)), r"0 <= start_step < end_step.*got \(10, 5, 1, 4\)"),
        (dict(rollout_length=(0, 5, 4, 1)), "1 <= min_length <= max_length"),
        (dict(deterministic="yes"), "deterministic must be True or False"),
        (dict(rollouts_start=-1), "rollouts_start must be None or an integer >= 0"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rollout_settings(settings)


def test_bad_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="must be None"):
        rollout_settings(5)
    with pytest.raises(ValueError, match="AugmentedReplayBuffer with imagined_fraction > 0"):
        _demo(DeMoSAC, replay_buffer_kwargs=dict(imagined_fraction=0.0))
    with pytest.raises(ValueError, match="AugmentedReplayBuffer"):
        check_rollout_target(SAC("MlpPolicy", "Pendulum-v1").replay_buffer, "analytic", "SAC")
    with pytest.raises(ValueError, match="model='mujoco'"):
        check_rollout_target(_filled_sac(1).replay_buffer, "mujoco", "DeMoSAC")


# ---------------------------------------------------------------------------------------------- rollouts


def test_rollouts_start_from_real_states_and_follow_the_true_dynamics() -> None:
    agent = _filled_sac(60)
    buffer = agent.replay_buffer
    settings = BranchedRollouts(num_rollouts=32, rollout_length=3, deterministic=True)
    runner = ModelRolloutRunner(settings, rollout_generator(0))
    assert _run(runner, agent, 60) == 32 * 3  # Pendulum never terminates
    obs, actions, next_obs, rewards, dones = _stored(buffer)
    real = buffer.observations[:60, 0]
    # the first step of every rollout starts from a real replay observation; the next steps continue the rollout
    assert all(np.any(np.all(real == o, axis=1)) for o in obs[:32])
    np.testing.assert_array_equal(obs[32:64], next_obs[:32])
    np.testing.assert_array_equal(obs[64:], next_obs[32:64])
    # the actions are the actor's (deterministic here)
    with th.no_grad():
        expected = agent.policy._predict(th.as_tensor(obs), deterministic=True).numpy()
    np.testing.assert_allclose(actions, expected, atol=1e-6)
    # the transitions are gymnasium's own Pendulum steps
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    for i in range(0, 96, 7):
        env.state = np.array([np.arctan2(obs[i, 1], obs[i, 0]), obs[i, 2]])
        true_next, true_reward, *_ = env.step(agent.policy.unscale_action(actions[i]))
        np.testing.assert_allclose(next_obs[i], true_next, atol=1e-5)
        assert rewards[i] == pytest.approx(true_reward, abs=1e-4)
    assert not dones.any()


class CountingModel:
    """``s -> s + 1`` on every coordinate; a row terminates once its first coordinate reaches 3."""

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        nxt = states + 1.0
        return nxt, nxt[:, 0].clone(), nxt[:, 0] >= 3.0


def test_terminations_stop_rows() -> None:
    states = th.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [-10.0, 0.0, 0.0]])
    obs, next_obs, actions, rewards, dones = model_rollout(
        CountingModel(), states, lambda h, s: th.zeros(s.shape[0], 1), 5, lambda a: a
    )
    starts = obs[:, 0]
    # row 0: 0->1, 1->2, 2->3 (terminal); row 1: 2->3 (terminal); row 2: five steps, never terminal
    assert sorted(starts[starts >= 0].tolist()) == [0.0, 1.0, 2.0, 2.0]
    assert (starts < 0).sum() == 5
    assert dones.sum() == 2 and set(next_obs[dones.astype(bool), 0]) == {3.0}
    assert len(obs) == 3 + 1 + 5
    np.testing.assert_array_equal(rewards, next_obs[:, 0])
    assert not actions.any()


def _rows(buffer: AugmentedReplayBuffer) -> np.ndarray:
    """(observation, action) of every stored model transition, one row each."""
    obs, actions, *_ = _stored(buffer)
    return np.concatenate([obs, actions], axis=1)


def test_retention_cap_keeps_the_newest_rounds() -> None:
    agent = _filled_sac(60, imagined_buffer_size=64, imagined_max_age=30)
    buffer = agent.replay_buffer
    runner = ModelRolloutRunner(BranchedRollouts(num_rollouts=32, rollout_length=1), rollout_generator(0))
    _run(runner, agent, 60)
    first = _rows(buffer).copy()
    _run(runner, agent, 61)
    second = _rows(buffer)[32:].copy()
    _run(runner, agent, 62)
    # the store holds the two newest rounds only: the first round's rows were overwritten by the third's
    assert buffer.imagined_size() == 64 and runner.num_stored == 96
    kept = _rows(buffer)
    assert not any(np.all(kept == row, axis=1).any() for row in first)
    assert all(np.all(kept == row, axis=1).any() for row in second)
    # the age cap: model data older than imagined_max_age real transitions is never sampled
    assert buffer.num_imagined_in_batch(100) == 50
    agent.learn(31, reset_num_timesteps=False)
    assert buffer.num_imagined_in_batch(100) == 0


def test_batch_share_of_model_data() -> None:
    agent = _filled_sac(60, imagined_fraction=0.75)
    buffer = agent.replay_buffer
    runner = ModelRolloutRunner(BranchedRollouts(num_rollouts=64, rollout_length=1), rollout_generator(0))
    _run(runner, agent, 60)
    sample = buffer.sample(200)
    batch = np.concatenate([sample.observations.numpy(), sample.actions.numpy()], axis=1)
    model_rows = _rows(buffer)
    from_model = np.array([np.all(model_rows == row, axis=1).any() for row in batch])
    # 150 of 200 rows are model transitions (drawn after the real ones); the real rows' actions are the
    # random warm-up actions, not the actor's, so none of them is a model row
    assert from_model[50:].all() and not from_model[:50].any()


def test_same_seed_same_rollouts_different_seed_different() -> None:
    def stored(seed: int) -> np.ndarray:
        agent = _filled_sac(60)
        runner = ModelRolloutRunner(BranchedRollouts(num_rollouts=16, rollout_length=2), rollout_generator(seed))
        _run(runner, agent, 60)
        return np.concatenate([x.reshape(len(x), -1) for x in _stored(agent.replay_buffer)], axis=1)

    np.testing.assert_array_equal(stored(3), stored(3))
    assert not np.array_equal(stored(3), stored(4))


# ---------------------------------------------------------------------------------------------- front ends


@pytest.mark.parametrize("algo", [DeMoSAC, DeMoTD3])
def test_demo_algorithms_learn_with_rollouts(algo: type) -> None:
    model = _demo(algo, imagined_rollouts=0)
    model.learn(150)
    logged = model.logger.name_to_value
    # one round per env step from learning_starts (the analytic model needs no fit) on
    assert model.rollout_runner.num_stored == (150 - 50 + 1) * 16 * 2
    assert logged["rollouts/length"] == 2 and logged["rollouts/stored"] == 32
    assert model.replay_buffer.imagined_size() == model.rollout_runner.num_stored
    assert model._n_updates > 0
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_learned_model_rollouts_wait_for_the_first_fit() -> None:
    model = _demo(DeMoSAC, model="ensemble", model_kwargs=dict(hidden_sizes=(16, 16), num_members=2, num_elites=1))
    model.model_fit_kwargs = {**model.model_fit_kwargs, "max_grad_steps": 5}
    model.learn(49)
    assert model.rollout_runner.num_stored == 0
    model.learn(20, reset_num_timesteps=False)
    assert model.model_fitted and model.rollout_runner.num_stored > 0


def test_stock_sac_with_callback_learns_with_rollouts() -> None:
    venv = DeMoVecEnvWrapper(make_vec_env("Pendulum-v1", seed=0), model="analytic", planner_kwargs=SMALL_PLANNER)
    agent = SAC(
        "MlpPolicy", venv, replay_buffer_class=AugmentedReplayBuffer, replay_buffer_kwargs=MODEL_DATA, **_small()
    )
    callback = DeMoCallback(add_imagined=False, branched_rollouts=ROLLOUTS)
    agent.learn(150, callback=callback)
    assert callback.rollout_runner is not None
    assert callback.rollout_runner.num_stored == (150 - 50 + 1) * 16 * 2
    assert agent.replay_buffer.imagined_size() == callback.rollout_runner.num_stored
    assert agent.logger.name_to_value["rollouts/length"] == 2
    with pytest.raises(ValueError, match="unknown setting"):
        DeMoCallback(branched_rollouts=dict(length=2))


def test_off_by_default() -> None:
    model = _demo(DeMoSAC, branched_rollouts=None, replay_buffer_kwargs=None)
    model.learn(80)
    assert model.branched_rollouts is None and model.rollout_runner is None
    assert not any(key.startswith("rollouts/") for key in model.logger.name_to_value)
    # the model data are the planner's imagined transitions (D_MPC) only: one plan mean per planned step
    assert model.replay_buffer.imagined_size() == (80 - 50) * SMALL_PLANNER["horizon"]


def test_save_load_keeps_settings_and_schedule(tmp_path: Any) -> None:
    settings = dict(num_rollouts=8, rollout_freq=5, rollout_length=(0, 1000, 1, 3))
    model = _demo(DeMoSAC, branched_rollouts=settings)
    model.learn(70)
    model.save(tmp_path / "agent")
    loaded = DeMoSAC.load(tmp_path / "agent", env=gym.make("Pendulum-v1"))
    assert loaded.branched_rollouts == BranchedRollouts(**settings)  # type: ignore[arg-type]
    assert loaded.rollout_runner.last_round == model.rollout_runner.last_round
    assert loaded.rollout_runner.num_stored == model.rollout_runner.num_stored
    assert th.equal(loaded.rollout_runner.generator.get_state(), model.rollout_runner.generator.get_state())


def test_same_seed_twice_trains_identically() -> None:
    def train() -> tuple[list[th.Tensor], np.ndarray]:
        model = _demo(DeMoSAC)
        model.learn(90)
        return [p.detach().clone() for p in model.policy.parameters()], _stored(model.replay_buffer)[2].copy()

    (params_a, model_a), (params_b, model_b) = train(), train()
    np.testing.assert_array_equal(model_a, model_b)
    assert all(th.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
