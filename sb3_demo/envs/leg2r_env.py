"""The agent's side of the simulated 2R leg: a gymnasium env talking to the sealed plant process.

``Leg2REnv(realtime=True)`` (``sb3_demo/Leg2R-v0``) behaves like the real robot: each :meth:`step`
sends the command as soon as it is called, then waits for the next tick of the wall-clock control
period and returns the observation sampled then; being late is not forgiven (the robot kept moving
under the previous command, and the late step is flagged in ``info``); resets take ``reset_seconds`` of
wall-clock time, after which the robot holds its home pose until the first command; an episode lasts
``episode_seconds`` from its first command (or from the end of the reset when that command comes within
a period).

``Leg2REnv(realtime=False)`` (``sb3_demo/Leg2RSim-v0``) is its fast simulation-only twin: the same plant
process driven by a virtual clock (the agent's computation takes ``compute_delay`` virtual seconds), so
it runs as fast as the physics allows, for tests and quick experiments.

Either way the physics lives in another process: this object holds a pipe and nothing else of the plant,
and the plant answers only ``reset``, ``act``, ``observe`` and ``close``.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_demo.common.hardware import HardwareEnv
from sb3_demo.envs.leg2r_model import ACT_DIM, OBS_DIM, LegParameters
from sb3_demo.envs.leg2r_plant import WATCHDOG_MODES, PlantConfig

# default sensor noise standard deviations: encoders, differentiated velocities, rail encoder
DEFAULT_SENSOR_NOISE = (0.002, 0.002, 0.05, 0.05, 0.001, 0.01)
PLANT_START_TIMEOUT = 60.0  # s
SPIN_SECONDS = 0.0005  # the last part of a wait is spent spinning, for a precise tick


def sleep_until(deadline: float) -> None:
    """Wait until ``time.perf_counter() >= deadline`` (sleep, then spin the last half millisecond)."""
    remaining = deadline - time.perf_counter()
    if remaining > SPIN_SECONDS:
        time.sleep(remaining - SPIN_SECONDS)
    while time.perf_counter() < deadline:
        pass


class Leg2REnv(HardwareEnv):
    """A planar 2R leg on a vertical slider tracking a foot trajectory (see :mod:`sb3_demo.envs.leg2r_model`).

    :param realtime: step at the wall-clock control period (True) or on a virtual clock (False)
    :param control_period: s per step (default 8 ms, 125 Hz)
    :param episode_seconds: episode length; the episode is truncated once this much time has passed
    :param reset_seconds: how long a reset (homing the leg) takes
    :param observation_latency: s, age of the sensor readings in an observation
    :param action_latency: s, delay between sending a command and the motors applying it
    :param sensor_noise: scale of the default sensor noise (0 = none), or 6 standard deviations for
        ``[q_hip, q_knee, dq_hip, dq_knee, rail_height, rail_velocity]``
    :param mass_scale: plant masses / nominal masses
    :param friction_scale: plant frictions and dampings / nominal ones
    :param watchdog_timeout: s without a command after which the motor drivers fall back to
        ``watchdog_mode`` (default: 5 control periods; None disables it)
    :param watchdog_mode: ``"damp"`` or ``"home"``
    :param compute_delay: virtual clock only: seconds of (virtual) computation between an observation
        and the command computed from it
    :param render_mode: unused (the robot has no renderer)
    """

    metadata: dict[str, Any] = {"render_modes": [], "render_fps": 125, "hardware": True, "realtime": True}

    def __init__(
        self,
        realtime: bool = True,
        control_period: float = 0.008,
        episode_seconds: float = 4.0,
        reset_seconds: float = 0.5,
        observation_latency: float = 0.002,
        action_latency: float = 0.001,
        sensor_noise: float | tuple[float, ...] = 1.0,
        mass_scale: float = 1.1,
        friction_scale: float = 1.3,
        watchdog_timeout: float | str | None = "auto",
        watchdog_mode: str = "damp",
        compute_delay: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if not (math.isfinite(control_period) and control_period > 0):
            raise ValueError(f"control_period must be a finite number of seconds > 0, got {control_period}")
        if not (math.isfinite(episode_seconds) and episode_seconds >= control_period):
            raise ValueError(f"episode_seconds must be >= control_period ({control_period}), got {episode_seconds}")
        if not (math.isfinite(compute_delay) and 0 <= compute_delay):
            raise ValueError(f"compute_delay must be a finite number of seconds >= 0, got {compute_delay}")
        if isinstance(sensor_noise, int | float):
            if not (math.isfinite(sensor_noise) and sensor_noise >= 0):
                raise ValueError(f"sensor_noise must be a scale >= 0 or 6 standard deviations, got {sensor_noise}")
            noise = tuple(float(sensor_noise) * s for s in DEFAULT_SENSOR_NOISE)
        else:
            noise = tuple(float(s) for s in sensor_noise)
        if watchdog_timeout == "auto":
            watchdog_timeout = 5 * control_period
        elif isinstance(watchdog_timeout, str):
            raise ValueError(f"watchdog_timeout must be seconds, None or 'auto', got {watchdog_timeout!r}")
        if watchdog_mode not in WATCHDOG_MODES:
            raise ValueError(f"watchdog_mode must be one of {list(WATCHDOG_MODES)}, got {watchdog_mode!r}")

        self.realtime = bool(realtime)
        self.control_period = float(control_period)
        self.episode_seconds = float(episode_seconds)
        self.reset_seconds = float(reset_seconds)
        self.compute_delay = float(compute_delay)
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "realtime": self.realtime, "render_fps": 1.0 / control_period}
        self.mass_scale = float(mass_scale)
        self.friction_scale = float(friction_scale)
        config = PlantConfig(
            params=LegParameters().with_mismatch(mass_scale, friction_scale),
            observation_latency=float(observation_latency),
            action_latency=float(action_latency),
            sensor_noise=noise,
            watchdog_timeout=watchdog_timeout,
            watchdog_mode=watchdog_mode,
            reset_seconds=float(reset_seconds),
        )

        high = np.full(OBS_DIM, np.inf, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(ACT_DIM,), dtype=np.float32)

        self._lock = threading.Lock()
        self._closed = False
        self._virtual_time = 0.0
        self._tick = 0.0  # time of the latest observation
        self._returned_at = time.perf_counter()  # wall time the latest observation was returned
        self._episode_start = 0.0
        self._needs_reset = True
        self._first_step = True
        self._previous_action = np.zeros(ACT_DIM)
        # the plant runs in its own interpreter (not a multiprocessing child: no re-import of the user's
        # main module), talking over one end of a socket pair it inherits
        parent_sock, child_sock = socket.socketpair()
        child_env = dict(os.environ)  # the child finds this very sb3_demo, installed or not
        package_root = str(Path(__file__).resolve().parents[2])
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, child_env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sb3_demo.envs.leg2r_plant", str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            env=child_env,
        )
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._conn.send(config.to_dict())
        if not self._conn.poll(PLANT_START_TIMEOUT):
            self._kill_plant()
            raise RuntimeError(f"the leg's plant process did not start within {PLANT_START_TIMEOUT} s")
        status, message = self._conn.recv()
        if status != "ready":
            self._kill_plant()
            raise ValueError(f"the leg's plant could not start: {message}")

    # ------------------------------------------------------------------ plumbing

    def _now(self) -> float:
        return time.perf_counter() if self.realtime else self._virtual_time

    def _request(self, *request: Any) -> Any:
        if self._closed:
            raise RuntimeError("the env is closed")
        with self._lock:
            self._conn.send(request)
            status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the leg's plant refused {request[0]!r}: {payload}")
        return payload

    def _send_action(self, action: np.ndarray, t: float) -> None:
        if self._closed:
            raise RuntimeError("the env is closed")
        with self._lock:
            self._conn.send(("act", action, t))

    def _observation(self, reading: dict[str, Any]) -> np.ndarray:
        s = reading["sensors"]
        phase = reading["phase"]
        return np.array([*s[:6], math.sin(phase), math.cos(phase), *self._previous_action], dtype=np.float32)

    def _check_action(self, action: Any) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACT_DIM,):
            raise ValueError(f"the leg takes {ACT_DIM} actions (hip, knee targets), got shape {np.shape(action)}")
        if not np.isfinite(a).all():
            raise ValueError(f"actions must be finite, got {a.tolist()} (wrap the env in SafetyWrapper to substitute)")
        return np.clip(a, -1.0, 1.0)

    @property
    def last_observation_time(self) -> float:
        """``time.perf_counter()`` of the latest observation: the start of the current control step, from
        which a planner's deadline counts (the tick on the wall clock, or now while the robot holds its
        pose after a reset, waiting for its first command; on the virtual clock, the wall time at which the
        observation was returned)."""
        if not self.realtime:
            return self._returned_at
        if self._first_step and not self._needs_reset:
            return time.perf_counter()  # holding after a reset: the first command has no deadline yet
        return self._tick

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Home the leg; takes ``reset_seconds`` (of wall-clock time when ``realtime``)."""
        super().reset(seed=seed)
        start = self._now()
        reading = self._request("reset", start, seed)
        self._episode_start = start + self.reset_seconds
        if self.realtime:
            sleep_until(self._episode_start)
        else:
            self._virtual_time = self._episode_start
        self._tick = self._episode_start
        self._previous_action = np.zeros(ACT_DIM)
        self._needs_reset = False
        self._first_step = True
        self._returned_at = time.perf_counter()
        info = {
            "tick_time": self._tick,
            "reset_seconds": self.reset_seconds,
            "watchdog_trips": reading["watchdog_trips"],
        }
        return self._observation(reading), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode ended or never started)")
        a = self._check_action(action)
        if self.realtime:
            sent_at = time.perf_counter()
        else:
            sent_at = self._tick + min(self.compute_delay, self.control_period)
        self._previous_action = a
        restart = None
        if self.realtime and self._first_step and sent_at > self._tick + self.control_period:
            # the first command came more than a period after the reset (e.g. SB3 trained between episodes
            # after its VecEnv reset the env): the robot held its home pose, the episode starts now
            restart = self._episode_start = self._tick = sent_at
        self._first_step = False
        next_tick = self._tick + self.control_period
        lateness = max(0.0, sent_at - next_tick)
        if self.realtime:
            if lateness > 0:
                next_tick = sent_at  # missed the tick: the robot ran on the old command until now
            sleep_until(next_tick)
        else:
            self._virtual_time = next_tick
        # one round trip per step: the command carries the time it was sent, and the plant (which integrates
        # lazily, up to each request) applies it from then on, exactly as if it had arrived at that time
        reading = self._request("step", a, sent_at, next_tick, restart)
        delivery_delay = time.perf_counter() - next_tick if self.realtime else 0.0
        period = next_tick - self._tick
        self._tick = next_tick
        elapsed = self._tick - self._episode_start
        truncated = elapsed >= self.episode_seconds - 0.5 * self.control_period
        self._needs_reset = truncated
        info = {
            "tick_time": self._tick,
            "step_period": period,
            "late": lateness > 0,
            "lateness": lateness,
            "delivery_delay": delivery_delay,
            "episode_restarted": restart is not None,
            "episode_time": elapsed,
            "executed_action": a.astype(np.float32),
            "watchdog_tripped": reading["watchdog_tripped"],
            "watchdog_trips": reading["watchdog_trips"],
        }
        self._returned_at = time.perf_counter()
        return self._observation(reading), float(reading["reward"]), False, truncated, info

    def send_action(self, action: np.ndarray) -> None:
        """Command ``action`` now without waiting for a tick (the safety watchdog's default action).
        Only on the wall-clock env: the virtual clock has no "now" between steps."""
        if not self.realtime:
            raise RuntimeError("send_action needs the wall-clock env (realtime=True)")
        a = self._check_action(action)
        self._send_action(a, time.perf_counter())
        self._previous_action = a

    def _kill_plant(self) -> None:
        self._closed = True
        self._conn.close()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=5.0)

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        try:
            if self._process.poll() is None:
                self._request("close")
        except (BrokenPipeError, EOFError, OSError, RuntimeError):
            pass
        self._closed = True
        self._conn.close()
        try:
            self._process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=2.0)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
