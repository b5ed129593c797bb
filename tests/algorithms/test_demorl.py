"""DeMoSAC and DeMoTD3: planned rollouts, stored actions, augmentation, save/load, n_envs, bad input."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_demo import AugmentedReplayBuffer, DeMoSAC, DeMoTD3, PendulumDynamics
from sb3_demo.dynamics import MountainCarContinuousDynamics

ALGOS = [DeMoSAC, DeMoTD3]
SMALL_PLANNER = dict(horizon=5, num_samples=32, num_particles=1, num_iterations=2)


class ActionRecorder(gym.Wrapper):
    """Records the actions the env really receives."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def step(self, action: Any) -> Any:
        self.actions.append(np.array(action, dtype=np.float32))
        return super().step(action)


def _small(algo: type, env: Any, **kwargs: Any) -> Any:
    kw: dict[str, Any] = dict(
        model="analytic",
        planner_kwargs=SMALL_PLANNER,
        learning_starts=50,
        batch_size=64,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
        device="auto",
    )
    kw.update(kwargs)
    return algo("MlpPolicy", env, **kw)


@pytest.mark.parametrize("algo", ALGOS)
def test_stored_action_equals_executed_action(algo: type) -> None:
    env = ActionRecorder(gym.make("Pendulum-v1"))
    model = _small(algo, env)
    model.learn(120)
    assert model.planner_active()
    executed = np.stack(env.actions)  # (120, 1) env units
    stored = model.replay_buffer.actions[:120, 0]  # normalised
    np.testing.assert_allclose(model.policy.unscale_action(stored), executed, atol=1e-6)
    # planned steps really came from the planner: the logger saw it
    assert model.logger.name_to_value["planner/iterations"] == SMALL_PLANNER["num_iterations"]


@pytest.mark.parametrize("algo", ALGOS)
def test_save_load_same_deterministic_actions_and_continue(algo: type, tmp_path: Any) -> None:
    env = gym.make("Pendulum-v1")
    model = _small(algo, env)
    model.learn(100)
    obs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.5], [0.0, 1.0, -1.0]], np.float32)
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = algo.load(path, env=gym.make("Pendulum-v1"))
    a1, _ = model.predict(obs, deterministic=True)
    a2, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    assert loaded.planner_kwargs == model.planner_kwargs
    assert loaded.planner is not None and loaded.planner.horizon == SMALL_PLANNER["horizon"]
    # the bare actor is the same too
    loaded.predict_with_planner = model.predict_with_planner = False
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(60, reset_num_timesteps=False)
    assert loaded.num_timesteps == 160


def test_mujoco_simulator_model_plans_from_the_physics_state() -> None:
    env = ActionRecorder(gym.make("InvertedPendulum-v5"))
    model = _small(DeMoSAC, env, model="mujoco", learning_starts=20)
    model.learn(60, log_interval=None)  # no dump at an episode's end clears the logged planner values
    assert model.planner is not None and model.planner.dtype == th.float64
    assert model.logger.name_to_value["planner/iterations"] == SMALL_PLANNER["num_iterations"]
    stored = model.policy.unscale_action(model.replay_buffer.actions[:60, 0])
    np.testing.assert_allclose(stored, np.stack(env.actions), atol=1e-5)
    # imagined transitions are observations (4-D), not physics states
    assert model.replay_buffer.imagined_size() > 0
    # predict has no physics state to plan from: the bare actor acts, and the user is told once
    obs, _ = env.reset(seed=1)
    with pytest.warns(UserWarning, match="bare actor"):
        action, _ = model.predict(obs, deterministic=True)
    actor_action, _ = model.policy.predict(obs, deterministic=True)
    np.testing.assert_allclose(action, actor_action)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(obs, deterministic=True)


def test_imagined_transitions_reach_the_buffer_and_batches() -> None:
    model = _small(DeMoSAC, gym.make("Pendulum-v1"), replay_buffer_kwargs=dict(imagined_fraction=0.25))
    model.learn(100)
    buf = model.replay_buffer
    assert isinstance(buf, AugmentedReplayBuffer)
    # 50 planned steps x horizon 5 imagined transitions each
    assert buf.imagined_size() == 50 * SMALL_PLANNER["horizon"]
    # imagined transitions agree with the analytic model they came from
    n = buf.imagined_size()
    nxt, rew, _ = PendulumDynamics()(
        th.as_tensor(buf.imagined_observations[:n]), th.as_tensor(2.0 * buf.imagined_actions[:n])
    )
    np.testing.assert_allclose(nxt.numpy(), buf.imagined_next_observations[:n], atol=1e-5)
    np.testing.assert_allclose(rew.numpy(), buf.imagined_rewards[:n], atol=1e-4)
    assert buf.num_imagined_in_batch(64) == 16


@pytest.mark.parametrize("algo", ALGOS)
def test_two_envs(algo: type) -> None:
    venv = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = _small(algo, venv)
    model.learn(200)
    assert model.planner is not None and model.planner.mean is not None
    assert model.planner.mean.shape[0] == 2
    assert model.replay_buffer.pos == 100 and np.abs(model.replay_buffer.actions[:100]).sum(axis=(0, 2)).all()
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert actions.shape == (2, 1) and np.all(np.abs(actions) <= 2.0)


def test_planner_respects_asymmetric_bounds() -> None:
    env = gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), min_action=np.array([0.0]), max_action=np.array([2.0]))
    model = _small(DeMoSAC, ActionRecorder(env), model=PendulumDynamics_in_0_2())
    model.learn(100)
    executed = np.stack(model.env.envs[0].env.actions)
    assert executed.min() >= 0.0 and executed.max() <= 2.0


class PendulumDynamics_in_0_2(PendulumDynamics):
    """Pendulum driven through an action range [0, 2] mapped onto the torque range [-2, 2]."""

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        return super().__call__(states, 2.0 * actions - 2.0)


def test_learns_pendulum_with_the_analytic_model() -> None:
    """A short horizon cannot swing up alone: the critic's terminal value must be learned."""
    th.manual_seed(0)
    env = gym.make("Pendulum-v1")
    model = DeMoSAC(
        "MlpPolicy",
        env,
        model="analytic",
        planner_kwargs=dict(horizon=5, num_samples=50, num_particles=1, num_iterations=2, gamma_std=1.0),
        learning_starts=200,
        learning_rate=1e-3,
        seed=0,
    )
    eval_env = gym.make("Pendulum-v1")
    eval_env.reset(seed=0)  # seeded starts: an unseeded 5-episode evaluation once drew -429 from hard starts
    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=3)
    model.learn(2000)
    eval_env.reset(seed=1)
    after, _ = evaluate_policy(model, eval_env, n_eval_episodes=10)
    assert before < -600
    assert after >= -400  # -171 on these starts (-156 to -233 on 4 sets of 10 starts)


# ---------------------------------------------------------------------------- bad input


def test_discrete_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="Box action space"):
        DeMoSAC("MlpPolicy", gym.make("CartPole-v1"), model="ensemble")


def test_dict_observations_are_refused_with_advice() -> None:
    class DictObs(gym.ObservationWrapper):
        def __init__(self, env: gym.Env) -> None:
            super().__init__(env)
            self.observation_space = gym.spaces.Dict({"x": env.observation_space})

        def observation(self, observation: Any) -> Any:
            return {"x": observation}

    with pytest.raises(ValueError, match="FlattenObservation"):
        DeMoSAC("MultiInputPolicy", DictObs(gym.make("Pendulum-v1")), model=PendulumDynamics())


def test_model_with_wrong_dimensions_is_named() -> None:
    with pytest.raises(ValueError, match="observation_dim=2 but the env has 3"):
        DeMoSAC("MlpPolicy", gym.make("Pendulum-v1"), model=MountainCarContinuousDynamics())


def test_analytic_model_for_unknown_env() -> None:
    with pytest.raises(ValueError, match="no analytic model"):
        DeMoSAC("MlpPolicy", gym.make("InvertedPendulum-v5"), model="analytic")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model="bogus"), "model must be"),
        (dict(critic_reduce="max"), "critic_reduce"),
        (dict(model_train_freq=0), "model_train_freq"),
        (dict(planner_starts=-1), "planner_starts"),
        (dict(planner_kwargs=dict(horizon=0)), "horizon"),
        (dict(planner_kwargs=dict(gamma_std=1.5)), "gamma_std"),
        (dict(planner_kwargs=dict(horizonn=3)), "planner_kwargs"),
        (dict(terminal_value_starts=-1), "terminal_value_starts"),
        (dict(terminal_value_starts=True), "terminal_value_starts"),
        (dict(exploration="noise"), "exploration must be"),
        (dict(exploration="actor", use_sde=True), "gSDE"),
        (dict(imitation_coef=-1.0), "imitation_coef"),
        (dict(imitation_coef="1"), "imitation_coef"),
        (dict(policy_delay=0), "policy_delay"),
        (dict(policy_delay=1.5), "policy_delay"),
        (dict(policy_delay=True), "policy_delay"),
    ],
)
def test_invalid_settings(kwargs: dict, match: str) -> None:
    kw: dict[str, Any] = dict(model="analytic")
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DeMoSAC("MlpPolicy", gym.make("Pendulum-v1"), **kw)


@pytest.mark.parametrize("algo", ALGOS)
def test_terminal_value_waits_for_the_critic_warm_up(algo: type, tmp_path: Any) -> None:
    model = _small(algo, gym.make("Pendulum-v1"), terminal_value_starts=100)
    obs = th.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 4.0]])
    value = model.planner.terminal_value
    assert model._n_updates == 0
    assert th.equal(value(obs), th.zeros(2)), "the young critic must not enter the planner's returns"
    model._n_updates = 100
    warm = value(obs)
    q = model.policy.critic(obs, model.policy._predict(obs, deterministic=True))
    np.testing.assert_allclose(warm.numpy(), th.min(*q).reshape(-1).detach().numpy(), rtol=1e-5)
    assert not th.equal(warm, th.zeros(2))
    model.save(tmp_path / "m.zip")  # the setting and the update count survive a save
    loaded = algo.load(tmp_path / "m.zip")
    assert loaded.terminal_value_starts == 100
    np.testing.assert_allclose(loaded.planner.terminal_value(obs).numpy(), warm.numpy(), rtol=1e-5)


def test_defaults_plan_with_2_iterations_and_cap_model_fits() -> None:
    model = DeMoSAC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        model_kwargs=dict(hidden_sizes=(16,), num_members=2, num_elites=1),
        model_fit_kwargs=dict(patience=10_000),  # early stopping never ends these fits: only a cap does
        seed=0,
    )
    assert model.planner.num_iterations == 2 and model.planner.num_particles == 4 and model.planner.horizon == 3
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(600, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(600, 1)).astype(np.float32)
    for i in range(600):
        model.replay_buffer.add(obs[i : i + 1], 0.9 * obs[i : i + 1], act[i : i + 1], np.zeros(1), np.zeros(1), [{}])
    assert model.fit_model()["grad_steps"] == 500, "the default cap (DEFAULT_MODEL_FIT_KWARGS) must end the fit"
    model.model_fit_kwargs.update(max_grad_steps=None, max_epochs=260)  # None lifts the cap: 2 steps per epoch
    assert model.fit_model()["grad_steps"] > 500


def test_hardware_env_refuses_a_simulator_model() -> None:
    import sb3_demo.envs  # noqa: F401  (registers the leg)
    from sb3_demo.common.hardware import HardwareModelError

    env = gym.make("sb3_demo/Leg2RSim-v0")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]

    class SimulatorLike:
        """Pretends to read the plant's state: what a planner must never do on hardware."""

        def state_from_env(self, env: Any) -> th.Tensor:
            raise AssertionError("never called")

        def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            n = states.shape[0]
            return states, th.zeros(n), th.zeros(n, dtype=th.bool)

    assert obs_dim > 0 and act_dim > 0
    try:
        with pytest.raises(HardwareModelError):
            DeMoSAC("MlpPolicy", env, model=SimulatorLike(), learning_starts=10)
    finally:
        env.close()


# ---------------------------------------------------------------------------- evaluation during training


def test_eval_callback_evaluates_the_planner_and_the_bare_actor() -> None:
    """Both evaluations run at every eval step; the planner (exact model, long horizon) swings up where the
    untrained actor cannot, and the switch is restored afterwards."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor

    from sb3_demo import DeMoEvalCallback

    model = DeMoSAC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        model="analytic",
        planner_kwargs=dict(horizon=15, num_samples=64, num_particles=1, num_iterations=2, temperature=0.1),
        learning_starts=100,
        seed=0,
    )
    callback = DeMoEvalCallback(Monitor(gym.make("Pendulum-v1")), eval_freq=150, n_eval_episodes=2)
    model.learn(300, callback=callback)
    assert len(callback.actor_results) == 2 and all(len(r) == 2 for r in callback.actor_results)
    planner, actor = callback.last_mean_reward, np.mean(callback.actor_results[-1])
    assert callback.planner_gains[-1] == pytest.approx(planner - actor)
    assert planner > actor + 300, (planner, actor)
    assert model.predict_with_planner is True
    with pytest.raises(TypeError, match="DeMo algorithm"):
        SAC("MlpPolicy", "Pendulum-v1").learn(10, callback=DeMoEvalCallback(gym.make("Pendulum-v1"), eval_freq=5))


def _record_plans(model: Any) -> list[Any]:
    """The planner's results, one per planned rollout step."""
    results: list[Any] = []
    plan = model.planner.plan

    def recording_plan(*args: Any, **kwargs: Any) -> Any:
        results.append((kwargs.get("deterministic"), plan(*args, **kwargs)))
        return results[-1][1]

    model.planner.plan = recording_plan
    return results


def _fix_actor_std(model: Any, std: float) -> None:
    """SAC's actor std: ``std`` at every state."""
    with th.no_grad():
        model.actor.log_std.weight.zero_()
        model.actor.log_std.bias.fill_(np.log(std))


@pytest.mark.parametrize("std", [1e-9, 0.3])
def test_actor_exploration_is_sacs_noise_around_the_planned_mean(std: float) -> None:
    # no gradient steps: the actor's std stays what the test set
    model = _small(DeMoSAC, gym.make("Pendulum-v1"), exploration="actor", gradient_steps=0)
    _fix_actor_std(model, std)
    plans = _record_plans(model)
    model.learn(250)
    planned_steps = len(plans)
    assert planned_steps == 250 - 50 and all(deterministic for deterministic, _ in plans)
    planned = np.stack([r.normalized_action[0].cpu().numpy() for _, r in plans])
    np.testing.assert_allclose(planned, np.stack([r.mean[0, 0].cpu().numpy() for _, r in plans]))
    executed = model.replay_buffer.actions[50:250, 0]  # normalised, as stored (= as executed)
    residual = np.arctanh(np.clip(executed, -1 + 1e-6, 1 - 1e-6)) - np.arctanh(np.clip(planned, -1 + 1e-6, 1 - 1e-6))
    if std < 1e-6:
        np.testing.assert_allclose(executed, planned, atol=1e-5)
    else:  # 200 draws of N(0, 0.3^2): the sample std within about 4 standard errors
        assert 0.24 < residual.std() < 0.36 and abs(residual.mean()) < 0.08


def test_planner_exploration_samples_from_the_plan_and_ignores_the_actor_std() -> None:
    model = _small(DeMoSAC, gym.make("Pendulum-v1"), gradient_steps=0)
    assert model.exploration == "planner"
    _fix_actor_std(model, 1e-9)
    plans = _record_plans(model)
    model.learn(150)
    assert plans and not any(deterministic for deterministic, _ in plans)
    planned_mean = np.stack([r.mean[0, 0].cpu().numpy() for _, r in plans])
    executed = model.replay_buffer.actions[50:150, 0]
    # a sequence drawn by weight from candidates of std init_std = 0.5: far from the mean on many steps
    assert np.mean(np.abs(executed - planned_mean) > 0.05) > 0.3


def test_actor_exploration_is_saved_and_reproducible(tmp_path: Any) -> None:
    runs = []
    for _ in range(2):
        model = _small(DeMoSAC, gym.make("Pendulum-v1"), exploration="actor")
        model.learn(120)
        runs.append(model.replay_buffer.actions[:120].copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    model.save(tmp_path / "m.zip")
    assert DeMoSAC.load(tmp_path / "m.zip").exploration == "actor"
    assert DeMoTD3("MlpPolicy", gym.make("Pendulum-v1"), model="analytic").exploration == "actor"


@pytest.mark.parametrize("algo", ALGOS)
def test_no_exploration_executes_the_planned_mean(algo: type) -> None:
    from stable_baselines3.common.noise import NormalActionNoise

    # TD3's action noise is not added either: the planner's samples explore in the model (PETS)
    noise = NormalActionNoise(np.zeros(1), 0.5 * np.ones(1)) if algo is DeMoTD3 else None
    model = _small(algo, gym.make("Pendulum-v1"), exploration="none", action_noise=noise)
    plans = _record_plans(model)
    model.learn(150)
    assert len(plans) == 100 and all(deterministic for deterministic, _ in plans)
    planned_mean = np.stack([r.mean[0, 0].cpu().numpy() for _, r in plans])
    np.testing.assert_allclose(model.replay_buffer.actions[50:150, 0], planned_mean, atol=1e-6)


def _actor_gap(model: Any, n: int) -> float:
    """Mean squared gap between the actor's deterministic actions and the actions stored in the first ``n``
    replay rows."""
    from sb3_demo.common.policy_fns import deterministic_actor_action

    obs = th.as_tensor(model.replay_buffer.observations[:n, 0], device=model.device)
    with th.no_grad():
        actions = deterministic_actor_action(model.policy.actor, obs).cpu().numpy()
    return float(np.mean((actions - model.replay_buffer.actions[:n, 0]) ** 2))


@pytest.mark.parametrize("algo", ALGOS)
def test_imitation_pulls_the_actor_to_the_planned_actions(algo: type) -> None:
    gaps = {}
    for coef in (0.0, 5.0):
        model = _small(algo, gym.make("Pendulum-v1"), imitation_coef=coef, exploration="none", learning_starts=100)
        model.learn(400)
        gaps[coef] = _actor_gap(model, 400)
        if coef:
            assert model.logger.name_to_value["train/imitation_loss"] > 0
    # the planner's actions (rows 100-400) and the random start: the imitating actor is far closer to them
    assert gaps[5.0] < 0.5 * gaps[0.0], gaps


def _adam_steps(optimizer: th.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def test_policy_delay_updates_actor_and_entropy_coefficient_every_nth_critic_update(tmp_path: Any) -> None:
    model = _small(DeMoSAC, gym.make("Pendulum-v1"), policy_delay=3, gradient_steps=2)
    model.learn(80)
    critic_updates = model._n_updates
    assert critic_updates >= 30
    assert _adam_steps(model.critic.optimizer) == critic_updates
    assert _adam_steps(model.actor.optimizer) == critic_updates // 3
    assert _adam_steps(model.ent_coef_optimizer) == critic_updates // 3
    model.save(tmp_path / "model.zip")
    assert DeMoSAC.load(tmp_path / "model.zip").policy_delay == 3


def test_critic_updates_alone_fit_the_td_target_and_leave_the_actor() -> None:
    model = _small(DeMoSAC, gym.make("Pendulum-v1"), policy_delay=10_000, learning_starts=1000)
    model.learn(300)  # random actions, no update yet
    actor = [p.detach().clone() for p in model.actor.parameters()]
    target = [p.detach().clone() for p in model.critic_target.parameters()]

    batch = model.replay_buffer.sample(256)

    def critic_loss() -> float:
        th.manual_seed(1)  # the same next actions
        with th.no_grad():
            next_actions, next_log_prob = model.actor.action_log_prob(batch.next_observations)
            next_q = th.min(*model.critic_target(batch.next_observations, next_actions))
            target_q = batch.rewards + (1 - batch.dones) * model.gamma * (next_q - next_log_prob.reshape(-1, 1))
            return float(sum(((q - target_q) ** 2).mean() for q in model.critic(batch.observations, batch.actions)))

    before = critic_loss()
    model.train(300, batch_size=64)
    assert critic_loss() < 0.5 * before
    assert all(th.equal(a, p) for a, p in zip(actor, model.actor.parameters(), strict=True))
    assert not all(th.equal(t, p) for t, p in zip(target, model.critic_target.parameters(), strict=True))
