"""DeMoARS: ARS of a linear policy with the DeMo Layer's labels distilled into it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import ARS
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_demo import DeMoARS, DeMoPolicy
from sb3_demo.ars import ridge_fit_linear

FAST_PLANNER = dict(horizon=5, num_samples=16, num_iterations=1)


def _rollouts(model, env_id: str, first_seed: int, episodes: int = 3) -> tuple[float, float]:
    """Mean return and length of the policy alone (deterministic), observations normalised as in training."""
    env, vec_norm = gym.make(env_id), model.get_vec_normalize_env()
    returns, lengths = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=first_seed + episode)
        total, length, done = 0.0, 0, False
        while not done:
            action, _ = model.predict(obs if vec_norm is None else vec_norm.normalize_obs(obs), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, length, done = total + float(reward), length + 1, terminated or truncated
        returns.append(total)
        lengths.append(length)
    return float(np.mean(returns)), float(np.mean(lengths))


def test_ridge_fit_recovers_a_linear_map_and_pulls_towards_the_centre() -> None:
    rng = np.random.default_rng(0)
    features = th.as_tensor(rng.normal(size=(200, 3)), dtype=th.float32)
    true_weight, true_bias = th.tensor([[1.0, -2.0, 0.5]]), th.tensor([0.3])
    targets = features @ true_weight.T + true_bias
    centre = th.zeros(1, 3)
    weight, bias = ridge_fit_linear(features, targets, centre, th.zeros(1), ridge=1e-8)
    assert bias is not None
    th.testing.assert_close(weight, true_weight, atol=1e-4, rtol=0)
    th.testing.assert_close(bias, true_bias, atol=1e-4, rtol=0)
    stiff, none = ridge_fit_linear(features, targets, centre, None, ridge=1e6)
    assert none is None and float(stiff.abs().max()) < 1e-4  # a huge ridge keeps the current weights
    with pytest.raises(ValueError, match="ridge must be > 0"):
        ridge_fit_linear(features, targets, centre, None, ridge=0.0)


def test_every_env_step_counts_guided_rollouts_included() -> None:
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = DeMoARS(
        "LinearPolicy",
        env,
        n_delta=2,
        seed=0,
        planner_kwargs=FAST_PLANNER,
        labels_per_update=32,
        guided_episodes=1,
        distill_check=True,
    )
    model.learn(1)  # one update: 1 guided episode and a check of its distillation, 4 candidates, 1 more check
    assert model.num_guided_steps == 200
    assert model.num_timesteps == 200 + 200 + 4 * 200 + 200
    assert model.num_labels == 32 and model.num_distill_accepted + model.num_distill_rejected == 2
    assert len(model._label_obs) == 32 + 200  # the guided episode's states come labelled by the layer


def test_layer_labels_make_the_linear_policy_balance_sooner_than_plain_ars() -> None:
    """InvertedPendulum-v5 with the learned ensemble: after ~1.5k env steps (every step counted, the random
    warm-up included) the linear policy alone balances far longer than plain ARS's after the same budget."""
    ars_kwargs = dict(n_delta=2, n_top=2, delta_std=0.02, seed=0)  # RL Zoo's default ARS settings
    budget = 1_500
    ours = DeMoARS(
        "LinearPolicy",
        make_vec_env("InvertedPendulum-v5", n_envs=1, seed=0),
        model="ensemble",
        model_kwargs=dict(hidden_sizes=[32, 32], num_members=3, num_elites=2),
        model_fit_kwargs=dict(max_epochs=15),
        model_learning_starts=200,
        model_train_freq=250,
        random_steps=300,
        planner_kwargs=dict(horizon=10, num_samples=32, num_iterations=2),
        value_rollout_steps=30,
        labels_per_update=64,
        distill_ridge=0.01,
        **ars_kwargs,
    )
    ours.learn(budget)
    plain = ARS("LinearPolicy", make_vec_env("InvertedPendulum-v5", n_envs=1, seed=0), **ars_kwargs)
    plain.learn(ours.num_timesteps)
    ours_length = _rollouts(ours, "InvertedPendulum-v5", 500)[1]
    plain_length = _rollouts(plain, "InvertedPendulum-v5", 500)[1]
    assert ours.num_random_steps >= 300 and ours.num_labels > 0
    assert ours_length > 60 and ours_length > 2 * plain_length, (ours_length, plain_length)


def test_a_guided_brown_noise_episode_teaches_the_linear_policy_mountain_car() -> None:
    """MountainCarContinuous-v0, RL Zoo's ARS settings, seed 1 (plain ARS needs ~86k steps there): one
    update, whose layer-run episode (horizon 100, brown noise) reaches the goal and is distilled before the
    candidates run, leaves a linear policy that reaches the goal alone; plain ARS's after as many steps
    does not."""
    ars_kwargs = dict(n_delta=4, n_top=1, learning_rate=0.018, delta_std=0.2, zero_policy=False, seed=1)

    def env():
        return VecNormalize(make_vec_env("MountainCarContinuous-v0", n_envs=1, seed=1), norm_reward=False)

    ours = DeMoARS(
        "LinearPolicy",
        env(),
        planner_kwargs=dict(horizon=100, noise_beta=2.0, num_samples=100, num_iterations=2),
        guided_episodes=1,
        labels_per_update=0,
        **ars_kwargs,
    )
    ours.learn(1)
    plain = ARS("LinearPolicy", env(), **ars_kwargs)
    plain.learn(ours.num_timesteps)
    assert 0 < ours.num_guided_steps < 200  # the layer reached the goal (an episode ends there)
    assert _rollouts(ours, "MountainCarContinuous-v0", 900)[0] > 90.0
    assert _rollouts(plain, "MountainCarContinuous-v0", 900)[0] < 50.0


def test_save_load_and_layer_on_top(tmp_path) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = DeMoARS("LinearPolicy", env, n_delta=2, seed=0, planner_kwargs=FAST_PLANNER, labels_per_update=16)
    model.learn(1)
    path = str(tmp_path / "demo_ars")
    model.save(path)
    loaded = DeMoARS.load(path, env=env)
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    layer = DeMoPolicy.from_agent(loaded, dynamics="analytic", **FAST_PLANNER, seed=0)
    actions, _ = layer.predict(obs, deterministic=True)
    assert np.all(np.abs(actions) <= 2.0)


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="linear policy"):
        DeMoARS("MlpPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match="n_envs=1"):
        DeMoARS("LinearPolicy", make_vec_env("Pendulum-v1", n_envs=2))
    with pytest.raises(ValueError, match="must not set"):
        DeMoARS("LinearPolicy", "Pendulum-v1", planner_kwargs={"prior": None})
    with pytest.raises(ValueError, match="distill_weight"):
        DeMoARS("LinearPolicy", "Pendulum-v1", distill_weight=2.0)
    with pytest.raises(ValueError, match="no analytic model"):
        DeMoARS("LinearPolicy", "InvertedPendulum-v5", model="analytic")
    with pytest.raises(ValueError, match="Box action space"):
        DeMoARS("LinearPolicy", "CartPole-v1")
