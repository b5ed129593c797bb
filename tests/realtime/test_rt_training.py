"""Training off the control loop on the fast twin: train_freq=(1, "episode"), the threaded trainer, and
storing the executed action."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

from sb3_demo.envs import Leg2REnv
from sb3_demo.realtime import ExecutedActionCallback, SafetyWrapper, ThreadedTrainCallback

EPISODE_STEPS = 25  # 0.2 s episodes at 125 Hz


@pytest.fixture(scope="module")
def short_leg():
    env = Leg2REnv(realtime=False, episode_seconds=0.2)
    yield env
    env.close()


def small_sac(env, **kwargs) -> SAC:
    kw = dict(
        learning_starts=EPISODE_STEPS,
        batch_size=32,
        buffer_size=1000,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
        device="cpu",
    )
    kw.update(kwargs)
    return SAC("MlpPolicy", env, **kw)


def test_train_freq_episode_trains_only_between_episodes(short_leg):
    model = small_sac(short_leg, train_freq=(1, "episode"), gradient_steps=-1)
    calls: list[tuple[int, int]] = []
    original = model.train

    def recording_train(gradient_steps: int, batch_size: int = 64) -> None:
        calls.append((model.num_timesteps, gradient_steps))
        original(gradient_steps=gradient_steps, batch_size=batch_size)

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(total_timesteps=4 * EPISODE_STEPS)
    # every call happens at an episode boundary, with one gradient step per env step of the episode
    assert [t for t, _ in calls] == [2 * EPISODE_STEPS, 3 * EPISODE_STEPS, 4 * EPISODE_STEPS]
    assert all(steps == EPISODE_STEPS for _, steps in calls)
    assert model._n_updates == 3 * EPISODE_STEPS


def test_threaded_training_does_the_requested_steps_and_syncs(short_leg):
    model = small_sac(short_leg, train_freq=(1, "episode"), gradient_steps=-1)
    before = [p.detach().clone() for p in model.policy.actor.parameters()]
    callback = ThreadedTrainCallback(chunk_size=10)
    model.learn(total_timesteps=4 * EPISODE_STEPS, callback=callback)
    assert callback.gradient_steps_requested == 3 * EPISODE_STEPS
    assert callback.gradient_steps_done == callback.gradient_steps_requested
    assert callback.syncs >= 1 and model._n_updates == 3 * EPISODE_STEPS
    # the acting model ends with the learner's parameters, which moved
    assert callback.learner is not None
    for acting, learned in zip(model.policy.actor.parameters(), callback.learner.policy.actor.parameters()):
        assert th.equal(acting, learned)
    assert any(not th.equal(p, old) for p, old in zip(model.policy.actor.parameters(), before))
    # the learner shared the replay buffer instead of copying it, and train() is SAC's again
    assert callback.learner.replay_buffer is model.replay_buffer
    assert "train" not in model.__dict__
    assert callback.learner.env is None
    # at the end the acting model also holds what else the learner trained (entropy coefficient, critic)
    assert th.equal(model.log_ent_coef, callback.learner.log_ent_coef)
    assert not th.equal(model.log_ent_coef, th.zeros_like(model.log_ent_coef))
    for acting, learned in zip(model.critic.parameters(), callback.learner.critic.parameters()):
        assert th.equal(acting, learned)


def test_threaded_training_with_per_step_requests(short_leg):
    model = small_sac(short_leg, train_freq=1, gradient_steps=1)
    callback = ThreadedTrainCallback(sync="step", chunk_size=4, max_lag=8)
    model.learn(total_timesteps=3 * EPISODE_STEPS, callback=callback)
    requested = 3 * EPISODE_STEPS - EPISODE_STEPS  # one per step after learning_starts
    assert callback.gradient_steps_requested == requested
    assert callback.gradient_steps_done == requested
    assert callback.syncs >= 2


def test_worker_errors_reach_the_control_loop(short_leg):
    model = small_sac(short_leg, train_freq=(1, "episode"), gradient_steps=-1)
    callback = ThreadedTrainCallback()

    class Boom(RuntimeError):
        pass

    def broken_train(gradient_steps: int, batch_size: int = 64) -> None:
        raise Boom("no gradients today")

    def learn() -> None:
        callback.init_callback(model)
        assert callback.learner is not None
        callback.learner.train = broken_train  # type: ignore[method-assign]
        model.train(gradient_steps=5, batch_size=32)
        callback.wait(timeout=10.0)

    model._setup_learn(total_timesteps=10, callback=None)
    with pytest.raises(RuntimeError, match="training thread failed"):
        learn()
    callback.on_training_end()
    assert "train" not in model.__dict__


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="sync"):
        ThreadedTrainCallback(sync="sometimes")
    with pytest.raises(ValueError, match="chunk_size"):
        ThreadedTrainCallback(chunk_size=0)
    with pytest.raises(ValueError, match="max_lag"):
        ThreadedTrainCallback(max_lag=0)


def test_replay_buffer_stores_the_executed_action():
    env = SafetyWrapper(Leg2REnv(realtime=False, episode_seconds=0.2), max_delta=0.05, initial_action=[0.0, 0.0])
    try:
        model = small_sac(env, learning_starts=1000)  # random actions: large jumps the rate limit cuts
        callback = ExecutedActionCallback()
        model.learn(total_timesteps=EPISODE_STEPS, callback=callback)
        stored = model.replay_buffer.actions[:EPISODE_STEPS, 0]
        assert callback.replaced == EPISODE_STEPS
        assert np.all(np.abs(np.diff(stored, axis=0)) <= 0.05 + 1e-5)  # what really ran: rate-limited
        assert np.abs(stored[0]).max() <= 0.05 + 1e-5
    finally:
        env.close()


def small_demosac(env, **kwargs):
    from sb3_demo import DeMoSAC
    from sb3_demo.envs import leg_reward_fn

    kw = dict(
        model_kwargs=dict(reward_fn=leg_reward_fn, hidden_sizes=(32, 32), num_members=3, num_elites=2),
        planner_kwargs=dict(num_samples=16, num_particles=1, num_iterations=2),
        model_train_freq=EPISODE_STEPS,
        model_fit_kwargs=dict(max_epochs=3),
        train_freq=(1, "episode"),
        gradient_steps=-1,
        learning_starts=EPISODE_STEPS,
        batch_size=32,
        buffer_size=1000,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
    )
    kw.update(kwargs)
    return DeMoSAC("MlpPolicy", env, **kw)


def test_demosac_under_the_contract_with_threaded_training():
    """On a hardware env DeMoSAC runs its rollout planner under the controller by itself (deadline from the
    period, counted from the observation's arrival; fallbacks counted; latency logged under planner/),
    gradient steps run in a thread, and the model is fitted between episodes (train_freq episode), on the
    acting side: the learner's copy does not overwrite it."""
    from sb3_demo.realtime import RealTimeController, is_hardware_env

    env = Leg2REnv(realtime=False, episode_seconds=0.2)
    try:
        assert is_hardware_env(env)
        model = small_demosac(env)
        assert isinstance(model.planner, RealTimeController)
        assert model.planner.control_period == pytest.approx(env.control_period)
        assert model.planner.step_start_fn is not None and model.planner.step_start_fn() == env.last_observation_time
        fits: list[int] = []
        fit_model = model.fit_model

        def recording_fit() -> dict[str, float]:
            fits.append(model.num_timesteps)
            return fit_model()

        model.fit_model = recording_fit  # type: ignore[method-assign]
        logged: set[str] = set()

        class LoggedKeys(BaseCallback):
            def _on_training_start(self) -> None:
                record = self.logger.record

                def spy(key, value, *args, **kwargs):
                    logged.add(key)
                    record(key, value, *args, **kwargs)

                self.logger.record = spy  # type: ignore[method-assign]

            def _on_step(self) -> bool:
                return True

        callback = ThreadedTrainCallback(chunk_size=10)
        model.learn(total_timesteps=4 * EPISODE_STEPS, callback=[LoggedKeys(), callback], log_interval=1)
        assert model.model_fitted and model.latency_stats.steps > 0
        # every fit ran at an episode boundary, never inside an episode's control loop
        assert fits and all(t % EPISODE_STEPS == 0 for t in fits), fits
        assert {"planner/latency_p99_ms", "planner/deadline_miss_rate", "planner/iterations_mean"} <= logged
        assert callback.gradient_steps_done == callback.gradient_steps_requested == 3 * EPISODE_STEPS
        assert callback.learner is not None
        acting, learner_copy = next(model.dynamics.parameters()), next(callback.learner.dynamics.parameters())
        assert not th.equal(acting, learner_copy)  # fitted in the loop, kept at the final sync
    finally:
        env.close()


def test_realtime_setting_switches_the_controller():
    """``realtime=False`` plans without a deadline even on a robot; ``True`` puts a simulated env under one
    (period from its ``dt``); a dict passes the controller's settings; anything else is refused."""
    import gymnasium as gym

    from sb3_demo import DeMoSAC
    from sb3_demo.realtime import RealTimeController

    env = Leg2REnv(realtime=False, episode_seconds=0.2)
    try:
        plain = small_demosac(env, realtime=False)
        assert not isinstance(plain.planner, RealTimeController) and plain.latency_stats is None
    finally:
        env.close()
    pendulum = DeMoSAC("MlpPolicy", gym.make("Pendulum-v1"), model="analytic", realtime=dict(budget_fraction=0.5))
    assert isinstance(pendulum.planner, RealTimeController)
    assert pendulum.planner.budget == pytest.approx(0.5 * 0.05)  # Pendulum-v1's dt is 0.05 s
    assert not isinstance(DeMoSAC("MlpPolicy", "Pendulum-v1", model="analytic").planner, RealTimeController)
    with pytest.raises(ValueError, match="realtime must be"):
        DeMoSAC("MlpPolicy", "Pendulum-v1", model="analytic", realtime="yes")


def test_realtime_rollout_callback_pauses_gc_and_raises_priority_only_while_collecting(short_leg):
    import gc
    import os

    from stable_baselines3.common.callbacks import CallbackList

    from sb3_demo.realtime import RealTimeRolloutCallback

    class Probe(BaseCallback):  # records the collector and scheduling state during steps
        def __init__(self) -> None:
            super().__init__()
            self.gc_during: set[bool] = set()
            self.policy_during: set[int] = set()

        def _on_step(self) -> bool:
            self.gc_during.add(gc.isenabled())
            self.policy_during.add(os.sched_getscheduler(0))
            return True

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        priority: int | None = 5
    except PermissionError:
        priority = None
    model = small_sac(short_leg, train_freq=(1, "episode"), gradient_steps=1)
    probe = Probe()
    model.learn(2 * EPISODE_STEPS, callback=CallbackList([RealTimeRolloutCallback(priority), probe]))
    assert probe.gc_during == {False} and gc.isenabled()
    if priority is not None:
        assert probe.policy_during == {os.SCHED_FIFO}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    with pytest.raises(ValueError, match="rt_priority"):
        RealTimeRolloutCallback(rt_priority=0)
