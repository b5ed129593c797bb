"""The safety layer between an agent and a (real or simulated) robot.

:class:`SafetyWrapper` enforces, on every step:

- an action box (clipping, tighter than the env's own box if wanted),
- an action-rate limit (the largest change per step),
- a substitute action for non-finite commands (a NaN from a diverged policy never reaches the motors),
- an optional e-stop predicate: when it fires the episode terminates with ``info["estop"] = True`` and the
  robot is sent the default action; stepping again before :meth:`reset` raises,
- an optional watchdog: if the next action does not arrive within ``watchdog_timeout`` seconds of the
  previous observation, the default action is sent to the robot asynchronously (envs with
  ``send_action``, such as the wall-clock leg).

The action that really ran is reported as ``info["executed_action"]``; store that one in the replay
buffer (:class:`~sb3_demo.realtime.ExecutedActionCallback` does it for SB3 off-policy algorithms).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

EStop = Callable[[np.ndarray, dict[str, Any]], bool]


class Watchdog:
    """Call ``on_timeout`` from a background thread when :meth:`arm` is not followed by :meth:`disarm`
    within ``timeout`` seconds.

    :param timeout: seconds
    :param on_timeout: called (in the watchdog's thread) once per expiry
    """

    def __init__(self, timeout: float, on_timeout: Callable[[], None]) -> None:
        self.timeout = float(timeout)
        self.on_timeout = on_timeout
        self._cv = threading.Condition()
        self._deadline: float | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sb3_demo-watchdog", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        with self._cv:
            self._deadline = time.perf_counter() + self.timeout
            self._cv.notify()

    def disarm(self) -> None:
        with self._cv:
            self._deadline = None
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stopped = True
            self._deadline = None
            self._cv.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._stopped:
                    return
                if self._deadline is None:
                    self._cv.wait()
                    continue
                remaining = self._deadline - time.perf_counter()
                if remaining > 0:
                    self._cv.wait(remaining)
                    continue
                self._deadline = None
            self.on_timeout()


def _as_bound(name: str, value: Any, dim: int, default: np.ndarray) -> np.ndarray:
    if value is None:
        return default.astype(np.float64).copy()
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (dim,)).copy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


class SafetyWrapper(gym.Wrapper):
    """Action box, action-rate limit, e-stop and watchdog around a continuous-action env.

    :param env: the env (Box action space)
    :param action_low: lower bound of executed actions (default: the env's); scalar or (A,)
    :param action_high: upper bound (default: the env's)
    :param max_delta: largest change of each action component from one step to the next (env units);
        scalar or (A,); None for no rate limit
    :param initial_action: the previous action assumed at the first step of an episode (for the rate
        limit); None: the first step is not rate-limited
    :param estop: ``estop(obs, info) -> bool`` checked after every step
    :param watchdog_timeout: seconds allowed between an observation and the next action before the default
        action is sent (needs an env with ``send_action``); None disables it
    :param default_action: the safe action (watchdog, e-stop, non-finite commands); default: the middle of
        the action box
    """

    def __init__(
        self,
        env: gym.Env,
        action_low: Any = None,
        action_high: Any = None,
        max_delta: Any = None,
        initial_action: Any = None,
        estop: EStop | None = None,
        watchdog_timeout: float | None = None,
        default_action: Any = None,
    ) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise TypeError(f"SafetyWrapper needs a Box action space, got {type(space).__name__}")
        dim = int(np.prod(space.shape))
        self._shape = space.shape
        env_low = np.broadcast_to(space.low, space.shape).reshape(-1).astype(np.float64)
        env_high = np.broadcast_to(space.high, space.shape).reshape(-1).astype(np.float64)
        low = _as_bound("action_low", action_low, dim, env_low)
        high = _as_bound("action_high", action_high, dim, env_high)
        low, high = np.maximum(low, env_low), np.minimum(high, env_high)
        if not (high >= low).all():
            raise ValueError(f"action_high must be >= action_low, got low={low.tolist()}, high={high.tolist()}")
        self.action_low, self.action_high = low, high
        if max_delta is not None:
            delta = np.broadcast_to(np.asarray(max_delta, dtype=np.float64), (dim,)).copy()
            if not (np.isfinite(delta).all() and (delta > 0).all()):
                raise ValueError(f"max_delta must be finite and > 0, got {delta.tolist()}")
            self.max_delta: np.ndarray | None = delta
        else:
            self.max_delta = None
        default = (
            (low + high) / 2.0 if default_action is None else _as_bound("default_action", default_action, dim, low)
        )
        self.default_action = np.clip(default, low, high)
        self.initial_action = (
            None
            if initial_action is None
            else np.clip(_as_bound("initial_action", initial_action, dim, low), low, high)
        )
        if estop is not None and not callable(estop):
            raise TypeError(f"estop must be a callable estop(obs, info) -> bool, got {type(estop).__name__}")
        self.estop = estop
        self._watchdog: Watchdog | None = None
        if watchdog_timeout is not None:
            if not (
                isinstance(watchdog_timeout, int | float) and math.isfinite(watchdog_timeout) and watchdog_timeout > 0
            ):
                raise ValueError(f"watchdog_timeout must be a number of seconds > 0 or None, got {watchdog_timeout!r}")
            if not callable(getattr(env.unwrapped, "send_action", None)):
                raise ValueError(
                    "watchdog_timeout needs an env that takes asynchronous commands (send_action), such as "
                    f"the wall-clock leg sb3_demo/Leg2R-v0; {type(env.unwrapped).__name__} has none"
                )
            self._watchdog = Watchdog(watchdog_timeout, self._on_watchdog)
        self._command_lock = threading.Lock()
        self._generation = 0  # steps taken; lets a watchdog expiry that raced a step stand down
        self._armed_generation = 0
        self._watchdog_fired = False
        self._previous: np.ndarray | None = self.initial_action
        self._estopped = False
        self.counts = {"clipped": 0, "rate_limited": 0, "invalid": 0, "estops": 0, "watchdog": 0}

    # ------------------------------------------------------------------ watchdog

    def _on_watchdog(self) -> None:
        with self._command_lock:
            if self._generation != self._armed_generation or self._estopped:
                return  # a step got in first
            try:
                self.env.unwrapped.send_action(self.default_action.reshape(self._shape))  # type: ignore[attr-defined]
            except Exception:
                return  # the env is closing; nothing to protect any more
            self._watchdog_fired = True
            self._previous = self.default_action.copy()
            self.counts["watchdog"] += 1

    def _arm(self) -> None:
        if self._watchdog is not None:
            self._armed_generation = self._generation
            self._watchdog.arm()

    # ------------------------------------------------------------------ filtering

    def filter_action(self, action: Any) -> tuple[np.ndarray, dict[str, bool]]:
        """The action the wrapper would execute (without stepping), and what it changed.

        :return: the executed action (A,) and flags ``invalid``, ``clipped``, ``rate_limited``
        """
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.size != self.action_low.size:
            raise ValueError(f"action must have {self.action_low.size} components, got shape {np.shape(action)}")
        flags = {"invalid": False, "clipped": False, "rate_limited": False}
        if not np.isfinite(a).all():
            flags["invalid"] = True
            a = self.default_action.copy()
        clipped = np.clip(a, self.action_low, self.action_high)
        flags["clipped"] = bool(np.any(clipped != a))
        a = clipped
        if self.max_delta is not None and self._previous is not None:
            limited = np.clip(a, self._previous - self.max_delta, self._previous + self.max_delta)
            limited = np.clip(limited, self.action_low, self.action_high)
            flags["rate_limited"] = bool(np.any(limited != a))
            a = limited
        return a, flags

    # ------------------------------------------------------------------ gymnasium API

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._estopped:
            raise RuntimeError("the e-stop tripped: call reset() before stepping again")
        with self._command_lock:
            self._generation += 1
            if self._watchdog is not None:
                self._watchdog.disarm()
            watchdog_fired, self._watchdog_fired = self._watchdog_fired, False
            a, flags = self.filter_action(action)
            for key, value in flags.items():
                self.counts[key] += int(value)
            obs, reward, terminated, truncated, info = self.env.step(a.reshape(self._shape).astype(np.float32))
            self._previous = a
        info = dict(info)
        info["executed_action"] = a.reshape(self._shape).astype(np.float32)
        info["safety"] = {**flags, "watchdog": watchdog_fired}
        if self.estop is not None and self.estop(obs, info):
            self._estopped = True
            self.counts["estops"] += 1
            info["estop"] = True
            terminated = True
            send = getattr(self.env.unwrapped, "send_action", None)
            if callable(send) and getattr(self.env.unwrapped, "realtime", True):
                send(self.default_action.reshape(self._shape))
        elif not (terminated or truncated):
            self._arm()
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        with self._command_lock:
            self._generation += 1
            if self._watchdog is not None:
                self._watchdog.disarm()
            self._estopped = False
            self._watchdog_fired = False
            self._previous = None if self.initial_action is None else self.initial_action.copy()
            obs, info = self.env.reset(seed=seed, options=options)
        self._arm()
        return obs, info

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
        super().close()
