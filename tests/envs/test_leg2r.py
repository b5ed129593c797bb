"""The simulated 2R leg: kinematics and task, the sealed plant, latency/noise/mismatch, time limits,
registration, and the rule that a planner may not use the hardware env as its model."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch as th

import sb3_demo.envs  # noqa: F401  (registers the ids)
from sb3_demo.dynamics import CallableDynamics
from sb3_demo.envs import Leg2REnv, Leg2RNominalDynamics, ik_tracking_action
from sb3_demo.envs.leg2r_model import (
    ELLIPSE_CENTER_Y,
    ELLIPSE_HALF_WIDTH,
    ELLIPSE_HEIGHT,
    LegParameters,
    desired_foot_position,
    foot_position,
    inverse_kinematics,
    leg_mjcf,
    tracking_reward,
)
from sb3_demo.envs.leg2r_nominal import (
    desired_foot_position_torch,
    foot_position_torch,
    tracking_reward_from_obs,
)
from sb3_demo.realtime import HardwareModelError, check_model_allowed, is_hardware_env

EXACT = dict(sensor_noise=0.0, observation_latency=0.0, action_latency=0.0, mass_scale=1.0, friction_scale=1.0)


@pytest.fixture(scope="module")
def sim_env():
    env = gym.make("sb3_demo/Leg2RSim-v0")
    yield env
    env.close()


def rollout(env, policy, seed=0, steps=None):
    obs, _ = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], []
    while True:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated or (steps is not None and len(rewards) >= steps):
            return np.array(observations), np.array(rewards), infos


# ------------------------------------------------------------------------------ the task


def test_forward_kinematics_matches_mujoco():
    model = mujoco.MjModel.from_xml_string(leg_mjcf(LegParameters()))
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform([-1.0, -2.5], [1.5, -0.1])
        data.qpos[:] = [0.05, *q]
        mujoco.mj_forward(model, data)
        rel = data.site("foot").xpos - data.body("thigh").xpos
        np.testing.assert_allclose(foot_position(q), rel[[0, 2]], atol=1e-9)
        np.testing.assert_allclose(foot_position_torch(th.as_tensor(q)).numpy(), rel[[0, 2]], atol=1e-9)


def test_reference_is_the_papers_half_ellipse_and_ik_inverts_fk():
    phase = np.linspace(0, 2 * np.pi, 721)
    p = desired_foot_position(phase)
    assert p[:, 0].min() == pytest.approx(-ELLIPSE_HALF_WIDTH) and p[:, 0].max() == pytest.approx(ELLIPSE_HALF_WIDTH)
    assert p[:, 1].min() == pytest.approx(ELLIPSE_CENTER_Y)
    assert p[:, 1].max() == pytest.approx(ELLIPSE_CENTER_Y + ELLIPSE_HEIGHT)
    np.testing.assert_allclose(desired_foot_position(np.pi / 2), [0.0, ELLIPSE_CENTER_Y + ELLIPSE_HEIGHT], atol=1e-12)
    np.testing.assert_allclose(foot_position(inverse_kinematics(p)), p, atol=1e-9)
    torch_p = desired_foot_position_torch(th.as_tensor(np.sin(phase)), th.as_tensor(np.cos(phase)))
    np.testing.assert_allclose(torch_p.numpy(), p, atol=1e-9)


def test_reward_is_exp_minus_10_distance():
    q = inverse_kinematics(desired_foot_position(1.0))
    assert tracking_reward(q, 1.0) == pytest.approx(1.0)
    off = foot_position(q) + np.array([0.03, 0.04])  # 5 cm away
    assert tracking_reward(inverse_kinematics(off), 1.0) == pytest.approx(np.exp(-0.5))
    obs = th.zeros(1, 10, dtype=th.float64)
    obs[0, :2] = th.as_tensor(inverse_kinematics(off))
    obs[0, 6], obs[0, 7] = np.sin(1.0), np.cos(1.0)
    assert tracking_reward_from_obs(obs).item() == pytest.approx(np.exp(-0.5))


# ------------------------------------------------------------------------------ the env


def test_spaces_and_solvable_task(sim_env):
    obs, _ = sim_env.reset(seed=0)
    assert sim_env.observation_space.contains(obs) and obs.shape == (10,)
    assert sim_env.action_space.shape == (2,)
    assert is_hardware_env(sim_env) and sim_env.unwrapped.metadata["realtime"] is False
    _, ik_rewards, _ = rollout(sim_env, lambda o: ik_tracking_action(o, lead=0.03))
    _, still_rewards, _ = rollout(sim_env, lambda o: np.zeros(2))
    assert len(ik_rewards) == 500  # 4 s at 125 Hz
    assert np.all((ik_rewards > 0) & (ik_rewards <= 1))
    assert ik_rewards.mean() > 0.9  # the hand-written IK controller tracks well
    assert still_rewards.mean() < 0.5  # standing still does not


def test_episode_limit_in_seconds_and_phase_advances():
    env = Leg2REnv(realtime=False, episode_seconds=0.4, control_period=0.01)
    try:
        observations, rewards, infos = rollout(env, lambda o: np.zeros(2))
        assert len(rewards) == 40
        assert infos[-1]["episode_time"] == pytest.approx(0.4)
        phase = np.unwrap(np.arctan2(observations[:, 6], observations[:, 7]))
        np.testing.assert_allclose(np.diff(phase), 2 * np.pi * 0.01, atol=1e-6)  # 1 Hz gait, 10 ms steps
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2))
    finally:
        env.close()


def test_plant_is_sealed(sim_env):
    leg = sim_env.unwrapped
    for name in ("data", "model", "set_state", "get_state", "sim", "physics", "state_from_env", "plant"):
        assert not hasattr(leg, name), name
    # nothing reachable from the agent's side holds MuJoCo objects
    for value in vars(leg).values():
        assert not isinstance(value, mujoco.MjData | mujoco.MjModel)
        for inner in getattr(value, "__dict__", {}).values():
            assert not isinstance(inner, mujoco.MjData | mujoco.MjModel)
    assert leg._process.pid != os.getpid()
    # the plant answers only reset / act / observe / close
    with pytest.raises(RuntimeError, match="unknown request"):
        leg._request("set_state", np.zeros(6))
    with pytest.raises(RuntimeError, match="unknown request"):
        leg._request("get_state")
    sim_env.reset(seed=0)
    sim_env.step(np.zeros(2))  # still serving


def test_nominal_model_matches_exact_plant_and_mismatch_shows():
    nominal = Leg2RNominalDynamics()
    errors = {}
    for name, kwargs in {
        "exact": EXACT,
        "mismatched": dict(EXACT, mass_scale=1.3, friction_scale=2.0),
    }.items():
        env = Leg2REnv(realtime=False, **kwargs)
        try:
            obs, _ = env.reset(seed=1)
            rng = np.random.default_rng(0)
            worst = 0.0
            for _ in range(60):
                action = np.clip(ik_tracking_action(obs, 0.03) + rng.normal(0, 0.2, 2), -1, 1).astype(np.float32)
                predicted, reward, _ = nominal(th.as_tensor(obs[None]), th.as_tensor(action[None]))
                obs, true_reward, *_ = env.step(action)
                worst = max(worst, float(np.abs(predicted[0, :6].numpy() - obs[:6]).max()))
                assert reward.item() == pytest.approx(true_reward, abs=1e-4 if name == "exact" else 0.2)
            errors[name] = worst
        finally:
            env.close()
    assert errors["exact"] < 1e-4
    assert errors["mismatched"] > 0.05


def test_latency_and_noise():
    """An observation latency of one period shows last step's state; an action latency of one period
    delays the response by one step; sensor noise has the configured scale."""
    actions = [np.array([0.6, -0.4])] * 10 + [np.array([-0.6, 0.5])] * 10
    trajectories = {}
    for name, kwargs in {
        "none": EXACT,
        "obs": dict(EXACT, observation_latency=0.008),
        "act": dict(EXACT, action_latency=0.008),
        "noisy": dict(EXACT, sensor_noise=1.0),
    }.items():
        env = Leg2REnv(realtime=False, **kwargs)
        try:
            env.reset(seed=3)
            trajectories[name] = np.array([env.step(a)[0][:6] for a in actions])
        finally:
            env.close()
    base = trajectories["none"]
    np.testing.assert_allclose(trajectories["obs"][1:], base[:-1], atol=1e-5)
    np.testing.assert_allclose(trajectories["act"][11:, :4], base[10:-1, :4], atol=2e-3)
    assert np.abs(trajectories["act"][10, :4] - base[10, :4]).max() > 1e-2  # the switch arrived a step late
    noise = trajectories["noisy"] - base
    assert 0.0005 < noise[:, 0].std() < 0.005  # encoder noise 2 mrad
    assert 0.01 < noise[:, 2].std() < 0.15  # velocity noise 0.05 rad/s


def test_registration_through_module_prefix_in_a_fresh_interpreter():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('sb3_demo.envs:sb3_demo/Leg2RSim-v0', episode_seconds=0.1)\n"
        "env.reset(seed=0)\n"
        "print(env.unwrapped.metadata['hardware'], env.step(env.action_space.sample())[0].shape)\n"
        "env.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True (10,)"


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="control_period"):
        Leg2REnv(control_period=0.0)
    with pytest.raises(ValueError, match="episode_seconds"):
        Leg2REnv(episode_seconds=0.001)
    with pytest.raises(ValueError, match="watchdog_mode"):
        Leg2REnv(watchdog_mode="explode")
    with pytest.raises(ValueError, match="mass_scale"):
        Leg2REnv(mass_scale=-1.0)
    with pytest.raises(ValueError, match="observation_latency"):
        Leg2REnv(observation_latency=-0.1)


def test_bad_actions_raise(sim_env):
    sim_env.reset(seed=0)
    with pytest.raises(ValueError, match="2 actions"):
        sim_env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        sim_env.step(np.array([np.nan, 0.0]))


# ------------------------------------------------------------------------------ the model rule


def test_planner_may_not_use_the_hardware_env(sim_env):
    class SimulatorModel:
        def state_from_env(self, env):
            return None

        def __call__(self, s, a):
            return s, s[:, 0], s[:, 0] > 0

    for bad in (
        sim_env,
        sim_env.unwrapped,
        sim_env.unwrapped.step,
        CallableDynamics(sim_env.step),
        SimulatorModel(),
    ):
        with pytest.raises(HardwareModelError, match=r"hardware env|state_from_env"):
            check_model_allowed(sim_env, bad)
    check_model_allowed(sim_env, Leg2RNominalDynamics())  # a model that never touches the env is fine
    check_model_allowed(sim_env, lambda s, a: (s, s[:, 0]))
    pendulum = gym.make("Pendulum-v1")
    check_model_allowed(pendulum, SimulatorModel())  # not hardware: simulator models are allowed
    check_model_allowed(pendulum, pendulum.unwrapped.step)


# ------------------------------------------------------------------------------ wall clock


def run_wall_clock(env, steps: int) -> dict[str, np.ndarray]:
    obs, _ = env.reset(seed=0)
    out: dict[str, list] = {"tick": [], "returned": [], "late": [], "delivery": []}
    for _ in range(steps):
        obs, _, _, truncated, info = env.step(ik_tracking_action(obs, 0.03))
        out["returned"].append(time.perf_counter())
        out["tick"].append(info["tick_time"])
        out["late"].append(info["late"])
        out["delivery"].append(info["delivery_delay"])
        assert not truncated
    return {k: np.asarray(v) for k, v in out.items()}


def test_wall_clock_pacing_and_reset_time():
    """Whatever the machine's load: an observation never comes before its tick, on-time steps are one
    period apart on the schedule, a late step restarts the schedule, resets take their time."""
    env = gym.make("sb3_demo/Leg2R-v0", reset_seconds=0.2, episode_seconds=10.0)
    try:
        start = time.perf_counter()
        env.reset(seed=0)
        assert time.perf_counter() - start >= 0.2
        run = run_wall_clock(env, 60)
        assert np.all(run["returned"] >= run["tick"])
        assert np.all(run["delivery"] >= 0)
        gaps = np.diff(run["tick"])
        on_time = ~run["late"][1:]
        np.testing.assert_allclose(gaps[on_time], 0.008, atol=1e-9)
        assert np.all(gaps[~on_time] > 0.008)
    finally:
        env.close()


def test_wall_clock_jitter_at_realtime_priority():
    """At SCHED_FIFO priority (how a robot's control loop runs; needs the privilege) the env keeps its
    8 ms period: few late steps, and observations arrive about a millisecond after their tick."""
    env = Leg2REnv(realtime=True, reset_seconds=0.05, episode_seconds=10.0)
    saved = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        try:
            for pid in (0, env._process.pid):
                os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(20))
        except PermissionError:
            pytest.skip("no permission for SCHED_FIFO")
        run = run_wall_clock(env, 150)
    finally:
        os.sched_setscheduler(0, *saved)
        env.close()
    intervals = np.diff(run["returned"][1:])  # the period the agent sees
    # Typical steps only: how many steps a shared CI machine makes late is its own business (a quiet
    # machine measured < 2 % late, p99 delivery < 5 ms: benchmarks/results/hardware.md); a fresh-clone run
    # next to a pip install saw 13 %. The pacing rules under any load: test_wall_clock_pacing_and_reset_time.
    assert np.mean(run["late"]) <= 0.3
    assert np.median(run["delivery"]) < 0.004  # 1-2 ms on a quiet machine; a fresh-clone CI run saw 2.07
    assert abs(np.median(intervals) - 0.008) < 2e-4


def test_wall_clock_robot_keeps_moving_and_plant_watchdog_trips():
    # timeout 12 periods: a loaded CI machine can stall a step by a few periods without tripping it
    env = Leg2REnv(realtime=True, watchdog_timeout=0.1, reset_seconds=0.05)
    try:
        env.reset(seed=0)
        for _ in range(10):
            info = env.step(np.array([0.8, -0.8]))[4]
        assert info["watchdog_trips"] == 0
        time.sleep(0.5)  # the agent stalls: the plant's motor drivers fall back to damping
        info = env.step(np.array([0.8, -0.8]))[4]
        assert info["late"] and info["lateness"] > 0.4
        assert info["watchdog_trips"] == 1
    finally:
        env.close()


def test_plant_watchdog_on_the_virtual_clock():
    """Commands slower than the drivers' watchdog timeout trip it between commands: the position loops go
    limp and the leg sags under gravity, where the same commands hold it without the watchdog."""
    hold = np.array([0.7, 0.9])  # thigh forward, knee nearly straight: gravity pulls the hip back
    hips = {}
    for name, timeout in {"off": None, "tripping": 0.001}.items():
        env = Leg2REnv(realtime=False, watchdog_timeout=timeout, compute_delay=0.0, **EXACT)
        try:
            env.reset(seed=0)
            for _ in range(30):
                obs, _, _, _, info = env.step(hold)
            hips[name] = obs[0]
            trips = info["watchdog_trips"]
        finally:
            env.close()
        assert trips == (0 if timeout is None else 30)
    assert hips["off"] > 0.65  # held near the 0.97 rad target
    assert hips["tripping"] < hips["off"] - 0.2


def test_wall_clock_episode_starts_at_the_first_command():
    """SB3's VecEnv resets the env before training between episodes: the robot holds its home pose (no
    watchdog trip) and the episode's clock starts with the first command, not with the reset."""
    env = Leg2REnv(realtime=True, watchdog_timeout=0.03, reset_seconds=0.4, episode_seconds=0.2)
    try:
        obs0, _ = env.reset(seed=0)
        time.sleep(0.3)  # longer than the episode itself
        assert time.perf_counter() - env.last_observation_time < 0.01  # no deadline before the first command
        obs, _, _, truncated, info = env.step(np.zeros(2))
        assert info["episode_restarted"] and not truncated
        assert info["episode_time"] == pytest.approx(0.008)
        assert np.arctan2(obs[6], obs[7]) == pytest.approx(2 * np.pi * 0.008, abs=1e-6)
        assert info["watchdog_trips"] == 0
        np.testing.assert_allclose(obs[:2], obs0[:2], atol=0.02)  # still at home
        steps = 1
        while not truncated:
            truncated = env.step(np.zeros(2))[3]
            steps += 1
        assert steps >= 10  # about 0.2 s of steps (25 when on time), not one step cut short by the wait
    finally:
        env.close()


def test_registered_reward_fn_is_the_env_reward():
    """``reward_fn_for("sb3_demo/Leg2RSim-v0")`` (what a learned model of the leg gets by env id) gives the
    env's own reward from the observations, without latency or noise."""
    from sb3_demo.dynamics.rewards import reward_fn_for, termination_fn_for

    reward_fn = reward_fn_for("sb3_demo/Leg2RSim-v0", strict=True)
    assert reward_fn is not None and termination_fn_for("sb3_demo/Leg2R-v0", strict=True) is None
    env = gym.make("sb3_demo/Leg2RSim-v0", compute_delay=0.0, **EXACT)
    try:
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(20):
            action = rng.uniform(-1, 1, size=2)
            next_obs, reward, *_ = env.step(action)
            predicted = reward_fn(
                th.as_tensor(obs[None]), th.as_tensor(action[None]), th.as_tensor(next_obs[None], dtype=th.float64)
            )
            assert float(predicted[0]) == pytest.approx(float(reward), abs=1e-6)
            obs = next_obs
    finally:
        env.close()
