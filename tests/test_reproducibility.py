"""Reproducible planning: evaluation never changes training, predict is a function of its inputs,
a SAC/TD3 checkpoint as the starting point, and NaN/inf from the env named before anything is stored."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_demo import DeMoCallback, DeMoPolicy, DeMoSAC, DeMoTD3, DeMoWrapper
from sb3_demo.algorithms.evaluation import DeMoEvalCallback

DEVICES = ["cpu", *(["cuda"] if th.cuda.is_available() else [])]
PLANNER = dict(horizon=3, num_samples=32, num_iterations=1, num_particles=1)
SMALL_MODEL = dict(num_members=3, num_elites=2, hidden_sizes=(32, 32))
OBS = np.array([[0.5, -0.8, 0.3], [-1.0, 0.0, 0.5]], np.float32)


def _demo(algo: type, device: str = "cpu", **kwargs: Any) -> Any:
    kw: dict[str, Any] = dict(
        planner_kwargs=PLANNER,
        model_kwargs=SMALL_MODEL,
        model_fit_kwargs=dict(max_grad_steps=20),
        model_train_freq=100,
        learning_starts=100,
        batch_size=32,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=3,
        device=device,
    )
    kw.update(kwargs)
    return algo("MlpPolicy", "Pendulum-v1", **kw)


def _params(*modules: Any) -> th.Tensor:
    return th.cat([th.nn.utils.parameters_to_vector(m.parameters()).detach().cpu() for m in modules])


def _eval_callback(kind: str) -> Any:
    if kind == "none":
        return None
    cls = EvalCallback if kind == "eval" else DeMoEvalCallback
    return cls(gym.make("Pendulum-v1"), eval_freq=150, n_eval_episodes=1)


# ---------------------------------------------------------------------- evaluation never changes training


@pytest.mark.parametrize("algo", [DeMoSAC, DeMoTD3])
def test_evaluation_does_not_change_training(algo: type) -> None:
    results = {}
    for kind in ("none", "eval", "demo_eval"):
        model = _demo(algo)
        model.learn(300, callback=_eval_callback(kind))
        assert model.model_fitted
        results[kind] = _params(model.policy, model.dynamics)
    th.testing.assert_close(results["eval"], results["none"], rtol=0, atol=0)
    th.testing.assert_close(results["demo_eval"], results["none"], rtol=0, atol=0)


@pytest.mark.parametrize("eval_env", ["plain", "wrapped"])
def test_stock_sac_with_demo_callback_evaluation_does_not_change_training(eval_env: str) -> None:
    """A wrapped eval env plans through the training model (DeMoCallback attaches its guide)."""
    results = {}
    for kind in ("none", "eval"):
        env = DeMoWrapper(gym.make("Pendulum-v1"), planner_kwargs=PLANNER, model_kwargs=SMALL_MODEL)
        agent = SAC("MlpPolicy", env, learning_starts=100, batch_size=32, policy_kwargs=dict(net_arch=[32, 32]), seed=3)
        demo = DeMoCallback(model_train_freq=100, model_fit_kwargs=dict(max_grad_steps=20))
        callbacks: list[Any] = [demo]
        if kind == "eval":
            evaluated = gym.make("Pendulum-v1")
            if eval_env == "wrapped":
                evaluated = DeMoWrapper(evaluated, planner_kwargs=PLANNER, model_kwargs=SMALL_MODEL)
            callbacks.append(EvalCallback(evaluated, eval_freq=150, n_eval_episodes=1))
        agent.learn(300, callback=callbacks)
        assert demo.dynamics is not None and bool(demo.dynamics.fitted)
        if eval_env == "wrapped" and kind == "eval":
            assert demo.eval_guides and demo.eval_guides[0].num_planned > 0  # the evaluation planned
        results[kind] = _params(agent.policy, demo.dynamics)
    th.testing.assert_close(results["eval"], results["none"], rtol=0, atol=0)


# ---------------------------------------------------------------------- predict is a function of its inputs


@pytest.fixture(scope="module")
def trained_sac() -> Any:
    model = _demo(DeMoSAC)
    model.learn(200)
    assert model.model_fitted
    return model


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_predict_is_a_function_of_its_inputs(device: str) -> None:
    model = _demo(DeMoSAC, device=device, learning_starts=50, model_train_freq=50)
    model.learn(60)
    assert model.model_fitted
    a1, s1 = model.predict(OBS, deterministic=True)
    a2, s2 = model.predict(OBS, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    assert s1 is not None and s2 is not None
    for x, y in zip(s1, s2, strict=True):
        np.testing.assert_array_equal(x, y)
    # the planner ran (the planned action is not the bare actor's)
    model.predict_with_planner = False
    actor, _ = model.predict(OBS, deterministic=True)
    model.predict_with_planner = True
    assert not np.allclose(a1, actor)
    # the warm start travels in the state: the same (obs, state) gives the same action
    b1, _ = model.predict(OBS, state=s1, deterministic=True)
    b2, _ = model.predict(OBS, state=s1, deterministic=True)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(b1, a1)  # the warm start is used
    # an episode start forgets the plan: the same action as from no state at all
    c, _ = model.predict(OBS, state=s1, episode_start=np.ones(2, dtype=bool), deterministic=True)
    np.testing.assert_array_equal(c, a1)


@pytest.mark.parametrize("device", DEVICES)
def test_planner_model_and_streams_on_the_algorithm_device(device: str) -> None:
    model = _demo(DeMoSAC, device=device, learning_starts=50, model_train_freq=50)
    model.learn(70)  # fits the model, then plans, imagines and trains on the device
    assert model.model_fitted and model.replay_buffer.imagined_size() > 0
    expected = th.device(device).type
    dynamics = model.dynamics
    assert model.planner.device.type == expected and model.planner.mean.device.type == expected
    assert model.planner.generator.device.type == expected
    assert dynamics.device.type == dynamics.generator.device.type == dynamics.fit_generator.device.type == expected
    action, state = model.predict(OBS, deterministic=True)
    assert isinstance(action, np.ndarray) and state is not None and all(isinstance(x, np.ndarray) for x in state)


def test_predict_state_shape_and_errors(trained_sac: Any) -> None:
    _, state = trained_sac.predict(OBS, deterministic=True)
    assert isinstance(state, tuple) and len(state) == 2
    mean, std = state
    assert mean.shape == std.shape == (2, PLANNER["horizon"], 1)
    with pytest.raises(ValueError, match="state"):
        trained_sac.predict(OBS, state=(mean[:1], std[:1]), deterministic=True)
    # a single observation gives a single action and a state for one env
    action, single = trained_sac.predict(OBS[0], deterministic=True)
    assert action.shape == (1,) and single is not None and single[0].shape == (1, PLANNER["horizon"], 1)


def test_stochastic_predict_does_not_move_training(trained_sac: Any) -> None:
    """A stochastic predict draws from the predict stream, never from the rollout planner's."""
    rollout = trained_sac.planner.generator.get_state()
    trained_sac.predict(OBS, deterministic=False)
    assert th.equal(trained_sac.planner.generator.get_state(), rollout)


@pytest.mark.parametrize("algo", [DeMoSAC, DeMoTD3])
def test_save_load_same_planned_actions(algo: type, tmp_path: Any) -> None:
    model = _demo(algo, learning_starts=50, model_train_freq=50)
    model.learn(60)
    assert model.model_fitted
    before, state = model.predict(OBS, deterministic=True)
    again, _ = model.predict(OBS, state=state, deterministic=True)
    model.save(tmp_path / "m.zip")
    loaded = algo.load(tmp_path / "m.zip")
    assert loaded.model_fitted and loaded.predict_with_planner
    np.testing.assert_array_equal(loaded.predict(OBS, deterministic=True)[0], before)
    np.testing.assert_array_equal(loaded.predict(OBS, state=state, deterministic=True)[0], again)


def test_evaluate_policy_twice_same_returns(trained_sac: Any) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=2)
    returns = []
    for _ in range(2):
        env.seed(5)
        episode_returns, _ = evaluate_policy(trained_sac, env, n_eval_episodes=2, return_episode_rewards=True)
        returns.append(episode_returns)
    assert returns[0] == returns[1]


@pytest.fixture(scope="module")
def small_sac() -> Any:
    agent = SAC("MlpPolicy", "Pendulum-v1", learning_starts=20, policy_kwargs=dict(net_arch=[32, 32]), seed=1)
    agent.learn(40)
    return agent


def test_demo_policy_predict_is_a_function_of_its_inputs(small_sac: Any) -> None:
    layer = DeMoPolicy.from_agent(small_sac, dynamics="analytic", horizon=3, num_samples=32, seed=0)
    a1, s1 = layer.predict(OBS, deterministic=True)
    a2, _ = layer.predict(OBS, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    assert s1 is not None
    b1, _ = layer.predict(OBS, state=s1, deterministic=True)
    b2, _ = layer.predict(OBS, state=s1, deterministic=True)
    np.testing.assert_array_equal(b1, b2)
    env = make_vec_env("Pendulum-v1", n_envs=1)
    returns = []
    for _ in range(2):
        env.seed(5)
        returns.append(evaluate_policy(layer, env, n_eval_episodes=1, return_episode_rewards=True)[0])
    assert returns[0] == returns[1]


def test_wrapper_evaluation_episodes_repeat(small_sac: Any) -> None:
    """A deterministic DeMoWrapper around an attached agent: the same env seed, the same episode."""
    env = DeMoWrapper(
        gym.make("Pendulum-v1"), agent=small_sac, model="analytic", planner_kwargs=PLANNER, deterministic=True
    )
    episodes = []
    for _ in range(2):
        obs, _ = env.reset(seed=4)
        actions = []
        for _ in range(20):
            action, _ = small_sac.predict(obs, deterministic=True)
            obs, _, _, _, info = env.step(action)
            actions.append(info["executed_action"])
        episodes.append(np.asarray(actions))
    np.testing.assert_array_equal(episodes[0], episodes[1])


# ---------------------------------------------------------------------- starting from a SAC/TD3 checkpoint


@pytest.mark.parametrize(("algo", "base", "method"), [(DeMoSAC, SAC, "from_sac"), (DeMoTD3, TD3, "from_td3")])
def test_from_a_plain_checkpoint(algo: type, base: type, method: str, tmp_path: Any) -> None:
    plain = base("MlpPolicy", "Pendulum-v1", learning_starts=20, policy_kwargs=dict(net_arch=[32, 32]), seed=1)
    plain.learn(40)
    path = tmp_path / "plain.zip"
    plain.save(path)
    with pytest.raises(ValueError, match=method):
        algo.load(path)
    for source in (path, plain):
        demo = getattr(algo, method)(source, env="Pendulum-v1", model="analytic", planner_kwargs=PLANNER)
        assert isinstance(demo, algo) and demo.planner is not None
        demo.predict_with_planner = False
        np.testing.assert_allclose(
            demo.predict(OBS, deterministic=True)[0], plain.predict(OBS, deterministic=True)[0], atol=1e-6
        )
        th.testing.assert_close(_params(demo.critic), _params(plain.critic))
    demo.learn(30)  # trains on from there


# ---------------------------------------------------------------------- NaN/inf from the env


class BadAfter(gym.Wrapper):
    """Returns a NaN observation (``what="obs"``) or an inf reward (``what="reward"``) at step ``at``."""

    def __init__(self, env: gym.Env, at: int, what: str) -> None:
        super().__init__(env)
        self.at, self.what, self.steps = at, what, 0

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if self.steps == self.at:
            if self.what == "obs":
                obs = np.full_like(obs, np.nan)
            else:
                reward = np.inf
        return obs, reward, terminated, truncated, info


def _bad_venv(at: int, what: str) -> Any:
    return DummyVecEnv([lambda: gym.make("Pendulum-v1"), lambda: BadAfter(gym.make("Pendulum-v1"), at, what)])


@pytest.mark.parametrize("what", ["obs", "reward"])
def test_nan_from_the_env_is_named_and_nothing_is_stored(what: str) -> None:
    model = DeMoSAC(
        "MlpPolicy", _bad_venv(30, what), model="analytic", planner_kwargs=PLANNER, learning_starts=10, seed=0
    )
    with pytest.raises(ValueError, match=r"env 1.*step 30.*VecCheckNan"):
        model.learn(100)
    assert model.replay_buffer.size() == 29  # the 29 good steps of both envs, nothing of the bad one
    assert np.isfinite(model.replay_buffer.observations[:29]).all()


@pytest.mark.parametrize("what", ["obs", "reward"])
def test_nan_from_the_env_with_stock_sac_and_demo_callback(what: str) -> None:
    env = DeMoWrapper(BadAfter(gym.make("Pendulum-v1"), 30, what), model="analytic", planner_kwargs=PLANNER)
    agent = SAC("MlpPolicy", env, learning_starts=10, seed=0)
    with pytest.raises(ValueError, match=r"env 0.*step 30.*VecCheckNan"):
        agent.learn(100, callback=DeMoCallback())
    assert agent.replay_buffer.size() == 29
    assert np.isfinite(agent.replay_buffer.rewards[:29]).all()
