"""The planner's imagined transitions (D_MPC), shared by DeMoSAC/DeMoTD3 and the env wrappers' callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from sb3_demo.buffers import AugmentedReplayBuffer
from sb3_demo.dynamics.base import DynamicsModel


def imagined_transitions(
    dynamics: DynamicsModel,
    states: th.Tensor,
    plan: th.Tensor,
    unscale_action: Callable[[th.Tensor], th.Tensor],
    generator: th.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Roll a plan through the model and return its transitions, stopping each rollout at termination.

    :param dynamics: the planner's model
    :param states: (B, S) start states
    :param plan: (B, H, A) normalised action sequences (e.g. ``PlanResult.mean``)
    :param unscale_action: maps ``[-1, 1]`` actions to the model's (environment) units
    :param generator: the augmentor's own generator, for a model with ``takes_generator = True``
    :return: observations (N, obs_dim), next observations (N, obs_dim), normalised actions (N, A),
        rewards (N,), terminations (N,), with N <= B * H, as float32 numpy arrays for
        :meth:`~sb3_demo.buffers.AugmentedReplayBuffer.add_imagined`
    """
    observe = getattr(dynamics, "observe", None)
    model_kwargs = (
        {"generator": generator} if generator is not None and getattr(dynamics, "takes_generator", False) else {}
    )
    parts: list[list[th.Tensor]] = [[], [], [], [], []]
    with th.no_grad():
        s = states
        alive = th.ones(states.shape[0], dtype=th.bool, device=states.device)
        for h in range(plan.shape[1]):
            a = plan[:, h]
            s_next, r, d = dynamics(s, unscale_action(a), **model_kwargs)
            d = d.reshape(-1).bool()
            obs, next_obs = (observe(s), observe(s_next)) if observe is not None else (s, s_next)
            for part, value in zip(parts, (obs, next_obs, a, r.reshape(-1), d), strict=True):
                part.append(value[alive])
            alive = alive & ~d
            s = s_next
    o, no, a_, r_, d_ = (th.cat(p).detach().float().cpu().numpy() for p in parts)
    return o, no, a_, r_, d_


def augments(buffer: Any) -> bool:
    """Whether ``buffer`` samples imagined transitions (an AugmentedReplayBuffer with ``imagined_fraction > 0``)."""
    return isinstance(buffer, AugmentedReplayBuffer) and buffer.imagined_fraction > 0.0


def add_imagined(
    buffer: Any,
    dynamics: DynamicsModel,
    imagination: tuple[th.Tensor, th.Tensor] | None,
    unscale_action: Callable[[th.Tensor], th.Tensor],
    generator: th.Generator | None = None,
) -> None:
    """Roll plans through the model and store the imagined transitions in ``buffer`` (D_MPC); nothing when
    there is nothing to imagine or the buffer does not sample imagined transitions.

    :param buffer: the agent's replay buffer
    :param dynamics: the planner's model
    :param imagination: (start states (N, S), plan means (N, H, A)), e.g. ``PlanStep.imagination()``
    :param unscale_action: maps ``[-1, 1]`` actions to the model's (environment) units
    :param generator: the augmentor's own generator (stream ``AUGMENTOR``), for a model with
        ``takes_generator = True``
    """
    if imagination is None or not augments(buffer):
        return
    buffer.add_imagined(*imagined_transitions(dynamics, *imagination, unscale_action, generator))
