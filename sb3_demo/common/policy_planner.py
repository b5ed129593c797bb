"""The planning core every front end calls: planner settings, the planner over an SB3 policy, one plan step.

- :func:`planner_settings`: ``planner_kwargs`` (RL Zoo yml, user code) validated in one place, over a
  front end's defaults;
- :func:`make_policy_planner`: a :class:`~sb3_demo.DMDMPCPlanner` over any SB3 policy (prior), its critic
  or a prior rollout (terminal value), a dynamics model and an observation normaliser;
- :func:`plan_step`: plan for a batch of observations, log under ``planner/`` and return what the
  augmentor needs to imagine transitions.

Each planner draws from one random stream of its own (:mod:`sb3_demo.common.seeding`): its sampling, a
stochastic prior's samples and a stochastic model's noise in its rollouts.

Under ``VecNormalize`` the planner and the model work on original observations while the policy sees
normalised ones (``obs_transform``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_demo.common.policy_fns import (
    CriticReduce,
    ObsTransform,
    check_critic_reduce,
    policy_prior,
    policy_value,
    prior_rollout_value,
)
from sb3_demo.common.seeding import reseeded, stream_generator
from sb3_demo.dynamics.base import DynamicsModel
from sb3_demo.planner import DMDMPCPlanner, PlannerConfig, PlanResult

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

# the planner settings a user leaves out, for a planner whose terminal value is a learning critic
# (DeMoSAC, DeMoTD3, the env wrappers): the reference with 2 iterations instead of 5 (every benchmarked win
# used 2-3, at half the reference's time per env step, see BENCHMARKS.md); ``planner_kwargs=
# REFERENCE_PLANNER_KWARGS`` gives the 2022 settings back
DEFAULT_PLANNER_KWARGS: dict[str, Any] = {**REFERENCE_PLANNER_KWARGS, "num_iterations": 2}

# the settings a user leaves out for the DeMo Layer over a fixed policy (DeMoPolicy, DeMoARS): without a
# learning critic to lean on, the plan looks further ahead than the reference's 3 steps
DEFAULT_LAYER_PLANNER_KWARGS: dict[str, Any] = {
    **REFERENCE_PLANNER_KWARGS,
    "horizon": 10,
    "num_iterations": 3,
    "num_particles": 1,
}

# what the front ends wire themselves: a ``planner_kwargs`` entry for one of them is an error
RESERVED_PLANNER_KEYS = ("dynamics", "action_dim", "prior", "terminal_value", "action_low", "action_high", "seed")


def planner_settings(
    planner_kwargs: Mapping[str, Any] | PlannerConfig | None,
    defaults: Mapping[str, Any],
    who: str,
) -> dict[str, Any]:
    """A front end's planner settings, validated: ``defaults`` overridden by the user's.

    Front ends keep the returned dict (what RL Zoo yml and ``save`` see) and build the planner from it
    with :meth:`PlannerConfig.from_kwargs <sb3_demo.planner.PlannerConfig.from_kwargs>`.

    :param planner_kwargs: a dict of settings (from code or RL Zoo yml), a ``PlannerConfig`` (all of its
        settings) or None
    :param defaults: the front end's defaults (``DEFAULT_PLANNER_KWARGS`` or ``DEFAULT_LAYER_PLANNER_KWARGS``)
    :param who: the front end, for error messages
    :raises ValueError: a reserved key, an unknown key (named, with the allowed ones) or a value out of range
    :raises TypeError: ``planner_kwargs`` of another type
    """
    if isinstance(planner_kwargs, PlannerConfig):
        planner_kwargs = planner_kwargs.to_kwargs()
    if planner_kwargs is not None and not isinstance(planner_kwargs, Mapping):
        raise TypeError(f"{who}: planner_kwargs must be a dict, got {type(planner_kwargs).__name__}")
    settings = {**defaults, **(planner_kwargs or {})}
    reserved = sorted(set(settings) & set(RESERVED_PLANNER_KEYS))
    if reserved:
        raise ValueError(
            f"{who}: planner_kwargs must not set {reserved}: the front end sets the model, the prior, the "
            "terminal value, the action bounds and the seed itself"
        )
    try:
        PlannerConfig.from_kwargs(settings)
    except ValueError as exc:
        raise ValueError(f"{who}: planner_kwargs: {exc}") from None
    return settings


@dataclass(frozen=True)
class CriticValue:
    """How an actor-critic's critic enters the planner's returns as terminal value.

    :param use: add the critic's value of the last planned state (False: no terminal value)
    :param reduce: twin Q heads as terminal value: ``"min"``, ``"q1"`` or ``"mean"``
    :param starts: the agent's gradient updates (``agent._n_updates``) before the critic's value is added
        (a critic warm-up: an untrained critic can mislead a short-horizon planner); 0: from the start
    """

    use: bool = True
    reduce: CriticReduce = "min"
    starts: int = 0

    def __post_init__(self) -> None:
        check_critic_reduce(self.reduce)
        if not isinstance(self.starts, int) or isinstance(self.starts, bool) or self.starts < 0:
            raise ValueError(f"terminal_value_starts must be an integer >= 0, got {self.starts!r}")

    def gate(self, agent: Any) -> Callable[[], bool] | None:
        """True once ``agent`` has made ``starts`` gradient updates; None (no gate) when ``starts`` is 0."""
        if self.starts == 0 or agent is None:
            return None
        starts = self.starts

        def warmed_up() -> bool:
            return int(getattr(agent, "_n_updates", 0)) >= starts

        return warmed_up


def make_policy_planner(
    dynamics: DynamicsModel,
    policy: nn.Module,
    action_space: spaces.Box,
    config: PlannerConfig | Mapping[str, Any],
    critic: CriticValue | None = CriticValue(),
    agent: Any = None,
    value_rollout_steps: int = 0,
    obs_transform: ObsTransform | None = None,
    deterministic_prior: bool = False,
    seed: int | None = None,
    device: th.device | str = "cpu",
    stream: str | None = None,
) -> DMDMPCPlanner:
    """A :class:`~sb3_demo.DMDMPCPlanner` over ``dynamics`` with ``policy`` as its prior.

    :param dynamics: the model the planner rolls through (states in original observation units)
    :param policy: any SB3 policy (squashed or not) or a plain ``nn.Module`` acting in env units
    :param action_space: the env's Box action space (the planner's action bounds)
    :param config: the planner's settings (a ``PlannerConfig``, or a dict validated by :func:`planner_settings`)
    :param critic: how the policy's critic enters as terminal value (see
        :func:`~sb3_demo.common.policy_fns.policy_value`; default: the min of the twin heads from the
        start); None: no critic
    :param agent: the SB3 algorithm training the critic (for ``critic.starts``), or None
    :param value_rollout_steps: without a critic, > 0: the terminal value is that many steps of the prior
        through the model
    :param obs_transform: maps the planner's observations to the policy's (VecNormalize), or None
    :param deterministic_prior: the policy's deterministic action as prior (False: SAC samples its actor, so
        the prior's proposals explore; True for evaluation and a fixed policy's layer)
    :param seed: the front end's seed (the algorithm's ``seed``; None: fresh entropy from the OS)
    :param device: torch device of the planner's state
    :param stream: the planner's random stream (:mod:`sb3_demo.common.seeding`), derived from ``seed``:
        the planner's sampling, a stochastic prior's samples and a stochastic model's noise all draw from
        its generator; None: ``seed`` seeds the planner's generator itself and the prior samples as the
        policy does
    """
    generator = None if stream is None else stream_generator(seed, stream, device)
    prior = policy_prior(policy, action_space, obs_transform, deterministic=deterministic_prior, generator=generator)
    value = None
    if critic is not None and critic.use:
        value = policy_value(policy, critic.reduce, obs_transform, gate=critic.gate(agent))
    elif value_rollout_steps > 0:
        value = prior_rollout_value(dynamics, prior, action_space, value_rollout_steps)
    return DMDMPCPlanner(
        dynamics,
        action_dim=int(action_space.shape[0]),
        config=config if isinstance(config, PlannerConfig) else PlannerConfig.from_kwargs(config),
        terminal_value=value,
        prior=prior,
        action_low=th.as_tensor(action_space.low, dtype=th.float64),
        action_high=th.as_tensor(action_space.high, dtype=th.float64),
        seed=seed if generator is None else None,
        device=device,
        generator=generator,
    )


def as_state_tensor(obs: np.ndarray, device: th.device | str) -> th.Tensor:
    """(B, ...) observations -> (B, S) float32 tensor on ``device``."""
    arr = np.asarray(obs, dtype=np.float32)
    return th.as_tensor(arr, device=device).reshape(arr.shape[0], -1)


def record_plan(logger: Any, result: PlanResult) -> None:
    """Log a plan's latency, expected return, effective sample size, iterations and fallback rate."""
    logger.record_mean("planner/latency_ms", 1000.0 * result.elapsed)
    er = result.expected_return[th.isfinite(result.expected_return)]
    if er.numel() > 0:
        logger.record_mean("planner/expected_return", float(er.mean()))
    logger.record_mean("planner/ess", float(result.ess.mean()))
    logger.record_mean("planner/iterations", float(result.iterations))
    logger.record_mean("planner/fallback_rate", float(result.fallback.float().mean()))


@dataclass
class PlanStep:
    """One plan for a batch of environments and what the augmentor needs from it.

    :param result: the planner's :class:`~sb3_demo.planner.PlanResult`
    :param states: (B, S) the states planned from
    """

    result: PlanResult
    states: th.Tensor

    def imagination(self, rows: np.ndarray | None = None) -> tuple[th.Tensor, th.Tensor] | None:
        """(states (N, S), plan means (N, H, A)) to roll through the model for imagined transitions, for
        ``rows`` of the batch (None: all); None when one of them fell back (its plan mean was never
        optimised)."""
        if rows is None:
            if bool(self.result.fallback.any()):
                return None
            return self.states, self.result.mean
        index = th.as_tensor(rows, device=self.states.device, dtype=th.long)
        if bool(self.result.fallback[index].any()):
            return None
        return self.states[index], self.result.mean[index]


def plan_step(
    planner: Any, states: th.Tensor, deterministic: bool, logger: Any = None, reseed: int | None = None
) -> PlanStep:
    """Plan for ``states`` (B, S) and log the plan under ``planner/`` (no logger: no logging).

    :param planner: a :class:`~sb3_demo.DMDMPCPlanner` (or a controller around one)
    :param states: (B, S) the states to plan from
    :param deterministic: the plan's mean action (True) or a stochastic one
    :param logger: the SB3 logger, or None
    :param reseed: a seed: the planner's generator draws this plan's noise as if freshly seeded with it,
        then goes on where it was (the same states and warm start give the same plan); None: its stream
    """
    if reseed is None:
        result = planner.plan(states, deterministic=deterministic)
    else:
        with reseeded(planner.generator, reseed):
            result = planner.plan(states, deterministic=deterministic)
    if logger is not None:
        record_plan(logger, result)
    return PlanStep(result=result, states=states)
