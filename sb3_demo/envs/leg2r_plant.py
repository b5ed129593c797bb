"""The leg's plant: the MuJoCo physics the agent must not touch, and the server loop that seals it in its
own process.

The plant is *event driven*: it integrates its physics lazily, up to the time of each request, applying
every command at the time it takes effect (its arrival time plus the action latency) and reading sensors
at the time they were sampled (the request time minus the observation latency). With wall-clock
timestamps this is exactly a robot that keeps moving between requests, with held commands, whatever the
agent does; with virtual timestamps it is the fast simulation-only twin. Nothing here imports torch,
gymnasium or SB3, so the plant process starts quickly.

The server understands these requests and nothing else (in particular, no way to read or set the physics
state): ``("reset", time, seed)``, ``("act", action, time)`` (no reply), ``("observe", time)``,
``("step", action, sent_time, observe_time[, episode_start])`` (an act and an observe in one round trip,
optionally restarting the episode clock) and ``("close",)``.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import mujoco
import numpy as np

from sb3_demo.envs.leg2r_model import (
    GAIT_FREQUENCY,
    HOME_ACTION,
    LegParameters,
    action_to_targets,
    leg_mjcf,
    tracking_reward_scalar,
)

WATCHDOG_MODES = ("damp", "home")
# longest stretch of unobserved time the plant integrates when catching up; beyond it the plant only
# integrates the last MAX_CATCH_UP seconds (the leg has settled under its held command by then)
MAX_CATCH_UP = 1.0
# while the homing routine holds the leg after a reset (at rest), only this much of a longer wait is
# integrated: the state does not change, and the first command's reply should not wait for the catch-up
MAX_HOLD_CATCH_UP = 0.05
# qpos = [rail, hip, knee], qvel likewise -> [q_hip, q_knee, dq_hip, dq_knee, rail_height, rail_velocity]
_SENSOR_ORDER = np.array([1, 2, 4, 5, 0, 3])


@dataclass
class PlantConfig:
    """Everything the plant process needs to build the leg (plain data, sent to the child process).

    :param params: the *true* physical parameters (nominal ones with the mismatch applied)
    :param observation_latency: s, age of the sensor readings an observation reports
    :param action_latency: s, delay between a command's arrival and its effect on the motors
    :param sensor_noise: standard deviations of the Gaussian noise on ``[q_hip, q_knee, dq_hip,
        dq_knee, rail_height, rail_velocity]``
    :param watchdog_timeout: s without a command after which the motor drivers fall back to
        ``watchdog_mode``; None disables the plant's watchdog
    :param watchdog_mode: ``"damp"`` (position loops off, joints damped: the usual driver fault state)
        or ``"home"`` (drive to the home pose)
    :param reset_seconds: s the homing of a reset takes (plant time)
    :param home_noise: rad, half-width of the uniform perturbation of the home pose at each reset
    """

    params: LegParameters = field(default_factory=LegParameters)
    observation_latency: float = 0.0
    action_latency: float = 0.0
    sensor_noise: tuple[float, ...] = (0.0,) * 6
    watchdog_timeout: float | None = None
    watchdog_mode: str = "damp"
    reset_seconds: float = 0.5
    home_noise: float = 0.1

    def __post_init__(self) -> None:
        for name in ("observation_latency", "action_latency", "reset_seconds", "home_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if len(self.sensor_noise) != 6 or not all(math.isfinite(s) and s >= 0 for s in self.sensor_noise):
            raise ValueError(f"sensor_noise must be 6 finite standard deviations >= 0, got {self.sensor_noise}")
        if self.watchdog_timeout is not None and not (self.watchdog_timeout > 0):
            raise ValueError(f"watchdog_timeout must be > 0 seconds or None, got {self.watchdog_timeout}")
        if self.watchdog_mode not in WATCHDOG_MODES:
            raise ValueError(f"watchdog_mode must be one of {list(WATCHDOG_MODES)}, got {self.watchdog_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlantConfig:
        d = dict(d)
        d["params"] = LegParameters(**d["params"])
        d["sensor_noise"] = tuple(d["sensor_noise"])
        return cls(**d)


class Leg2RPlant:
    """The true leg. Times are absolute seconds on whatever clock the caller uses (wall or virtual),
    non-decreasing across calls.

    :param config: the plant's configuration
    """

    def __init__(self, config: PlantConfig) -> None:
        self.config = config
        self._model = mujoco.MjModel.from_xml_string(leg_mjcf(config.params))
        self._data = mujoco.MjData(self._model)
        self._dt = float(self._model.opt.timestep)
        self._kp = self._model.actuator_gainprm[:, 0].copy()
        self._rng = np.random.default_rng()
        self._time: float | None = None  # plant clock of the physics state
        self._episode_start = 0.0
        self._pending: deque[tuple[float, np.ndarray]] = deque()  # (apply time, action)
        self._last_command_time = 0.0
        self._watchdog_tripped = False
        self._watchdog_trips = 0
        self._holding = False  # after a reset, until the first command: the homing routine holds the pose
        history = math.ceil(config.observation_latency / self._dt) + 2
        self._history_span = (history + 1) * self._dt  # only the steps an observation may read are kept
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=history)  # (time, sensor values)

    # ------------------------------------------------------------------ motors

    def _set_targets(self, action: np.ndarray) -> None:
        self._data.ctrl[:] = action_to_targets(action)

    def _set_position_loops(self, on: bool) -> None:
        gain = self._kp if on else np.zeros_like(self._kp)
        self._model.actuator_gainprm[:, 0] = gain
        self._model.actuator_biasprm[:, 1] = -gain

    def _trip_watchdog(self) -> None:
        self._watchdog_tripped = True
        self._watchdog_trips += 1
        if self.config.watchdog_mode == "damp":
            self._set_position_loops(False)
        else:
            self._set_targets(np.asarray(HOME_ACTION))

    # ------------------------------------------------------------------ physics

    def _sensors(self) -> np.ndarray:
        """The true ``[q_hip, q_knee, dq_hip, dq_knee, rail_height, rail_velocity]``."""
        return np.concatenate((self._data.qpos, self._data.qvel))[_SENSOR_ORDER]

    def _advance_to(self, t: float) -> None:
        assert self._time is not None
        catch_up = MAX_HOLD_CATCH_UP if self._holding else MAX_CATCH_UP
        if t - self._time > catch_up:
            self._time = t - catch_up
        timeout = self.config.watchdog_timeout
        while self._time + 0.5 * self._dt <= t:
            while self._pending and self._pending[0][0] <= self._time + 0.5 * self._dt:
                _, action = self._pending.popleft()
                if self._watchdog_tripped:
                    self._watchdog_tripped = False
                    self._set_position_loops(True)
                self._set_targets(action)
            if timeout is not None and not (self._watchdog_tripped or self._holding or self._pending):
                if self._time - self._last_command_time > timeout:
                    self._trip_watchdog()
            mujoco.mj_step(self._model, self._data)
            self._time += self._dt
            if t - self._time <= self._history_span:
                self._history.append((self._time, self._sensors()))

    def _reading(self, t: float) -> np.ndarray:
        """Sensor values sampled at ``t - observation_latency`` (the newest physics step not after it)."""
        sample_time = t - self.config.observation_latency
        reading = self._history[0][1]
        for time_i, values in self._history:
            if time_i <= sample_time + 0.5 * self._dt:
                reading = values
            else:
                break
        noise = self._rng.normal(size=6) * np.asarray(self.config.sensor_noise)
        return reading + noise

    # ------------------------------------------------------------------ requests

    def reset(self, t: float, seed: int | None = None) -> dict[str, Any]:
        """Home the leg: ``reset_seconds`` of driving to a (slightly perturbed) home pose, starting at ``t``;
        the episode starts when homing ends.

        :return: the first observation (see :meth:`observe`), taken at the episode start
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self._time is None:  # first power-up: start near home, at rest on the rail stop
            mujoco.mj_resetData(self._model, self._data)
            home = action_to_targets(np.asarray(HOME_ACTION))
            self._data.qpos[1:] = home + self._rng.uniform(-0.3, 0.3, size=2)
            mujoco.mj_forward(self._model, self._data)
            self._time = t
        else:
            self._advance_to(t)
            self._time = max(self._time, t)
        self._pending.clear()
        self._watchdog_tripped = False
        self._holding = False  # the homing itself is integrated in full
        self._set_position_loops(True)
        home = np.asarray(HOME_ACTION) + self._rng.uniform(-1, 1, size=2) * self.config.home_noise
        self._set_targets(home)
        start = t + self.config.reset_seconds
        self._last_command_time = start  # the homing routine counts as a command stream
        self._history.clear()
        self._history.append((self._time, self._sensors()))
        self._advance_to(start)
        self._holding = True
        self._episode_start = start
        return self.observe(start)

    def act(self, action: np.ndarray, t: float) -> None:
        """A command arriving at ``t``; it reaches the motors at ``t + action_latency``."""
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        if self._time is None:
            raise RuntimeError("the plant must be reset before it takes commands")
        self._advance_to(t)  # the present is known: integrate it now, off the next observation's path
        self._last_command_time = t
        self._holding = False
        apply_at = t + self.config.action_latency
        if self._pending and apply_at < self._pending[-1][0]:
            apply_at = self._pending[-1][0]
        self._pending.append((apply_at, action))

    def restart_episode(self, t: float) -> None:
        """Start the episode (phase 0) at ``t``: the agent's first command came later than one period after
        the reset, and the robot held its home pose until then."""
        self._episode_start = float(t)

    def observe(self, t: float) -> dict[str, Any]:
        """Integrate up to ``t`` and report what the robot senses then.

        :return: ``sensors`` (6,) noisy, delayed ``[q, dq, rail_height, rail_velocity]``; ``phase`` (rad) of
            the reference at ``t``; ``reward`` the true tracking reward at ``t``; ``watchdog_tripped``;
            ``watchdog_trips`` since power-up; ``plant_time``
        """
        if self._time is None:
            raise RuntimeError("the plant must be reset before it is observed")
        self._advance_to(t)
        phase = 2.0 * math.pi * GAIT_FREQUENCY * (t - self._episode_start)
        true_q = self._data.qpos[1:3].copy()
        return {
            "sensors": self._reading(t),
            "phase": phase,
            "reward": tracking_reward_scalar(true_q[0], true_q[1], phase),
            "watchdog_tripped": self._watchdog_tripped,
            "watchdog_trips": self._watchdog_trips,
            "plant_time": self._time,
        }


def serve(conn: Connection) -> None:
    """The plant process's loop: read the configuration, then answer requests on ``conn`` until
    ``("close",)`` or a broken connection (the agent's process ended)."""
    try:
        plant = Leg2RPlant(PlantConfig.from_dict(conn.recv()))
        conn.send(("ready", None))
    except Exception as exc:  # report construction errors to the agent side
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    deferred_error: str | None = None  # an "act" has no reply: its error answers the next request
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        kind = request[0] if isinstance(request, tuple) and request else None
        try:
            if kind == "act":
                try:
                    plant.act(request[1], request[2])
                except Exception as exc:
                    deferred_error = f"{type(exc).__name__}: {exc}"
                continue
            if deferred_error is not None:
                conn.send(("error", deferred_error))
                deferred_error = None
            elif kind == "step":
                if len(request) > 4 and request[4] is not None:
                    plant.restart_episode(request[4])
                plant.act(request[1], request[2])
                conn.send(("ok", plant.observe(request[3])))
            elif kind == "observe":
                conn.send(("ok", plant.observe(request[1])))
            elif kind == "reset":
                conn.send(("ok", plant.reset(request[1], request[2])))
            elif kind == "close":
                conn.send(("ok", None))
                return
            else:
                conn.send(
                    (
                        "error",
                        f"unknown request {kind!r}: the plant only accepts reset, act, observe, step, close",
                    )
                )
        except Exception as exc:
            try:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            except (BrokenPipeError, OSError):
                return


def main(argv: list[str] | None = None) -> None:
    """Entry point of the plant process: ``python -m sb3_demo.envs.leg2r_plant FD`` where ``FD`` is the
    child's end of a socket pair inherited from the agent's process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        raise SystemExit("usage: python -m sb3_demo.envs.leg2r_plant FD")
    serve(Connection(int(args[0])))


if __name__ == "__main__":
    main()
