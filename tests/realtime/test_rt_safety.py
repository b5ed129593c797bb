"""SafetyWrapper: action box, rate limit, non-finite substitution, e-stop, watchdog."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

from sb3_demo.realtime import SafetyWrapper


class RecordingEnv(gym.Env):
    """Observation = the last action received; records step and asynchronous (send_action) commands."""

    metadata = {"render_modes": [], "hardware": True}

    def __init__(self, asynchronous: bool = False) -> None:
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.received: list[np.ndarray] = []
        self.sent: list[tuple[float, np.ndarray]] = []
        if asynchronous:
            self.send_action = self._send_action

    def _send_action(self, action: np.ndarray) -> None:
        self.sent.append((time.perf_counter(), np.asarray(action).copy()))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        a = np.asarray(action, dtype=np.float32)
        self.received.append(a.copy())
        return a, 0.0, False, False, {}


def test_clips_to_a_tighter_box():
    env = SafetyWrapper(RecordingEnv(), action_low=[-0.5, -1.0], action_high=[0.5, 0.2])
    env.reset()
    _, _, _, _, info = env.step(np.array([0.9, 0.9]))
    np.testing.assert_allclose(env.unwrapped.received[-1], [0.5, 0.2])
    np.testing.assert_allclose(info["executed_action"], [0.5, 0.2])
    assert info["safety"]["clipped"] and env.counts["clipped"] == 1
    _, _, _, _, info = env.step(np.array([-2.0, -2.0]))
    np.testing.assert_allclose(info["executed_action"], [-0.5, -1.0])  # the env's own box still applies


def test_rate_limit_per_step():
    env = SafetyWrapper(RecordingEnv(), max_delta=0.25, initial_action=[0.0, 0.0])
    env.reset()
    executed = []
    for target in ([1.0, -1.0], [1.0, -1.0], [1.0, -1.0], [1.0, -1.0], [1.0, -1.0], [0.0, 0.0]):
        executed.append(env.step(np.array(target))[4]["executed_action"])
    executed = np.array(executed)
    np.testing.assert_allclose(executed[:5, 0], [0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(executed[:5, 1], [-0.25, -0.5, -0.75, -1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(executed[5], [0.75, -0.75], atol=1e-6)
    assert np.all(np.abs(np.diff(executed, axis=0)) <= 0.25 + 1e-6)
    assert env.counts["rate_limited"] == 4
    # a new episode starts again from initial_action
    env.reset()
    np.testing.assert_allclose(env.step(np.array([1.0, 1.0]))[4]["executed_action"], [0.25, 0.25])


def test_non_finite_action_becomes_default():
    env = SafetyWrapper(RecordingEnv(), default_action=[0.1, -0.1])
    env.reset()
    _, _, _, _, info = env.step(np.array([np.nan, 0.5]))
    np.testing.assert_allclose(env.unwrapped.received[-1], [0.1, -0.1], atol=1e-6)
    assert info["safety"]["invalid"] and env.counts["invalid"] == 1
    with pytest.raises(ValueError, match="components"):
        env.step(np.zeros(3))


def test_estop_terminates_flags_and_blocks_until_reset():
    env = SafetyWrapper(RecordingEnv(), estop=lambda obs, info: bool(obs[0] > 0.8))
    env.reset()
    _, _, terminated, _, info = env.step(np.array([0.5, 0.0]))
    assert not terminated and "estop" not in info
    _, _, terminated, _, info = env.step(np.array([0.9, 0.0]))
    assert terminated and info["estop"] is True and env.counts["estops"] == 1
    with pytest.raises(RuntimeError, match="e-stop"):
        env.step(np.zeros(2))
    env.reset()
    assert not env.step(np.zeros(2))[2]


def test_watchdog_sends_default_action_when_the_agent_is_late():
    inner = RecordingEnv(asynchronous=True)
    env = SafetyWrapper(inner, watchdog_timeout=0.02, default_action=[0.0, -0.5], max_delta=0.1)
    try:
        env.reset()
        for _ in range(5):  # in time: no watchdog
            env.step(np.zeros(2))
            time.sleep(0.002)
        assert inner.sent == [] and env.counts["watchdog"] == 0
        env.step(np.zeros(2))
        stepped = time.perf_counter()
        time.sleep(0.1)  # the agent stalls
        assert len(inner.sent) == 1  # once per stall, not repeatedly
        sent_at, action = inner.sent[0]
        assert 0.015 <= sent_at - stepped <= 0.08
        np.testing.assert_allclose(action, [0.0, -0.5])
        _, _, _, _, info = env.step(np.array([0.0, 0.5]))
        assert info["safety"]["watchdog"] and env.counts["watchdog"] == 1
        # the rate limit continues from the default action the robot really ran
        np.testing.assert_allclose(info["executed_action"], [0.0, -0.4], atol=1e-6)
    finally:
        env.close()


def test_watchdog_needs_asynchronous_commands_and_bad_settings_raise():
    with pytest.raises(ValueError, match="send_action"):
        SafetyWrapper(RecordingEnv(), watchdog_timeout=0.02)
    with pytest.raises(ValueError, match="max_delta"):
        SafetyWrapper(RecordingEnv(), max_delta=0.0)
    with pytest.raises(ValueError, match="action_high"):
        SafetyWrapper(RecordingEnv(), action_low=0.5, action_high=-0.5)
    with pytest.raises(TypeError, match="estop"):
        SafetyWrapper(RecordingEnv(), estop=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Box"):
        SafetyWrapper(gym.make("CartPole-v1"))


def test_estop_and_rate_limit_on_the_leg():
    """On the fast twin: a hip-angle e-stop ends the episode when the commands drive the thigh too far,
    and the rate limit shapes what the motors receive."""
    from sb3_demo.envs import Leg2REnv

    leg = Leg2REnv(realtime=False)
    env = SafetyWrapper(leg, max_delta=0.1, initial_action=[0.0, 0.0], estop=lambda obs, info: obs[0] > 0.9)
    try:
        env.reset(seed=0)
        executed, terminated, steps, info = [], False, 0, {}
        while not terminated and steps < 100:
            _, _, terminated, _, info = env.step(np.array([1.0, 0.0]))
            executed.append(info["executed_action"][0])
            steps += 1
        assert terminated and info["estop"] is True
        np.testing.assert_allclose(executed[:5], [0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-6)
        assert 6 < steps < 100  # the hip target reaches 0.9 rad only after the ramp
        with pytest.raises(RuntimeError, match="e-stop"):
            env.step(np.zeros(2))
    finally:
        env.close()
