"""DeMoWrapper / DeMoVecEnvWrapper + DeMoCallback with stock SB3 and sb3_contrib algorithms."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import TQC, CrossQ
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.callbacks import ConvertCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from sb3_demo import AugmentedReplayBuffer, DeMoCallback, DeMoVecEnvWrapper, DeMoWrapper, PendulumDynamics

SMALL_PLANNER = dict(horizon=4, num_samples=24, num_particles=1, num_iterations=2)
SMALL_NET = dict(net_arch=[32, 32])


class ActionRecorder(gym.Wrapper):
    """Reports the action the env really receives in ``info["received_action"]`` (works in subprocesses)."""

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = super().step(action)
        info["received_action"] = np.array(action, dtype=np.float32)
        return obs, reward, terminated, truncated, info


class ReceivedActions:
    """Collects ``info["received_action"]`` of every env step from a callback's locals."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def __call__(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        self.rows.append(np.stack([info["received_action"] for info in locals_["infos"]]))
        return True


class RecordingPendulum(PendulumDynamics):
    """The analytic pendulum, remembering every state batch the planner rolled through it."""

    def __init__(self) -> None:
        super().__init__()
        self.states_seen: list[th.Tensor] = []

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        if states.abs().sum() > 0:  # not the zero-state shape probe made when the model is checked
            self.states_seen.append(states.detach().clone())
        return super().__call__(states, actions)


def _pendulum_venv(n_envs: int = 1, vec_env_cls: Any = DummyVecEnv, seed: int = 0) -> Any:
    return make_vec_env("Pendulum-v1", n_envs=n_envs, seed=seed, wrapper_class=ActionRecorder, vec_env_cls=vec_env_cls)


def _agent(algo: type, env: Any, **kwargs: Any) -> Any:
    kw: dict[str, Any] = dict(learning_starts=40, batch_size=32, train_freq=4, policy_kwargs=dict(SMALL_NET), seed=0)
    kw.update(kwargs)
    return algo("MlpPolicy", env, **kw)


def _learn_and_check_stored(agent: Any, steps: int, n_envs: int) -> tuple[np.ndarray, np.ndarray]:
    """Train; return (actions the envs received, actions the buffer stored in env units), both (steps, n_envs, A)."""
    recorder = ReceivedActions()
    agent.learn(steps, callback=[DeMoCallback(), ConvertCallback(recorder)])
    received = np.stack(recorder.rows)
    n = received.shape[0]
    stored = agent.policy.unscale_action(agent.replay_buffer.actions[:n])
    return received, stored


# --------------------------------------------------------------------------- stored action


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_buffer_stores_the_executed_action(algo: type) -> None:
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic", planner_kwargs=SMALL_PLANNER)
    agent = _agent(algo, venv)
    received, stored = _learn_and_check_stored(agent, 120, 1)
    np.testing.assert_allclose(stored, received, atol=1e-5)
    assert venv.guide.num_steps == 120
    assert venv.guide.num_planned == 120 - 40  # the planner acts from learning_starts on, every step
    # the planner's actions differ from what the actor proposed, so the overwrite really mattered
    assert agent.logger.name_to_value["planner/iterations"] == SMALL_PLANNER["num_iterations"]


def test_gym_wrapper_single_env_stores_executed_action() -> None:
    env = DeMoWrapper(ActionRecorder(gym.make("Pendulum-v1")), model="analytic", planner_kwargs=SMALL_PLANNER)
    agent = _agent(SAC, env)
    received, stored = _learn_and_check_stored(agent, 100, 1)
    np.testing.assert_allclose(stored, received, atol=1e-5)
    assert env.guide.num_planned == 60


def test_without_the_overwrite_the_buffer_would_hold_other_actions() -> None:
    """Control for the test above: the planner's actions are not the agent's own proposals."""
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic", planner_kwargs=SMALL_PLANNER)
    agent = _agent(SAC, venv)
    proposed: list[np.ndarray] = []
    received: list[np.ndarray] = []

    def grab(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        proposed.append(locals_["actions"].copy())
        received.append(np.stack([i["received_action"] for i in locals_["infos"]]))
        return True

    agent.learn(80, callback=[DeMoCallback(), ConvertCallback(grab)])
    after = slice(40, None)
    gap = np.abs(np.stack(proposed)[after] - np.stack(received)[after])
    assert gap.mean() > 0.05


# --------------------------------------------------------------------------- n_envs, VecNormalize


def test_two_envs_subproc_vec_env() -> None:
    venv = DeMoVecEnvWrapper(
        _pendulum_venv(n_envs=2, vec_env_cls=SubprocVecEnv), model="analytic", planner_kwargs=SMALL_PLANNER
    )
    try:
        agent = _agent(SAC, venv)
        received, stored = _learn_and_check_stored(agent, 100, 2)
        assert received.shape == (52, 2, 1)  # 100 steps in rollouts of train_freq=4 steps x 2 envs: 104
        np.testing.assert_allclose(stored, received, atol=1e-5)
        assert venv.guide.num_planned == 104 - 40  # both envs guided, counted per env
        assert venv.planner.mean.shape[0] == 2  # one batched plan for both envs
    finally:
        venv.close()


def test_gym_wrapper_inside_subproc_vec_env_is_refused() -> None:
    venv = make_vec_env(
        "Pendulum-v1",
        n_envs=2,
        wrapper_class=DeMoWrapper,
        wrapper_kwargs=dict(model="analytic"),
        vec_env_cls=SubprocVecEnv,
    )
    try:
        agent = _agent(SAC, venv)
        with pytest.raises(ValueError, match="DeMoVecEnvWrapper"):
            agent.learn(10, callback=DeMoCallback())
    finally:
        venv.close()


def test_gym_wrappers_in_dummy_vec_env_two_envs() -> None:
    venv = make_vec_env(
        "Pendulum-v1",
        n_envs=2,
        seed=0,
        wrapper_class=lambda e: DeMoWrapper(ActionRecorder(e), model="analytic", planner_kwargs=SMALL_PLANNER),
    )
    agent = _agent(SAC, venv)
    received, stored = _learn_and_check_stored(agent, 80, 2)
    np.testing.assert_allclose(stored, received, atol=1e-5)
    planned = [e.guide.num_planned for e in venv.envs]  # type: ignore[attr-defined]
    assert planned == [20, 20]


def test_vec_normalize_planner_sees_original_observations() -> None:
    dynamics = RecordingPendulum()
    venv = VecNormalize(DeMoVecEnvWrapper(_pendulum_venv(), model=dynamics, planner_kwargs=SMALL_PLANNER))
    agent = _agent(SAC, venv)
    received, stored = _learn_and_check_stored(agent, 100, 1)
    np.testing.assert_allclose(stored, received, atol=1e-5)
    # the planner's states are original pendulum observations: (cos, sin) on the unit circle
    starts = th.cat(dynamics.states_seen)
    assert starts.shape[0] > 60 * SMALL_PLANNER["num_samples"]
    np.testing.assert_allclose((starts[:, 0] ** 2 + starts[:, 1] ** 2).numpy(), 1.0, atol=1e-5)
    # ... while the agent's networks get normalised ones (not on the unit circle)
    norm = venv.normalize_obs(starts.numpy())
    assert np.abs(norm[:, 0] ** 2 + norm[:, 1] ** 2 - 1.0).max() > 0.1
    # the terminal value is the critic of the normalised observation
    planner = venv.venv.planner  # type: ignore[attr-defined]
    obs = starts[:5]
    with th.no_grad():
        norm_obs = th.as_tensor(venv.normalize_obs(obs.numpy()))
        q1, q2 = agent.critic(norm_obs, agent.policy._predict(norm_obs, deterministic=True))
        expected = th.min(q1, q2).reshape(-1)
        np.testing.assert_allclose(planner.terminal_value(obs).numpy(), expected.numpy(), atol=1e-5)
        raw_q1, raw_q2 = agent.critic(obs, agent.policy._predict(obs, deterministic=True))
    assert (th.min(raw_q1, raw_q2).reshape(-1) - expected).abs().max() > 1e-4


def test_vec_normalize_in_the_wrong_place_is_refused() -> None:
    with pytest.raises(ValueError, match="inside VecNormalize"):
        DeMoVecEnvWrapper(VecNormalize(_pendulum_venv()), model="analytic")


# --------------------------------------------------------------------------- other algorithms


@pytest.mark.parametrize("algo", [TQC, CrossQ])
def test_sb3_contrib_algorithms(algo: type) -> None:
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic", planner_kwargs=SMALL_PLANNER)
    kwargs: dict[str, Any] = dict(policy_kwargs=dict(net_arch=[32, 32]))
    if algo is TQC:
        kwargs["policy_kwargs"] = dict(net_arch=[32, 32], n_quantiles=5)
    agent = _agent(algo, venv, **kwargs)
    received, stored = _learn_and_check_stored(agent, 90, 1)
    np.testing.assert_allclose(stored, received, atol=1e-5)
    assert venv.guide.num_planned == 92 - 40  # 90 steps in rollouts of 4 steps: 92
    returns = agent.logger.name_to_value["planner/expected_return"]
    assert np.isfinite(returns)


# --------------------------------------------------------------------------- guide_prob, imagination, model


def test_guide_prob_zero_runs_the_agents_actions_and_half_guides_about_half() -> None:
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic", planner_kwargs=SMALL_PLANNER, guide_prob=0.0)
    agent = _agent(SAC, venv)
    received, stored = _learn_and_check_stored(agent, 80, 1)
    assert venv.guide.num_planned == 0
    np.testing.assert_allclose(stored, received, atol=1e-5)

    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic", planner_kwargs=SMALL_PLANNER, guide_prob=0.5)
    agent = _agent(SAC, venv, learning_starts=0)
    received, stored = _learn_and_check_stored(agent, 120, 1)
    np.testing.assert_allclose(stored, received, atol=1e-5)
    assert 40 <= venv.guide.num_planned <= 80  # Binomial(120, 0.5): mean 60, sd 5.5


def test_linear_guide_prob_schedule_follows_progress() -> None:
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic", planner_kwargs=SMALL_PLANNER, guide_prob="lin_1.0")
    agent = _agent(SAC, venv, learning_starts=0, train_freq=4)
    flags: list[bool] = []

    def grab(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        flags.append(bool(locals_["infos"][0]["demo_guided"]))
        return True

    agent.learn(150, callback=[DeMoCallback(), ConvertCallback(grab)])
    first, last = np.mean(flags[:50]), np.mean(flags[-50:])  # p about 0.83 and 0.17
    assert first > 0.6 and last < 0.4


def test_imagined_transitions_go_to_the_augmented_buffer() -> None:
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic", planner_kwargs=SMALL_PLANNER)
    agent = _agent(
        SAC, venv, replay_buffer_class=AugmentedReplayBuffer, replay_buffer_kwargs=dict(imagined_fraction=0.2)
    )
    agent.learn(72, callback=DeMoCallback())
    buffer = agent.replay_buffer
    # one plan mean of horizon 4 rolled through the model per guided step (Pendulum never terminates)
    assert buffer.imagined_size() == (72 - 40) * SMALL_PLANNER["horizon"]
    # they are real model transitions: next obs = analytic step of (obs, action)
    n = buffer.imagined_size()
    obs = th.as_tensor(buffer.imagined_observations[:n])
    actions = th.as_tensor(agent.policy.unscale_action(buffer.imagined_actions[:n]))
    next_obs, rewards, _ = PendulumDynamics()(obs, actions)
    np.testing.assert_allclose(next_obs.numpy(), buffer.imagined_next_observations[:n], atol=1e-5)
    np.testing.assert_allclose(rewards.numpy(), buffer.imagined_rewards[:n], atol=1e-4)


def test_learned_model_is_fitted_on_schedule_before_the_planner_acts() -> None:
    venv = DeMoVecEnvWrapper(
        _pendulum_venv(),
        model="ensemble",
        model_kwargs=dict(num_members=2, num_elites=1, hidden_sizes=(16, 16)),
        planner_kwargs=SMALL_PLANNER,
    )
    agent = _agent(SAC, venv, learning_starts=40)
    callback = DeMoCallback(model_train_freq=30, model_fit_kwargs=dict(max_epochs=2))
    received, stored = _learn_and_check_stored_with(agent, 112, callback)
    np.testing.assert_allclose(stored, received, atol=1e-5)
    assert callback.num_model_fits == 3  # at 40, 70, 100
    assert venv.guide.num_planned == 112 - 40  # the planner acts once the model is fitted
    assert venv.dynamics is callback.dynamics


def _learn_and_check_stored_with(agent: Any, steps: int, callback: DeMoCallback) -> tuple[np.ndarray, np.ndarray]:
    recorder = ReceivedActions()
    agent.learn(steps, callback=[callback, ConvertCallback(recorder)])
    received = np.stack(recorder.rows)
    stored = agent.policy.unscale_action(agent.replay_buffer.actions[: received.shape[0]])
    return received, stored


def test_second_learn_keeps_the_fitted_model_and_the_eval_env() -> None:
    kwargs: dict[str, Any] = dict(
        model="ensemble",
        model_kwargs=dict(num_members=2, num_elites=1, hidden_sizes=(16, 16)),
        planner_kwargs=SMALL_PLANNER,
    )
    venv = DeMoVecEnvWrapper(_pendulum_venv(), **kwargs)
    eval_env = DeMoWrapper(gym.make("Pendulum-v1"), **kwargs)  # as RL Zoo's evaluation env: same wrapper
    agent = _agent(SAC, venv, learning_starts=40)
    callback = DeMoCallback(model_train_freq=30, model_fit_kwargs=dict(max_epochs=1))
    agent.learn(60, callback=callback)
    dynamics = venv.dynamics
    assert callback.num_model_fits == 1 and venv.guide.num_planned == 20
    # the evaluation env shares the training model and plans deterministically, every step
    assert eval_env.guide.evaluation and eval_env.guide.active and eval_env.dynamics is dynamics
    obs, _ = eval_env.reset(seed=0)
    _, _, _, _, info = eval_env.step(agent.predict(obs)[0])
    assert info["demo_guided"]
    agent.learn(40, callback=callback, reset_num_timesteps=False)
    assert venv.dynamics is dynamics and callback.num_model_fits == 3  # at 40, 70 and 100
    assert venv.guide.num_planned == 60  # the planner acted from the first step of the second learn()
    assert eval_env.guide.active and eval_env.guide.agent is agent


# --------------------------------------------------------------------------- evaluation without the callback


def test_wrapper_alone_at_evaluation_time_plans_better_than_the_untrained_actor() -> None:
    """No callback: attach a (here untrained) agent; the analytic planner balances the pendulum upright."""
    agent = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(SMALL_NET), seed=0)

    def upright_episode(env: gym.Env, act: Any) -> float:
        env.reset(seed=1)
        env.unwrapped.state = np.array([0.3, 0.0])  # type: ignore[attr-defined]
        obs = np.array([np.cos(0.3), np.sin(0.3), 0.0], np.float32)
        if isinstance(env, DeMoWrapper):
            env._obs = obs
        total = 0.0
        for _ in range(60):
            obs, reward, *_ = env.step(act(obs))
            total += float(reward)
        return total

    bare = upright_episode(gym.make("Pendulum-v1"), lambda o: agent.predict(o, deterministic=True)[0])
    wrapper = DeMoWrapper(
        gym.make("Pendulum-v1"),
        agent=agent,
        model="analytic",
        planner_kwargs=dict(horizon=10, num_samples=64, num_particles=1, num_iterations=3),
        deterministic=True,
        use_terminal_value=False,
    )
    guided = upright_episode(wrapper, lambda o: agent.predict(o, deterministic=True)[0])
    assert guided > -15.0  # held near the top
    assert bare < guided - 20.0


def test_attach_and_detach() -> None:
    agent = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(SMALL_NET), seed=0)
    env = DeMoWrapper(gym.make("Pendulum-v1"), model="analytic", planner_kwargs=SMALL_PLANNER)
    obs, _ = env.reset(seed=0)
    with pytest.raises(RuntimeError, match=r"DeMoCallback\(\)"):
        env.step(agent.predict(obs)[0])
    env.attach(agent)
    _, _, _, _, info = env.step(agent.predict(obs)[0])
    assert info["demo_guided"] is True
    env.detach()
    with pytest.raises(RuntimeError, match="attach"):
        env.step(agent.predict(obs)[0])
    passthrough = DeMoWrapper(gym.make("Pendulum-v1"), model="analytic", on_unattached="passthrough")
    passthrough.reset(seed=0)
    _, _, _, _, info = passthrough.step(np.array([0.5], np.float32))
    assert info["demo_guided"] is False
    np.testing.assert_allclose(info["executed_action"], [0.5])


def test_terminal_value_waits_for_the_agents_critic_warm_up() -> None:
    agent = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(SMALL_NET), seed=0)
    env = DeMoWrapper(gym.make("Pendulum-v1"), agent=agent, model="analytic", terminal_value_starts=10)
    obs = th.tensor([[0.0, 1.0, 2.0]])
    assert th.equal(env.planner.terminal_value(obs), th.zeros(1))
    agent._n_updates = 10
    assert not th.equal(env.planner.terminal_value(obs), th.zeros(1))


# --------------------------------------------------------------------------- bad input


def test_stepping_without_the_callback_says_what_to_do() -> None:
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic")
    agent = _agent(SAC, venv)
    with pytest.raises(RuntimeError, match=r"DeMoCallback\(\)"):
        agent.learn(5)


def test_callback_without_a_wrapper_says_what_to_do() -> None:
    agent = _agent(SAC, _pendulum_venv())
    with pytest.raises(ValueError, match="DeMoVecEnvWrapper"):
        agent.learn(5, callback=DeMoCallback())


def test_non_box_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="Box action space"):
        DeMoWrapper(gym.make("CartPole-v1"), model="analytic")
    with pytest.raises(ValueError, match="Box action space"):
        DeMoVecEnvWrapper(make_vec_env("CartPole-v1"), model="analytic")


def test_algorithm_without_critic_is_refused() -> None:
    venv = DeMoVecEnvWrapper(_pendulum_venv(), model="analytic")
    agent = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, policy_kwargs=dict(SMALL_NET))
    with pytest.raises(ValueError, match="off-policy actor-critic"):
        agent.learn(16, callback=DeMoCallback())
    env = DeMoWrapper(gym.make("Pendulum-v1"), model="analytic")
    with pytest.raises(ValueError, match="no Q-critic"):
        env.attach(agent)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(guide_prob=1.5), "guide_prob"),
        (dict(guide_prob="cos_1"), "lin_"),
        (dict(guide_prob="lin_2"), "p in"),
        (dict(model="mujoco"), "DeMoSAC"),
        (dict(model="nope"), "model must be"),
        (dict(critic_reduce="max"), "critic_reduce"),
        (dict(on_unattached="ignore"), "on_unattached"),
        (dict(terminal_value_starts=-5), "terminal_value_starts"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeMoWrapper(gym.make("Pendulum-v1"), **kwargs)


def test_bad_callback_settings() -> None:
    with pytest.raises(ValueError, match="model_train_freq"):
        DeMoCallback(model_train_freq=0)
    with pytest.raises(ValueError, match="planner_starts"):
        DeMoCallback(planner_starts="later")


def test_mismatched_agent_spaces_are_refused() -> None:
    agent = SAC("MlpPolicy", "MountainCarContinuous-v0", policy_kwargs=dict(SMALL_NET))
    env = DeMoWrapper(gym.make("Pendulum-v1"), model="analytic")
    with pytest.raises(ValueError, match="action space"):
        env.attach(agent)
    env = DeMoWrapper(gym.make("MountainCarContinuous-v0"), model="analytic")
    agent2 = SAC("MlpPolicy", gym.make("Pendulum-v1"), policy_kwargs=dict(SMALL_NET))
    assert isinstance(agent2.action_space, spaces.Box)
    with pytest.raises(ValueError, match="space"):
        env.attach(agent2)
