"""Model data: rollouts through the dynamics model, for the planner's imagined transitions (D_MPC, shared by
DeMoSAC/DeMoTD3 and the env wrappers' callback) and the branched rollouts (:mod:`sb3_demo.common.model_rollouts`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from sb3_demo.buffers import AugmentedReplayBuffer
from sb3_demo.dynamics.base import DynamicsModel


def model_rollout(
    dynamics: DynamicsModel,
    states: th.Tensor,
    act: Callable[[int, th.Tensor], th.Tensor],
    length: int,
    unscale_action: Callable[[th.Tensor], th.Tensor],
    generator: th.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Roll ``length`` steps through the model from ``states``, stopping each row at its termination.

    :param dynamics: the model
    :param states: (B, S) start states
    :param act: ``act(h, observations (B, obs_dim)) -> (B, A)`` normalised actions of step ``h`` (a fixed plan
        or a policy)
    :param length: model steps
    :param unscale_action: maps ``[-1, 1]`` actions to the model's (environment) units
    :param generator: the caller's generator for a model's sampling noise, for a model with
        ``takes_generator = True``
    :return: observations (N, obs_dim), next observations (N, obs_dim), normalised actions (N, A),
        rewards (N,), terminations (N,), with N <= B * length, as float32 numpy arrays for
        :meth:`~sb3_demo.buffers.AugmentedReplayBuffer.add_imagined`
    """
    observe = getattr(dynamics, "observe", None)
    takes_generator = generator is not None and getattr(dynamics, "takes_generator", False)
    model_kwargs = {"generator": generator} if takes_generator else {}
    parts: list[list[th.Tensor]] = [[], [], [], [], []]
    with th.no_grad():
        s = states
        alive = th.ones(states.shape[0], dtype=th.bool, device=states.device)
        for h in range(length):
            obs = observe(s) if observe is not None else s
            a = act(h, obs).to(states.device)
            s_next, r, d = dynamics(s, unscale_action(a), **model_kwargs)
            d = d.reshape(-1).bool()
            next_obs = observe(s_next) if observe is not None else s_next
            for part, value in zip(parts, (obs, next_obs, a, r.reshape(-1), d), strict=True):
                part.append(value[alive])
            alive = alive & ~d
            s = s_next
    o, no, a_, r_, d_ = (th.cat(p).detach().float().cpu().numpy() for p in parts)
    return o, no, a_, r_, d_


def imagined_transitions(
    dynamics: DynamicsModel,
    states: th.Tensor,
    plan: th.Tensor,
    unscale_action: Callable[[th.Tensor], th.Tensor],
    generator: th.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Roll a plan through the model and return its transitions (see :func:`model_rollout`).

    :param dynamics: the planner's model
    :param states: (B, S) start states
    :param plan: (B, H, A) normalised action sequences (e.g. ``PlanResult.mean``)
    :param unscale_action: maps ``[-1, 1]`` actions to the model's (environment) units
    :param generator: the caller's generator for a model's sampling noise
    """
    return model_rollout(dynamics, states, lambda h, obs: plan[:, h], plan.shape[1], unscale_action, generator)


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
