"""DeMoPolicy: the DeMo Layer as an SB3 policy (bounds, priors, fallback, evaluate_policy, save/load, errors)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import ARS
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_demo import DeMoPolicy
from sb3_demo.dynamics import PendulumDynamics
from sb3_demo.dynamics.ensemble import EnsembleDynamics

LOW = np.array([-0.5, 0.0], dtype=np.float32)
HIGH = np.array([2.0, 1.0], dtype=np.float32)
GOAL = np.array([10.0, -10.0], dtype=np.float32)


def point_dynamics(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """x' = x + 0.1 u, reward -|x' - goal|^2: the best action is the corner (high[0], low[1])."""
    next_states = states + 0.1 * actions
    rewards = -((next_states - th.as_tensor(GOAL)) ** 2).sum(dim=1)
    return next_states, rewards, th.zeros(states.shape[0], dtype=th.bool)


def nan_dynamics(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    nan = th.full((states.shape[0],), float("nan"))
    return states + float("nan"), nan, th.zeros(states.shape[0], dtype=th.bool)


class PointEnv(gym.Env):
    """A 2-D point pushed by an asymmetric Box action ([-0.5, 2] x [0, 1])."""

    observation_space = spaces.Box(-100.0, 100.0, (2,), np.float32)
    action_space = spaces.Box(LOW, HIGH, dtype=np.float32)

    def __init__(self) -> None:
        self.x = np.zeros(2, dtype=np.float32)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.t = 0
        return self.x.copy(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=np.float32)), action
        nxt, reward, _ = point_dynamics(th.as_tensor(self.x[None]), th.as_tensor(np.asarray(action)[None]))
        self.x = nxt[0].numpy()
        self.t += 1
        return self.x.copy(), float(reward[0]), False, self.t >= 20, {}


def _base_model(name: str):
    env = PointEnv()
    if name == "ars_linear":
        ars = ARS("LinearPolicy", env, seed=0, zero_policy=False)
        with th.no_grad():  # large weights: the raw output leaves the bounds, predict() clips it
            ars.policy.action_net[0].weight.copy_(th.tensor([[5.0, -3.0], [2.0, 4.0]]))
        return ars
    if name == "ppo":
        return PPO("MlpPolicy", env, seed=0, n_steps=64)
    if name == "td3":
        return TD3("MlpPolicy", env, seed=0, buffer_size=100)
    return SAC("MlpPolicy", env, seed=0, buffer_size=100)


@pytest.mark.parametrize("name", ["ars_linear", "ppo", "td3", "sac"])
def test_prior_matches_sb3_predict_and_actions_respect_asymmetric_bounds(name: str) -> None:
    model = _base_model(name)
    layer = DeMoPolicy.from_agent(
        model, dynamics=point_dynamics, horizon=2, num_samples=64, num_iterations=5, temperature=0.01, seed=0
    )
    obs = np.random.default_rng(0).uniform(-3, 3, size=(16, 2)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    # the prior maps squashed and unsquashed policies into [-1, 1] exactly as SB3's predict does
    np.testing.assert_allclose(layer.base_predict(obs), expected, atol=1e-5)
    actions, _ = layer.predict(obs, deterministic=True)
    assert actions.shape == (16, 2)
    assert np.all(actions >= LOW - 1e-6) and np.all(actions <= HIGH + 1e-6)
    # the planner drives the point to the corner that is best for the goal, whatever the prior says
    assert actions[:, 0].mean() > 1.8 and actions[:, 1].mean() < 0.2, actions
    stochastic, _ = layer.predict(obs, deterministic=False)
    assert np.all(stochastic >= LOW - 1e-6) and np.all(stochastic <= HIGH + 1e-6)


def test_fallback_to_the_prior_when_planning_fails() -> None:
    model = _base_model("ars_linear")
    layer = DeMoPolicy.from_agent(model, dynamics=nan_dynamics, horizon=2, num_samples=16, seed=0)
    obs = np.array([[0.1, 0.2], [-1.0, 0.5], [2.0, -2.0]], dtype=np.float32)
    actions, _ = layer.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, model.predict(obs, deterministic=True)[0], atol=1e-5)
    assert layer.last_plan is not None and bool(layer.last_plan.fallback.all())
    assert layer.num_fallbacks == 3 and layer.num_plans == 3 and layer.fallback_rate == 1.0
    layer.predict(obs[0], deterministic=True)
    assert layer.num_fallbacks == 4 and layer.num_plans == 4


def test_evaluate_policy_layer_improves_a_weak_ars_policy_on_pendulum() -> None:
    th.manual_seed(0)
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = ARS("LinearPolicy", env, seed=0, zero_policy=False)  # untrained: never swings up
    layer = DeMoPolicy.from_agent(model, dynamics="analytic", horizon=12, num_samples=64, num_iterations=2, seed=0)
    base_mean, _ = evaluate_policy(model, env, n_eval_episodes=2, deterministic=True)
    env.seed(0)
    layer_mean, _ = evaluate_policy(layer, env, n_eval_episodes=2, deterministic=True)
    assert base_mean < -900
    assert layer_mean > base_mean + 400, (base_mean, layer_mean)
    assert layer.num_fallbacks == 0 and layer.num_plans == 400  # 2 envs x 200 steps


def test_episode_start_resets_only_those_plans() -> None:
    model = _base_model("td3")
    layer = DeMoPolicy.from_agent(model, dynamics=point_dynamics, horizon=3, num_samples=32, seed=0)
    obs = np.zeros((2, 2), dtype=np.float32)
    layer.predict(obs, episode_start=np.array([True, True]), deterministic=True)
    assert layer.planner.mean is not None and float(layer.planner.mean.abs().sum()) > 0
    layer.predict(obs, episode_start=np.array([False, False]), deterministic=True)
    before = layer.planner.mean.clone()
    # reset of env 1 happens before its plan: its warm start is the fresh (zero) mean, env 0 keeps its own
    layer.reset([1])
    assert float(layer.planner.mean[1].abs().sum()) == 0.0
    assert th.equal(layer.planner.mean[0], before[0])


def _episode_actions(layer: DeMoPolicy, env_id: str, steps: int = 15) -> np.ndarray:
    env = gym.make(env_id)
    obs, _ = env.reset(seed=3)
    out = []
    start = np.array([True])
    state = None  # the warm start travels in predict's state
    for _ in range(steps):
        action, state = layer.predict(obs[None], state=state, episode_start=start, deterministic=True)
        start = np.array([False])
        out.append(action[0])
        obs, *_ = env.step(action[0])
    return np.asarray(out)


def test_save_load_round_trip_analytic_model_and_vecnormalize(tmp_path) -> None:
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0), norm_obs=True, norm_reward=False)
    model = ARS("LinearPolicy", venv, seed=0, zero_policy=False, n_delta=2)
    model.learn(800)  # moves the weights and the observation statistics
    layer = DeMoPolicy.from_agent(model, dynamics="analytic", horizon=5, num_samples=32, seed=7)
    assert layer.obs_normalizer is not None
    path = str(tmp_path / "layer.pt")
    layer.save(path)
    loaded = DeMoPolicy.load(path)
    assert isinstance(loaded.dynamics, PendulumDynamics)
    assert loaded.planner_kwargs == layer.planner_kwargs and loaded.seed_value == 7
    obs = np.random.default_rng(1).uniform(-1, 1, size=(8, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.base_predict(obs), layer.base_predict(obs), atol=1e-6)
    np.testing.assert_allclose(
        _episode_actions(loaded, "Pendulum-v1"), _episode_actions(layer, "Pendulum-v1"), atol=1e-6
    )


def test_save_load_round_trip_ensemble_state_dict(tmp_path) -> None:
    model = _base_model("sac")
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (256, 2)).astype(np.float32)
    act = rng.uniform(LOW, HIGH, (256, 2)).astype(np.float32)
    nxt, rew, _ = point_dynamics(th.as_tensor(obs), th.as_tensor(act))
    ensemble = EnsembleDynamics(2, 2, num_members=2, num_elites=1, hidden_sizes=(16,), deterministic=True, seed=0)
    ensemble.fit(obs, act, nxt.numpy(), rew.numpy(), max_epochs=2)
    layer = DeMoPolicy(model.observation_space, model.action_space, model.policy, ensemble, {"horizon": 2}, seed=1)
    assert layer.uses_terminal_value  # SAC's critic is the terminal value
    path = str(tmp_path / "layer.pt")
    layer.save(path)
    loaded = DeMoPolicy.load(path)
    assert isinstance(loaded.dynamics, EnsembleDynamics) and loaded.dynamics is not ensemble
    for key, value in ensemble.state_dict().items():
        assert th.equal(loaded.dynamics.state_dict()[key], value)
    x = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, deterministic=True)[0], layer.predict(x, deterministic=True)[0])


def test_unpicklable_model_clear_error_and_load_with_dynamics(tmp_path) -> None:
    model = _base_model("td3")
    layer = DeMoPolicy.from_agent(model, dynamics=lambda s, a: point_dynamics(s, a), horizon=2, seed=0)
    path = str(tmp_path / "layer.pt")
    with pytest.raises(ValueError, match="include_dynamics=False"):
        layer.save(path)
    layer.save(path, include_dynamics=False)
    with pytest.raises(ValueError, match="saved without its dynamics model"):
        DeMoPolicy.load(path)
    loaded = DeMoPolicy.load(path, dynamics=point_dynamics)
    x = np.array([[0.3, -0.2]], dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, deterministic=True)[0], layer.predict(x, deterministic=True)[0])


def test_clear_errors_on_bad_input() -> None:
    with pytest.raises(ValueError, match="Box action space"):
        DeMoPolicy(
            spaces.Box(-1, 1, (2,)),
            spaces.Discrete(3),
            th.nn.Linear(2, 1),
            point_dynamics,  # type: ignore[arg-type]
        )
    pendulum_model = ARS("LinearPolicy", "Pendulum-v1", seed=0)
    with pytest.raises(ValueError, match="observations of shape"):
        DeMoPolicy(PointEnv.observation_space, PointEnv.action_space, pendulum_model.policy, point_dynamics)
    with pytest.raises(ValueError, match="action_dim=2"):
        DeMoPolicy(PointEnv.observation_space, PointEnv.action_space, th.nn.Linear(2, 3), point_dynamics)
    with pytest.raises(ValueError, match="must not set"):
        DeMoPolicy(
            PointEnv.observation_space, PointEnv.action_space, th.nn.Linear(2, 2), point_dynamics, {"prior": None}
        )
    with pytest.raises(ValueError, match="has no critic"):
        DeMoPolicy.from_agent(pendulum_model, dynamics="analytic", value_source="critic")
    with pytest.raises(ValueError, match="value_source must be one of"):
        DeMoPolicy.from_agent(pendulum_model, dynamics="analytic", value_source="q")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dynamics must be 'analytic'"):
        DeMoPolicy.from_agent(pendulum_model, dynamics="ensemble")
    with pytest.raises(ValueError, match="no analytic model"):
        DeMoPolicy.from_agent(pendulum_model, dynamics="analytic", env_id="InvertedPendulum-v5")
    with pytest.raises(ValueError, match="observation_dim=3 but the env has 2"):
        DeMoPolicy(PointEnv.observation_space, PointEnv.action_space, th.nn.Linear(2, 2), PendulumDynamics())
