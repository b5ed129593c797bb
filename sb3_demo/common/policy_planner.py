"""Build a DMD-MPC planner around an SB3 actor-critic, and fit/log its learned model.

Shared by the DeMoRL algorithms (:mod:`sb3_demo.algorithms.planning`) and the env wrappers
(:mod:`sb3_demo.wrappers`): the actor is the planner's prior, the critic its terminal value, and under
``VecNormalize`` the planner and the model work on original observations while the actor and the critic
see normalised ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_demo.common.policy_fns import CriticReduce, actor_prior, critic_value
from sb3_demo.dynamics.base import DynamicsModel
from sb3_demo.planner import DMDMPCPlanner, PlanResult

ObsTransform = Callable[[th.Tensor], th.Tensor]

# 2022 reference code (DeMoRL on MuJoCo): H=3, 100 Gaussian + 5 actor sequences, 4 particles, 5 iterations,
# exp weights with kappa=1 on raw returns, gamma_mean=1, gamma_std=0.9, std reset to half the range.
REFERENCE_PLANNER_KWARGS: dict[str, Any] = dict(
    horizon=3,
    num_samples=100,
    prior_fraction=0.05,
    num_particles=4,
    num_iterations=5,
    utility="exp",
    temperature=1.0,
    gamma_mean=1.0,
    gamma_std=0.9,
    init_std=0.5,
)

# what DeMoSAC / DeMoTD3 / the wrappers use for planner settings a user leaves out: the reference with 2
# iterations instead of 5 (every benchmarked win used 2-3; with capped fits, 2.5x SAC's time per env step on
# Pendulum against 5.3x for the reference, see BENCHMARKS.md); ``planner_kwargs=REFERENCE_PLANNER_KWARGS``
# gives the 2022 settings back
DEFAULT_PLANNER_KWARGS: dict[str, Any] = {**REFERENCE_PLANNER_KWARGS, "num_iterations": 2}

# what the model fits of DeMoSAC / DeMoTD3 / DeMoModelCallback use for fit settings a user leaves out:
# early stopping as in the reference, capped at 500 gradient steps per fit (fits are warm-started; an
# uncapped fit on a small buffer runs for hundreds of epochs); ``max_grad_steps=None`` removes the cap
DEFAULT_MODEL_FIT_KWARGS: dict[str, Any] = {"max_grad_steps": 500}


def vec_normalize_obs_transform(vec_normalize: VecNormalize | None, device: th.device | str) -> ObsTransform | None:
    """``obs -> normalised obs`` with the live statistics of a ``VecNormalize`` (None if it does not normalise).

    The statistics are read at every call, so the transform follows a VecNormalize that is still training.

    :param vec_normalize: the agent's VecNormalize (``model.get_vec_normalize_env()``) or None
    :param device: torch device of the returned tensors
    """
    if vec_normalize is None or not vec_normalize.norm_obs:
        return None
    vec_norm = vec_normalize

    def normalize(obs: th.Tensor) -> th.Tensor:
        rms: Any = vec_norm.obs_rms
        mean = th.as_tensor(rms.mean, dtype=obs.dtype, device=device)
        var = th.as_tensor(rms.var, dtype=obs.dtype, device=device)
        out = (obs.to(device) - mean) / th.sqrt(var + vec_norm.epsilon)
        return out.clamp(-vec_norm.clip_obs, vec_norm.clip_obs)

    return normalize


def _compose(fn: Callable[[th.Tensor], th.Tensor], transform: ObsTransform) -> Callable[[th.Tensor], th.Tensor]:
    def composed(obs: th.Tensor) -> th.Tensor:
        return fn(transform(obs))

    return composed


def _gated(value: Callable[[th.Tensor], th.Tensor], gate: Callable[[], bool]) -> Callable[[th.Tensor], th.Tensor]:
    def gated(obs: th.Tensor) -> th.Tensor:
        return value(obs) if gate() else obs.new_zeros(obs.shape[0])

    return gated


def critic_warmed_up(agent: Any, terminal_value_starts: int) -> Callable[[], bool] | None:
    """A ``value_gate``: True once ``agent`` (an SB3 off-policy model) has made ``terminal_value_starts``
    gradient updates (``agent._n_updates``); None (no gate) when ``terminal_value_starts`` is 0."""
    if terminal_value_starts == 0:
        return None

    def warmed_up() -> bool:
        return int(getattr(agent, "_n_updates", 0)) >= terminal_value_starts

    return warmed_up


def check_terminal_value_starts(value: Any, who: str) -> None:
    """:raises ValueError: ``terminal_value_starts`` is not an integer >= 0"""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{who}: terminal_value_starts must be an integer >= 0, got {value!r}")


def make_policy_planner(
    dynamics: DynamicsModel,
    policy: BasePolicy,
    action_space: spaces.Box,
    planner_kwargs: dict[str, Any],
    critic_reduce: CriticReduce = "min",
    use_terminal_value: bool = True,
    obs_transform: ObsTransform | None = None,
    seed: int | None = None,
    device: th.device | str = "cpu",
    deterministic_prior: bool = False,
    value_gate: Callable[[], bool] | None = None,
) -> DMDMPCPlanner:
    """A :class:`~sb3_demo.DMDMPCPlanner` with the policy's actor as prior and its critic as terminal value.

    :param dynamics: the model the planner rolls through (states in original observation units)
    :param policy: an SB3 SAC/TD3/TQC/CrossQ policy
    :param action_space: the env's Box action space (the planner's action bounds)
    :param planner_kwargs: the planner's settings (horizon, num_samples, ...)
    :param critic_reduce: terminal value from the twin critics: ``"min"``, ``"q1"`` or ``"mean"``
    :param use_terminal_value: add the critic's value of the last planned state
    :param obs_transform: maps the planner's observations to the policy's (VecNormalize), or None
    :param seed: the planner's sampling seed
    :param device: torch device
    :param deterministic_prior: the actor's mean action as prior (evaluation: with the planner's seeded
        generator, the same observations then give the same actions)
    :param value_gate: called before every terminal-value evaluation; while it returns False the
        terminal value is 0 and the critic is not called (a critic warm-up), None: always on
    :raises ValueError: unknown planner settings
    """
    prior = actor_prior(policy, deterministic=deterministic_prior)
    value = critic_value(policy, critic_reduce) if use_terminal_value else None
    if obs_transform is not None:
        prior = _compose(prior, obs_transform)
        value = _compose(value, obs_transform) if value is not None else None
    if value is not None and value_gate is not None:
        value = _gated(value, value_gate)
    try:
        return DMDMPCPlanner(
            dynamics,
            action_dim=int(action_space.shape[0]),
            terminal_value=value,
            prior=prior,
            action_low=th.as_tensor(action_space.low, dtype=th.float64),
            action_high=th.as_tensor(action_space.high, dtype=th.float64),
            seed=seed,
            device=device,
            **planner_kwargs,
        )
    except TypeError as exc:
        raise ValueError(f"invalid planner_kwargs {sorted(planner_kwargs)}: {exc}") from exc


def fit_model_from_buffer(
    dynamics: Any, replay_buffer: Any, fit_kwargs: dict[str, Any] | None = None, logger: Any = None
) -> dict[str, float]:
    """Fit a learned model on the real transitions of a replay buffer; log its statistics under ``model/``.

    :param dynamics: a learned model with ``fit_from_buffer(buffer, **fit_kwargs)``
    :param replay_buffer: the agent's replay buffer
    :param fit_kwargs: arguments of the model's ``fit``
    :param logger: an SB3 logger, or None
    :return: the model's fit statistics
    """
    start = time.perf_counter()
    stats = dynamics.fit_from_buffer(replay_buffer, **(fit_kwargs or {}))
    if logger is not None:
        for key, value in stats.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                logger.record(f"model/{key}", float(value))
        logger.record("model/fit_time_s", time.perf_counter() - start)
    return stats


def record_plan(logger: Any, result: PlanResult) -> None:
    """Log a plan's latency, expected return, effective sample size, iterations and fallback rate."""
    logger.record_mean("planner/latency_ms", 1000.0 * result.elapsed)
    er = result.expected_return[th.isfinite(result.expected_return)]
    if er.numel() > 0:
        logger.record_mean("planner/expected_return", float(er.mean()))
    logger.record_mean("planner/ess", float(result.ess.mean()))
    logger.record_mean("planner/iterations", float(result.iterations))
    logger.record_mean("planner/fallback_rate", float(result.fallback.float().mean()))


def as_state_tensor(obs: np.ndarray, device: th.device | str) -> th.Tensor:
    """(B, ...) observations -> (B, S) float32 tensor on ``device``."""
    arr = np.asarray(obs, dtype=np.float32)
    return th.as_tensor(arr, device=device).reshape(arr.shape[0], -1)
