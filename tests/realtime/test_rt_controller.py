"""The anytime-planning contract: deadline from the control period, at most one model evaluation of
overrun, fallback to the actor's action, counted."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_demo.dynamics import PendulumDynamics
from sb3_demo.planner.dmd_mpc import DMDMPCPlanner
from sb3_demo.realtime import HardwareModelError, LatencyStats, RealTimeController

MODEL_COST = 0.004  # s per evaluation of the slow model
ACTOR_ACTION = 0.3


class FakeClock:
    """``time.perf_counter`` that only moves when a model evaluation runs: deterministic timing on a busy
    machine, so the contract can be checked exactly."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


class SlowModel:
    """A point mass whose evaluation takes ``cost`` seconds of the fake clock; records when calls start."""

    def __init__(self, clock: FakeClock, cost: float = MODEL_COST) -> None:
        self.clock = clock
        self.cost = cost
        self.starts: list[float] = []

    def __call__(self, s: th.Tensor, a: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        self.starts.append(self.clock.now)
        self.clock.now += self.cost
        nxt = s + 0.1 * a
        return nxt, -(nxt**2).sum(1), th.zeros(s.shape[0], dtype=th.bool)


def actor(obs: th.Tensor) -> th.Tensor:
    return th.full((obs.shape[0], 2), ACTOR_ACTION)


def quadratic_model(s: th.Tensor, a: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    nxt = s + 0.1 * a
    return nxt, -((nxt - 1.0) ** 2).sum(1), th.zeros(s.shape[0], dtype=th.bool)


def make_planner(model, **kwargs) -> DMDMPCPlanner:
    kw = dict(action_dim=2, horizon=3, num_samples=32, num_iterations=5, prior=actor, seed=0)
    kw.update(kwargs)
    return DMDMPCPlanner(model, **kw)


def test_slow_model_falls_back_to_actor_and_counts_it(clock):
    model = SlowModel(clock)
    controller = RealTimeController(make_planner(model), control_period=0.008, budget=0.002)
    for _ in range(4):
        start = time.perf_counter()
        result = controller.act(np.zeros((1, 2), dtype=np.float32), step_start=start)
        assert result.fallback.all() and result.iterations == 0
        np.testing.assert_allclose(result.action.numpy(), ACTOR_ACTION, atol=1e-6)
        # the contract: no evaluation starts after the deadline, so at most one runs past it
        assert all(t <= start + controller.budget for t in model.starts)
        assert time.perf_counter() - start <= controller.budget + MODEL_COST
        model.starts.clear()
    s = controller.stats.summary()
    assert s["steps"] == 4 and s["fallbacks"] == 4 and s["fallback_rate"] == 1.0
    assert s["iterations_mean"] == 0.0
    # only the first step, before the model's cost was known, ran an evaluation past the deadline
    assert s["deadline_misses"] == 1
    assert s["max_overrun_ms"] == pytest.approx((MODEL_COST - 0.002) * 1e3)


def test_iterates_until_the_deadline(clock):
    model = SlowModel(clock, cost=0.001)
    # 2 prior rollout evaluations (2 ms), then 3 per iteration (3 ms each): 3 iterations end at 11 ms of
    # a 12 ms budget, and a fourth is predicted not to fit
    controller = RealTimeController(make_planner(model), control_period=0.02, budget=0.012)
    for _ in range(3):
        start = time.perf_counter()
        result = controller.act(th.zeros(1, 2), step_start=start)
        assert result.iterations == 3 and result.deadline_hit and not result.fallback.any()
        assert time.perf_counter() - start <= controller.budget
    s = controller.stats.summary()
    assert s["fallbacks"] == 0 and s["deadline_misses"] == 0 and s["iterations_mean"] == 3


def test_deadline_inside_an_iteration_abandons_it(clock):
    model = SlowModel(clock, cost=0.001)
    controller = RealTimeController(make_planner(model, num_iterations=1), control_period=0.02, budget=0.0035)
    start = time.perf_counter()
    result = controller.act(th.zeros(1, 2), step_start=start)
    # prior rollouts end at 2 ms; the iteration's evaluation at 2 ms ends at 3 ms; the next one would end at
    # 4 ms, after the 3.5 ms deadline, so it is not started
    assert result.iterations == 0 and result.fallback.all()
    assert max(model.starts) <= start + controller.budget
    assert time.perf_counter() - start == pytest.approx(0.003)
    assert controller.stats.deadline_misses == 0


def test_raw_planner_overruns_by_at_most_one_evaluation(clock):
    model = SlowModel(clock)
    planner = make_planner(model, horizon=4)  # 3 prior rollout evaluations before the first iteration
    start = time.perf_counter()
    result = planner.plan(th.zeros(1, 2), deadline=start + 0.002)
    assert time.perf_counter() - start <= 0.002 + MODEL_COST
    assert result.fallback.all()


def test_guard_does_not_start_an_evaluation_that_cannot_finish(clock):
    """The raw planner starts a model call whenever the deadline has not passed yet, so a model slower
    than the budget overruns every step; the controller's guard learns the call's cost and falls back at
    once."""
    raw_model, guarded_model = SlowModel(clock), SlowModel(clock)
    raw = make_planner(raw_model)
    controller = RealTimeController(make_planner(guarded_model), control_period=0.008, budget=0.002)
    raw_overruns, guarded_overruns = [], []
    for _ in range(4):
        start = time.perf_counter()
        raw.plan(th.zeros(1, 2), deadline=start + 0.002)
        raw_overruns.append(time.perf_counter() - start - 0.002)
        start = time.perf_counter()
        result = controller.act(th.zeros(1, 2), step_start=start)
        guarded_overruns.append(time.perf_counter() - start - 0.002)
        assert result.fallback.all()
    assert raw_overruns == pytest.approx([0.002] * 4)  # one model evaluation past the deadline, every step
    assert guarded_overruns == pytest.approx([0.002, -0.002, -0.002, -0.002])  # only while the cost was unknown
    assert controller.planner.dynamics.refused == 3
    assert controller.stats.deadline_misses == 1


def test_fast_model_plans_within_deadline_and_improves_on_actor():
    controller = RealTimeController(make_planner(quadratic_model, num_samples=64, temperature=0.01), control_period=0.5)
    for _ in range(3):
        result = controller.act(th.zeros(1, 2))
    assert result.iterations == 5 and not result.fallback.any()
    # the target is +1 on both axes: the plan pushes towards +1, beyond the actor's 0.3
    assert (result.action > 0.5).all()
    s = controller.stats.summary()
    assert s["deadline_misses"] == 0 and s["iterations_mean"] == 5.0
    assert s["latency_max_ms"] < 500.0


def test_step_start_in_the_past_shortens_the_budget(clock):
    """The deadline counts from the observation's arrival, not from the call."""
    model = SlowModel(clock, cost=0.001)
    controller = RealTimeController(make_planner(model), control_period=0.008)  # 6 ms budget
    start = time.perf_counter() - 0.0055  # 5.5 ms already gone
    result = controller.act(th.zeros(1, 2), step_start=start)
    assert result.fallback.all() and len(model.starts) == 1
    assert controller.stats.deadline_misses == 1
    assert controller.stats.period_overruns == 0


def test_controller_is_a_drop_in_planner(clock):
    """Code that holds a planner (DeMoSAC's ``self.planner``) can hold the controller instead."""
    model = SlowModel(clock, cost=0.001)
    planner = make_planner(model)
    controller = RealTimeController(planner, control_period=0.008, budget=0.006, step_start_fn=lambda: clock.now)
    result = controller.plan(th.zeros(2, 2), deterministic=False)
    assert result.action.shape == (2, 2) and result.iterations == 1  # 2 ms of prior rollouts + 3 ms
    assert controller.stats.steps == 1 and controller.deterministic is True
    assert controller.horizon == planner.horizon and controller.mean is planner.mean
    controller.reset([1])
    assert th.all(planner.mean[1] == 0)
    np.testing.assert_allclose(controller.unscale_action(th.ones(1, 2)).numpy(), 1.0)


def test_budget_from_env_control_period():
    import sb3_demo.envs  # noqa: F401  (registers the leg)

    env = gym.make("sb3_demo/Leg2RSim-v0")
    try:
        planner = make_planner(quadratic_model)
        controller = RealTimeController.for_env(planner, env, budget_fraction=0.5)
        assert controller.control_period == pytest.approx(0.008)
        assert controller.budget == pytest.approx(0.004)
        with pytest.raises(HardwareModelError, match="hardware env"):
            RealTimeController.for_env(make_planner(env.unwrapped.step), env)
    finally:
        env.close()


def test_pendulum_period_from_dt_and_shared_stats():
    env = gym.make("Pendulum-v1")
    stats = LatencyStats()
    planner = DMDMPCPlanner(PendulumDynamics(), action_dim=1, action_low=[-2.0], action_high=[2.0], seed=0)
    controller = RealTimeController.for_env(planner, env, stats=stats)
    assert controller.control_period == pytest.approx(0.05)  # Pendulum's dt, not a hardware env
    obs, _ = env.reset(seed=0)
    controller.act(th.as_tensor(obs[None]))
    assert stats.steps == 1


def test_bad_settings_raise():
    planner = make_planner(quadratic_model)
    with pytest.raises(ValueError, match="control_period"):
        RealTimeController(planner, control_period=0.0)
    with pytest.raises(ValueError, match="budget_fraction"):
        RealTimeController(planner, control_period=0.008, budget_fraction=1.5)
    with pytest.raises(TypeError, match="DMDMPCPlanner"):
        RealTimeController(quadratic_model, control_period=0.008)  # type: ignore[arg-type]


def test_fallback_to_the_actor_on_the_leg():
    """On the fast twin: a planner whose model is too slow for the 8 ms period falls back to the actor's
    action every step, counted, and the leg receives exactly that action."""
    from stable_baselines3 import SAC

    from sb3_demo.common.policy_fns import policy_prior
    from sb3_demo.envs import Leg2REnv, Leg2RNominalDynamics

    env = Leg2REnv(realtime=False, episode_seconds=0.1)
    try:
        sac = SAC("MlpPolicy", env, policy_kwargs=dict(net_arch=[16]), seed=0, device="cpu")
        nominal = Leg2RNominalDynamics()

        def slow_nominal(s: th.Tensor, a: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            time.sleep(0.012)  # longer than the whole 6 ms budget
            return nominal(s, a)

        prior = policy_prior(sac.policy, env.action_space, deterministic=True)
        planner = DMDMPCPlanner(slow_nominal, action_dim=2, horizon=2, num_samples=8, prior=prior, seed=0)
        controller = RealTimeController.for_env(planner, env, step_start_fn=lambda: env.last_observation_time)
        obs, _ = env.reset(seed=0)
        for _ in range(5):
            result = controller.plan(th.as_tensor(obs[None]))
            actor_action = sac.predict(obs, deterministic=True)[0]
            np.testing.assert_allclose(result.action[0].numpy(), actor_action, atol=1e-5)
            obs, _, _, _, info = env.step(result.action[0].numpy())
            np.testing.assert_allclose(info["executed_action"], actor_action, atol=1e-5)
        s = controller.stats.summary()
        assert s["fallbacks"] == 5 and s["fallback_rate"] == 1.0 and s["iterations_mean"] == 0
        # the first step's model evaluation ran past the deadline; from then on its cost is known and a
        # call that cannot finish in time is not started
        assert s["deadline_misses"] >= 1 and s["deadline_miss_rate"] <= 0.4
    finally:
        env.close()
