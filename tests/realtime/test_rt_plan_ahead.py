"""Planning off the critical path: the plan for step t is made from what was known before t, used only
when ready and confirmed by the observation, and every step (planned, stale, late) is in the statistics."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch as th

from sb3_demo.planner.dmd_mpc import DMDMPCPlanner
from sb3_demo.realtime import LatencyStats, PlanAheadController, check_model_allowed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTOR_ACTION = 0.3
LONG = 10.0  # s: a period no plan misses


def actor(obs: th.Tensor) -> th.Tensor:
    return th.full((obs.shape[0], 2), ACTOR_ACTION)


def quadratic_model(s: th.Tensor, a: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    nxt = s + 0.1 * a
    return nxt, -((nxt - 1.0) ** 2).sum(1), th.zeros(s.shape[0], dtype=th.bool)


class RecordingModel:
    """The quadratic model; records the threads that call it and can be slowed down."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, s: th.Tensor, a: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        return quadratic_model(s, a)


def make_planner(model, **kwargs) -> DMDMPCPlanner:
    kw = dict(action_dim=2, horizon=3, num_samples=16, num_iterations=2, prior=actor, seed=0)
    kw.update(kwargs)
    return DMDMPCPlanner(model, **kw)


def drive(controller: PlanAheadController, first: th.Tensor, steps: int, jump_at: int | None = None) -> list:
    """Step a plant that is the model itself (so predictions hold), optionally jumping away at one step."""
    obs, actions = first, []
    for t in range(steps):
        if t == jump_at:
            obs = obs + 5.0
        result = controller.act(obs)
        actions.append(result)
        obs = quadratic_model(obs, result.action)[0]
    return actions


def test_the_action_of_step_t_is_planned_from_what_was_known_before_t():
    """Each action equals a plan made synchronously from the model's prediction of that step's observation
    from the previous observation and action; a future that differs after t changes nothing up to t."""
    model = RecordingModel()
    controller = PlanAheadController(make_planner(model), control_period=LONG, budget=LONG, state_scale=1.0)
    first = th.tensor([[0.2, -0.4]])
    try:
        results = drive(controller, first, steps=6)
        other = PlanAheadController(make_planner(quadratic_model), control_period=LONG, budget=LONG, state_scale=1.0)
        try:
            diverged = drive(other, first, steps=6, jump_at=4)
        finally:
            other.close()
    finally:
        controller.close()
    assert "plan-ahead" in model.threads  # the plans after the first were made in the worker

    # the same planner, synchronously, from the first observation, then from each prediction (which the
    # plant, being the model, confirms)
    reference = make_planner(quadratic_model)
    obs = first
    for result in results:
        expected = reference.plan(obs)
        assert not result.fallback.any() and result.iterations == 2
        th.testing.assert_close(result.action, expected.action)
        obs = quadratic_model(obs, result.action)[0]
    for t in range(4):  # identical observations up to step 3: identical actions
        th.testing.assert_close(diverged[t].action, results[t].action)
    assert diverged[4].fallback.all()  # the jump contradicted the prediction: the actor acted
    np.testing.assert_allclose(diverged[4].action.numpy(), ACTOR_ACTION)
    s = controller.stats.summary()
    assert s["steps"] == 6 and s["fallbacks"] == 0 and s["iteration_step_rate"] == 1.0
    assert s["stale_plans"] == 0 and s["late_plans"] == 0
    assert other.stats.summary()["stale_plans"] == 1


def test_a_plan_not_ready_by_the_deadline_falls_back_to_the_actor_and_is_counted():
    model = RecordingModel(delay=0.02)  # the prediction alone takes longer than the 8 ms period
    controller = PlanAheadController(make_planner(model), control_period=0.008, budget=0.004)
    try:
        obs = th.zeros(1, 2)
        for _ in range(4):
            step_start = time.perf_counter()
            result = controller.act(obs, step_start=step_start)
            assert result.fallback.all() and result.iterations == 0
            np.testing.assert_allclose(result.action.numpy(), ACTOR_ACTION, atol=1e-6)
            obs = quadratic_model(obs, result.action)[0]
            while time.perf_counter() < step_start + 0.008:  # the period passes
                time.sleep(0.001)
    finally:
        controller.close()
    s = controller.stats.summary()
    assert s["steps"] == 4 and s["fallbacks"] == 4 and s["iteration_step_rate"] == 0.0
    assert s["late_plans"] == 3  # the first step had nothing planned ahead: planned (and failed) on the spot
    assert s["stale_plans"] == 0


def test_latency_statistics_cover_the_lookup_and_are_logged_under_planner_keys():
    class Logger:
        def __init__(self) -> None:
            self.records: dict[str, float] = {}

        def record(self, key: str, value: float) -> None:
            self.records[key] = value

    stats = LatencyStats()
    controller = PlanAheadController(
        make_planner(quadratic_model), control_period=LONG, budget=LONG, stats=stats, state_scale=1.0
    )
    try:
        drive(controller, th.tensor([[0.5, 0.5]]), steps=5, jump_at=3)
    finally:
        controller.close()
    logger = Logger()
    stats.log(logger)
    assert logger.records["planner/steps"] == 5
    assert logger.records["planner/stale_plans"] == 1 and logger.records["planner/late_plans"] == 0
    assert logger.records["planner/fallbacks"] == 1
    assert logger.records["planner/iteration_step_rate"] == pytest.approx(4 / 5)
    assert logger.records["planner/latency_p50_ms"] > 0


def test_a_state_scale_and_tolerance_decide_what_contradicts_the_prediction():
    planner = make_planner(quadratic_model)
    controller = PlanAheadController(planner, LONG, budget=LONG, tolerance=0.5, state_scale=[1.0, 0.01], atol=0.0)
    try:
        obs = th.zeros(1, 2)
        action = controller.act(obs).action
        predicted = quadratic_model(obs, action)[0]
        near_obs = predicted + th.tensor([[0.4, 0.004]])  # within half a scale in each dimension
        near = controller.act(near_obs)
        assert not near.fallback.any()
        far = controller.act(quadratic_model(near_obs, near.action)[0] + th.tensor([[0.0, 0.006]]))
        assert far.fallback.all()
    finally:
        controller.close()
    assert controller.stats.stale_plans == 1


def test_by_default_the_check_scales_with_the_models_usual_error_once_known():
    """A plant that differs from the model by a steady small error: until ``warmup`` residuals are known the
    steps are planned on the spot (the worker only predicts), then the plans made ahead are used, and a push
    far beyond the usual error makes that step's plan stale (the next one, made from the pushed state, holds
    again); with ``on_stale="replan"`` the stale step is planned from the observation instead of the actor."""
    for on_stale in ("actor", "replan"):
        controller = PlanAheadController(
            make_planner(quadratic_model), LONG, budget=LONG, warmup=3, tolerance=4.0, on_stale=on_stale
        )
        try:
            obs, results = th.tensor([[0.1, 0.2]]), []
            for t in range(10):
                if t == 8:
                    obs = obs + 1.0  # a push
                result = controller.act(obs)
                results.append(result)
                noise = 0.01 * (1 + t % 2)  # residuals of 0.01 and 0.02
                obs = quadratic_model(obs, result.action)[0] + noise
        finally:
            controller.close()
        s = controller.stats.summary()
        # steps 0-3 planned on the spot (the residuals of steps 1, 2, 3 check the plan of step 4); step 8 pushed
        assert [bool(r.fallback.any()) for r in results] == [False] * 8 + [on_stale == "actor", False]
        assert s["stale_plans"] == 1 and s["late_plans"] == 0
        assert s["iteration_step_rate"] == (0.9 if on_stale == "actor" else 1.0)


@pytest.mark.parametrize("on_stale", ["actor", "replan"])
def test_a_contradicted_prediction_cuts_its_plan_short(on_stale: str):
    """The check needs only the prediction: a step whose observation contradicts it does not wait for the
    rest of a long plan (the worker's plan stops at its next model call), and the next plan holds again."""
    model = RecordingModel(delay=0.01)  # a plan of 3 iterations x horizon 3 takes over 100 ms
    planner = make_planner(model, num_iterations=3, horizon=3)
    controller = PlanAheadController(planner, LONG, budget=LONG, state_scale=1.0, on_stale=on_stale)
    try:
        obs = th.zeros(1, 2)
        for t in range(4):
            if t == 2:
                obs = obs + 5.0  # a push
            start = time.perf_counter()
            result = controller.act(obs)
            took = time.perf_counter() - start
            if t == 2:
                assert result.fallback.all() if on_stale == "actor" else not result.fallback.any()
                # a full plan made ahead would take over 100 ms more; a replan takes one plan
                assert took < (0.08 if on_stale == "actor" else 0.2)
            else:
                assert not result.fallback.any()
            obs = quadratic_model(obs, result.action)[0]
    finally:
        controller.close()
    assert controller.stats.stale_plans == 1 and controller.stats.late_plans == 0


def test_reset_drops_the_plan_made_ahead_and_errors_surface_in_the_control_loop():
    model = RecordingModel()
    broken = {"worker": False}

    def model_fn(s: th.Tensor, a: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        if broken["worker"] and threading.current_thread().name == "plan-ahead":
            raise RuntimeError("model broke")
        return model(s, a)

    x = th.zeros(1, 2)
    controller = PlanAheadController(make_planner(model_fn), LONG, budget=LONG, state_scale=1.0)
    try:
        controller.act(x)
        controller.reset()
        model.threads.clear()
        controller.act(x)  # nothing was made ahead after the reset: planned on the spot
        assert threading.current_thread().name in model.threads
        assert controller.wait_idle(timeout=5.0)
        broken["worker"] = True
        assert not controller.act(x).fallback.any()  # made ahead before the model broke
        with pytest.raises(RuntimeError, match="model broke"):
            controller.act(x)
    finally:
        controller.close()


def test_the_plan_made_ahead_keeps_the_callers_deterministic_setting():
    """``plan(deterministic=False)`` (DeMoSAC's rollouts) holds for the plan the worker makes afterwards."""
    planner = make_planner(quadratic_model)
    calls: list[tuple[str, bool]] = []
    plan = planner.plan

    def recording_plan(states: th.Tensor, deterministic: bool = True, **kwargs) -> object:
        calls.append((threading.current_thread().name, deterministic))
        return plan(states, deterministic=deterministic, **kwargs)

    planner.plan = recording_plan  # type: ignore[method-assign]
    controller = PlanAheadController(planner, LONG, budget=LONG, state_scale=1.0)
    try:
        controller.plan(th.zeros(1, 2), deterministic=False)
        assert controller.wait_idle(timeout=5.0)
    finally:
        controller.close()
    assert calls == [(threading.current_thread().name, False), ("plan-ahead", False)]


def test_bad_settings_raise():
    planner = make_planner(quadratic_model)
    with pytest.raises(ValueError, match="tolerance"):
        PlanAheadController(planner, 0.008, tolerance=0.0)
    with pytest.raises(ValueError, match="state_scale"):
        PlanAheadController(planner, 0.008, state_scale=[1.0, -1.0])
    with pytest.raises(ValueError, match="switch_interval"):
        PlanAheadController(planner, 0.008, switch_interval=0.0)
    with pytest.raises(ValueError, match="on_stale"):
        PlanAheadController(planner, 0.008, on_stale="ignore")
    with pytest.raises(ValueError, match="warmup"):
        PlanAheadController(planner, 0.008, warmup=0)


def test_on_the_leg_twin_plans_made_ahead_hold_and_drive_the_leg():
    """On the fast twin with an exact plant, the nominal model's predictions hold: once the warm-up's
    residuals are known, every step acts on the plan made ahead (made in the worker), and the leg executes
    exactly that action."""
    from stable_baselines3 import SAC

    from sb3_demo.common.policy_fns import policy_prior
    from sb3_demo.envs import Leg2REnv, Leg2RNominalDynamics

    exact = dict(sensor_noise=0.0, observation_latency=0.0, action_latency=0.0, mass_scale=1.0, friction_scale=1.0)
    env = Leg2REnv(realtime=False, episode_seconds=1.0, **exact)
    try:
        sac = SAC("MlpPolicy", env, policy_kwargs=dict(net_arch=[16]), seed=0, device="cpu")
        prior = policy_prior(sac.policy, env.action_space, deterministic=True)
        planner = DMDMPCPlanner(
            Leg2RNominalDynamics(), action_dim=2, horizon=2, num_samples=8, num_iterations=1, prior=prior, seed=0
        )
        check_model_allowed(env, planner.dynamics)
        controller = PlanAheadController(planner, LONG, budget=LONG, warmup=5)  # virtual clock: no plan is late
        plan = planner.plan
        planned_in: list[str] = []

        def recording_plan(*args, **kwargs) -> object:
            planned_in.append(threading.current_thread().name)
            return plan(*args, **kwargs)

        planner.plan = recording_plan  # type: ignore[method-assign]
        obs, _ = env.reset(seed=0)
        fallbacks = []
        for _ in range(16):
            result = controller.act(obs, step_start=env.last_observation_time)
            fallbacks.append(bool(result.fallback.any()))
            obs, _, _, _, info = env.step(result.action[0].numpy())
            np.testing.assert_allclose(info["executed_action"], result.action[0].numpy(), atol=1e-6)
        controller.close()
    finally:
        env.close()
    # steps 0-5 planned on the spot (the residuals of steps 1-5 check the plan of step 6), then ahead
    main = threading.current_thread().name
    assert planned_in[:6] == [main] * 6 and set(planned_in[6:]) == {"plan-ahead"}
    assert not any(fallbacks)
    s = controller.stats.summary()
    assert s["steps"] == 16 and s["stale_plans"] == 0 and s["late_plans"] == 0


def test_demosac_plans_ahead_on_the_leg_twin_and_logs_the_new_path(tmp_path):
    import csv

    from stable_baselines3.common.logger import configure

    from sb3_demo import DeMoSAC
    from sb3_demo.envs import Leg2REnv, leg_reward_fn

    env = Leg2REnv(realtime=False, episode_seconds=0.2)
    try:
        model = DeMoSAC(
            "MlpPolicy",
            env,
            planner_kwargs=dict(horizon=2, num_samples=8, num_iterations=1, num_particles=1),
            model_kwargs=dict(num_members=2, num_elites=2, hidden_sizes=(16, 16), reward_fn=leg_reward_fn),
            model_fit_kwargs=dict(max_epochs=2),
            learning_starts=30,
            model_train_freq=30,
            train_freq=(1, "episode"),
            gradient_steps=2,
            policy_kwargs=dict(net_arch=[16]),
            realtime=dict(plan_ahead=True, budget=LONG),
            seed=0,
            device="cpu",
        )
        assert isinstance(model.planner, PlanAheadController)
        model.set_logger(configure(str(tmp_path), ["csv"]))
        switch_interval = sys.getswitchinterval()
        model.learn(100)  # 4 episodes of 25 steps: one log dump
        # learn stops the worker and gives the interpreter its thread switch interval back
        assert sys.getswitchinterval() == switch_interval
        assert model.planner.wait_idle(timeout=0.0)
    finally:
        env.close()
    s = model.latency_stats.summary()
    # the planner acts once the model is fitted (after 30 steps), each step counted with its outcome
    assert 0 < s["steps"] <= 70 and s["stale_plans"] + s["late_plans"] <= s["fallbacks"]
    with open(tmp_path / "progress.csv") as f:
        logged = list(csv.DictReader(f))[-1]
    for key in ("steps", "latency_p99_ms", "stale_plans", "late_plans", "iteration_step_rate"):
        assert float(logged[f"planner/{key}"]) == pytest.approx(s[key])
