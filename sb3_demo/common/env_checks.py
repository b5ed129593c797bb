"""Checks of what an env returns, made before a transition is stored."""

from __future__ import annotations

from typing import Any

import numpy as np


def _first_bad_env(values: Any, n_envs: int) -> int | None:
    """The first env index whose entries are not all finite, or None."""
    if isinstance(values, dict):  # Dict observations
        bad = [i for v in values.values() if (i := _first_bad_env(v, n_envs)) is not None]
        return min(bad) if bad else None
    arr = np.asarray(values)
    if not np.issubdtype(arr.dtype, np.number):
        return None
    finite = np.isfinite(arr.reshape(n_envs, -1)).all(axis=1)
    return None if finite.all() else int(np.flatnonzero(~finite)[0])


def check_finite_step(new_obs: Any, rewards: Any, infos: list[dict[str, Any]], step: int) -> None:
    """Raise a clear error if an env returned a NaN or inf observation or reward at this step.

    Called before the transition is stored, so that the replay buffer keeps only what came before.

    :param new_obs: (n_envs, ...) the observations ``VecEnv.step`` returned (or a dict of them)
    :param rewards: (n_envs,) the rewards
    :param infos: the infos, whose ``terminal_observation`` entries are checked too
    :param step: the vec-env step count (``VecEnv.step`` calls since training began), for the message
    :raises ValueError: naming the env index, the step and what was not finite
    """
    n_envs = len(infos)
    for what, values in (("observation", new_obs), ("reward", rewards)):
        env = _first_bad_env(values, n_envs)
        if env is not None:
            _raise(env, step, what)
    for env, info in enumerate(infos):
        terminal = info.get("terminal_observation")
        if (
            terminal is not None
            and _first_bad_env(terminal if isinstance(terminal, dict) else [terminal], 1) is not None
        ):
            _raise(env, step, "terminal observation")


def _raise(env: int, step: int, what: str) -> None:
    raise ValueError(
        f"env {env} returned a NaN or inf {what} at step {step}; nothing of this step was stored (the replay "
        "buffer keeps the earlier transitions). Check the env (stable_baselines3's VecCheckNan wrapper finds "
        "the first step and action that produce it)"
    )
