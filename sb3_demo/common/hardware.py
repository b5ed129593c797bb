"""What marks an env as hardware, and the rule that follows: plan through a model, never the env.

Gymnasium only: env modules (and their plant processes) import it without torch or SB3.

A hardware env (a real robot, or a simulated one standing in for it) cannot be cloned, paused or reset
instantly, so a planner must never roll out through the env itself nor through a simulator model that
reads the env's physics state. Mark such envs by subclassing :class:`HardwareEnv` or by setting
``metadata["hardware"] = True``; planners call :func:`check_model_allowed` before using a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np


class HardwareModelError(ValueError):
    """A planner was given the hardware env itself, or a model that reads the env's state, as its model."""


class HardwareEnv(gym.Env):
    """Marker base class of envs that stand for a real robot.

    Subclasses set ``control_period`` (seconds per step) and may implement :meth:`send_action`, an
    asynchronous command outside :meth:`step` (used by the safety layer's watchdog).
    """

    metadata: dict[str, Any] = {"render_modes": [], "hardware": True}
    control_period: float = 0.0

    def send_action(self, action: np.ndarray) -> None:
        """Command ``action`` now, without waiting for the next observation.

        :param action: (act_dim,) in the env's action units
        """
        raise NotImplementedError(f"{type(self).__name__} cannot take asynchronous commands")


def _sub_envs(env: Any) -> list[Any]:
    """The single envs inside a VecEnv (DummyVecEnv's ``envs``), or ``[env]``."""
    envs = getattr(env, "envs", None)
    if isinstance(envs, list | tuple):
        return list(envs)
    return [env]


def _metadata(env: Any) -> list[dict[str, Any]]:
    if hasattr(env, "get_attr") and hasattr(env, "num_envs") and not hasattr(env, "envs"):
        return list(env.get_attr("metadata"))  # SubprocVecEnv
    return [getattr(getattr(e, "unwrapped", e), "metadata", {}) or {} for e in _sub_envs(env)]


def is_hardware_env(env: Any) -> bool:
    """True if ``env`` (a gymnasium env, a wrapper chain or an SB3 VecEnv) stands for a real robot."""
    for e in _sub_envs(env):
        if isinstance(getattr(e, "unwrapped", e), HardwareEnv):
            return True
    return any(bool(m.get("hardware", False)) for m in _metadata(env))


def control_period_of(env: Any) -> float:
    """Seconds per control step of ``env``: its ``control_period``, else its ``dt`` (gymnasium's MuJoCo and
    classic-control envs), else ``1 / metadata["render_fps"]``.

    :raises ValueError: when the env tells none of these
    """
    e = getattr(_sub_envs(env)[0], "unwrapped", _sub_envs(env)[0])
    period = getattr(e, "control_period", None)
    if period:
        return float(period)
    dt = getattr(e, "dt", None)
    if dt:
        return float(dt)
    fps = (getattr(e, "metadata", None) or {}).get("render_fps")
    if fps:
        return 1.0 / float(fps)
    raise ValueError(
        f"cannot derive a control period from {type(e).__name__}: it has no control_period, "
        "metadata['render_fps'] or dt; pass the period (seconds) explicitly"
    )


def _wrapper_chain(env: Any) -> Iterator[Any]:
    for e in _sub_envs(env):
        yield e
        while True:
            inner = getattr(e, "env", None)
            if inner is None or inner is e:
                break
            yield inner
            e = inner
    yield env


def _model_parts(model: Any) -> Iterator[Any]:
    """The model and what it wraps: ``fn`` of a CallableDynamics, the object a bound method belongs to,
    a wrapped ``dynamics``/``model``/``env``."""
    seen: set[int] = set()
    stack = [model]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        for name in ("fn", "__self__", "__func__", "dynamics", "model", "env", "base"):
            try:
                child = getattr(obj, name, None)
            except Exception:  # properties that fail are not parts
                child = None
            if child is not None and not isinstance(child, str | int | float | bool):
                stack.append(child)


def check_model_allowed(env: Any, model: Any) -> None:
    """Refuse, on a hardware env, to plan through the env itself or a simulator model of it.

    Allowed: learned models, analytic/nominal models that never touch the env. Refused: the env (or any
    wrapper of it, or one of its methods), any gymnasium env, and any model with ``state_from_env`` (a
    simulator model that clones the env's physics state).

    :param env: the env the agent acts in (gymnasium env, wrapper or SB3 VecEnv)
    :param model: the planner's dynamics model (or callable)
    :raises HardwareModelError: (a ValueError) when ``env`` is a hardware env and ``model`` is not allowed
    """
    if not is_hardware_env(env):
        return
    env_ids = {id(e) for e in _wrapper_chain(env)}
    env_ids |= {id(getattr(e, "unwrapped", e)) for e in _wrapper_chain(env)}
    hint = (
        "plan through a model instead: the learned ensemble (sb3_demo.dynamics.EnsembleDynamics) or a "
        "nominal model that does not touch the env (e.g. sb3_demo.envs.Leg2RNominalDynamics)"
    )
    for part in _model_parts(model):
        if id(part) in env_ids or isinstance(part, gym.Env) or _is_vec_env(part):
            raise HardwareModelError(
                f"{type(getattr(env, 'unwrapped', env)).__name__} is a hardware env: a real robot cannot be "
                f"cloned, paused or reset, so the planner may not use the env itself as its model; {hint}"
            )
        if hasattr(part, "state_from_env"):
            raise HardwareModelError(
                f"{type(part).__name__} is a simulator model that reads the env's physics state "
                f"(state_from_env), which a hardware env does not allow; {hint}"
            )


def _is_vec_env(obj: Any) -> bool:
    return hasattr(obj, "num_envs") and hasattr(obj, "step_async") and hasattr(obj, "step_wait")
