"""When the planner acts and when a learned model is fitted, and the fit itself on an SB3 replay buffer.

:class:`DeMoSchedule` is shared by DeMoSAC/DeMoTD3, :class:`~sb3_demo.wrappers.DeMoCallback` and DeMoARS.
:func:`transitions_from_buffer` turns an SB3 replay buffer into the arrays the dynamics models' ``fit``
takes (the dynamics layer knows nothing of SB3).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_demo.checks import check_int

# a learned model is first fitted once this many real transitions are stored
MIN_MODEL_TRANSITIONS = 10

# the fit settings a user leaves out: early stopping as in the reference, capped at 500 gradient steps per
# fit (fits are warm-started; an uncapped fit on a small buffer runs for hundreds of epochs);
# ``max_grad_steps=None`` removes the cap
DEFAULT_MODEL_FIT_KWARGS: dict[str, Any] = {"max_grad_steps": 500}


def started(
    num_timesteps: int, start: int | None, learning_starts: int, learned_model: bool, model_fitted: bool
) -> bool:
    """Whether a model-driven part (the planner acting, branched rollouts) runs now: never before a learned
    model's first fit, then from ``start`` (None: at once for a fitted learned model, at ``learning_starts``
    for other models).

    :param num_timesteps: env steps so far
    :param start: env steps before the part runs (None: the rule above)
    :param learning_starts: the agent's ``learning_starts``
    :param learned_model: the model is learned (it must have been fitted)
    :param model_fitted: the learned model has been fitted at least once
    """
    if learned_model and not model_fitted:
        return False
    if start is None:
        start = 0 if learned_model else learning_starts
    return num_timesteps >= start


@dataclass(frozen=True)
class DeMoSchedule:
    """When the planner acts and when a learned model's fit is due (stateless: the front end keeps the
    step count, the last fit and whether the model is fitted).

    :param model_train_freq: fit a learned model every this many env steps (counting every env), >= 1
    :param model_learning_starts: env steps before the first fit (None: the agent's ``learning_starts``)
    :param planner_starts: env steps before the planner acts; ``"auto"``: once a learned model has been
        fitted, at the agent's ``learning_starts`` for other models
    :param min_transitions: real transitions stored before the first fit
    """

    model_train_freq: int = 250
    model_learning_starts: int | None = None
    planner_starts: int | str = "auto"
    min_transitions: int = MIN_MODEL_TRANSITIONS

    def __post_init__(self) -> None:
        check_int("model_train_freq", self.model_train_freq, 1)
        check_int("model_learning_starts", self.model_learning_starts, 0, allow_none=True)
        if not (self.planner_starts == "auto" or (isinstance(self.planner_starts, int) and self.planner_starts >= 0)):
            raise ValueError(f"planner_starts must be 'auto' or an integer >= 0, got {self.planner_starts!r}")
        check_int("min_transitions", self.min_transitions, 0)

    def model_starts(self, learning_starts: int) -> int:
        """Env steps before the first fit."""
        return learning_starts if self.model_learning_starts is None else self.model_learning_starts

    def planner_active(self, num_timesteps: int, learning_starts: int, learned_model: bool, model_fitted: bool) -> bool:
        """Whether the planner chooses rollout actions now.

        :param num_timesteps: env steps so far
        :param learning_starts: the agent's ``learning_starts``
        :param learned_model: the planner's model is learned (it must be fitted before the planner acts)
        :param model_fitted: the learned model has been fitted at least once
        """
        start = None if self.planner_starts == "auto" else int(self.planner_starts)
        return started(num_timesteps, start, learning_starts, learned_model, model_fitted)

    def fit_due(self, num_timesteps: int, learning_starts: int, last_fit: int, transitions: int) -> bool:
        """Whether a learned model's fit is due now.

        :param num_timesteps: env steps so far
        :param learning_starts: the agent's ``learning_starts``
        :param last_fit: ``num_timesteps`` at the last fit, -1 before the first
        :param transitions: real transitions the fit would see
        """
        if num_timesteps < self.model_starts(learning_starts) or transitions < self.min_transitions:
            return False
        return last_fit < 0 or num_timesteps - last_fit >= self.model_train_freq


def fit_settings(fit_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """A model's ``fit`` arguments: ``DEFAULT_MODEL_FIT_KWARGS`` overridden by the user's."""
    if fit_kwargs is not None and not isinstance(fit_kwargs, dict):
        raise TypeError(f"model_fit_kwargs must be a dict, got {type(fit_kwargs).__name__}")
    return {**DEFAULT_MODEL_FIT_KWARGS, **(fit_kwargs or {})}


def transitions_from_buffer(
    buffer: Any, actions_normalized: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flatten the valid transitions of an SB3 ``ReplayBuffer``.

    Handles partially filled buffers, ``n_envs > 1`` and ``optimize_memory_usage=True`` (next observation
    at ``observations[(i + 1) % buffer_size]``; there the transitions that ended an episode are skipped,
    because the buffer overwrote their next observation with the next episode's first). Terminal
    transitions are ``dones`` that are not time-limit truncations (``buffer.timeouts``).

    :param buffer: ``stable_baselines3.common.buffers.ReplayBuffer`` (flat Box observations)
    :param actions_normalized: the buffer holds actions in [-1, 1] (what SB3's off-policy algorithms store
        for Box action spaces); they are mapped to the action space's bounds
    :return: observations (N, S), actions (N, A), next_observations (N, S), rewards (N,), terminations (N,)
    """
    observations = getattr(buffer, "observations", None)
    if isinstance(observations, dict):
        raise TypeError(
            "transitions_from_buffer does not support DictReplayBuffer (dict observations); flatten them first"
        )
    if not isinstance(observations, np.ndarray) or not hasattr(buffer, "buffer_size"):
        raise TypeError(
            f"expected a stable_baselines3 ReplayBuffer, got {type(buffer).__name__} (needs observations, "
            "actions, rewards, dones, buffer_size, pos, full)"
        )
    if observations.ndim != 3:
        raise ValueError(f"transitions_from_buffer needs flat (1-D) observations, got shape {observations.shape[2:]}")
    size, pos, full = int(buffer.buffer_size), int(buffer.pos), bool(buffer.full)
    optimize = bool(getattr(buffer, "optimize_memory_usage", False))
    if optimize:
        # the oldest slot (pos) holds the newest next-observation once the buffer has wrapped around
        index = np.delete(np.arange(size), pos) if full else np.arange(pos)
    else:
        index = np.arange(size if full else pos)
    if index.size == 0:
        raise ValueError("the replay buffer holds no transitions yet")
    n_envs = observations.shape[1]
    obs = observations[index]
    next_obs = observations[(index + 1) % size] if optimize else buffer.next_observations[index]
    actions = buffer.actions[index].reshape(index.size, n_envs, -1).astype(np.float64)
    rewards = buffer.rewards[index]
    dones = buffer.dones[index].astype(bool)
    timeouts = getattr(buffer, "timeouts", np.zeros_like(buffer.dones))[index].astype(bool)
    terminations = dones & ~timeouts
    valid = ~dones if optimize else np.ones_like(dones)
    if actions_normalized:
        low = np.asarray(buffer.action_space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(buffer.action_space.high, dtype=np.float64).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("actions_normalized=True needs a Box action space with finite bounds")
        actions = low + (actions + 1.0) * 0.5 * (high - low)
    obs_dim = obs.shape[2]
    return (
        obs[valid].reshape(-1, obs_dim),
        actions[valid].reshape(-1, actions.shape[2]),
        next_obs[valid].reshape(-1, obs_dim),
        rewards[valid].reshape(-1),
        terminations[valid].reshape(-1),
    )


def fit_model_from_buffer(
    dynamics: Any, replay_buffer: Any, fit_kwargs: dict[str, Any] | None = None, logger: Any = None
) -> dict[str, float]:
    """Fit a learned model on the real transitions of a replay buffer; log its statistics under ``model/``.

    :param dynamics: a learned model with ``fit(obs, actions, next_obs, rewards, terminations, **fit_kwargs)``
    :param replay_buffer: the agent's replay buffer
    :param fit_kwargs: arguments of the model's ``fit``
    :param logger: an SB3 logger, or None
    :return: the model's fit statistics
    """
    start = time.perf_counter()
    stats = dynamics.fit(*transitions_from_buffer(replay_buffer), **(fit_kwargs or {}))
    log_fit(logger, stats, time.perf_counter() - start)
    return stats


def log_fit(logger: Any, stats: dict[str, Any], seconds: float | None = None) -> None:
    """Record a fit's finite numeric statistics (and its duration) under ``model/``; no logger: nothing."""
    if logger is None:
        return
    for key, value in stats.items():
        if isinstance(value, int | float) and math.isfinite(float(value)):
            logger.record(f"model/{key}", float(value))
    if seconds is not None:
        logger.record("model/fit_time_s", seconds)
