"""Turn an SB3 actor/critic into the planner's ``prior`` and ``terminal_value`` callables.

SB3 actors act in the squashed space ``[-1, 1]``, which is the planner's normalised action space, and
their critics take actions in that same space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch as th
from stable_baselines3.common.policies import BasePolicy

CriticReduce = Literal["min", "q1", "mean"]
CRITIC_REDUCES = ("min", "q1", "mean")


def actor_prior(policy: BasePolicy, deterministic: bool = False) -> Callable[[th.Tensor], th.Tensor]:
    """``prior(obs (N, obs_dim)) -> actions (N, A)`` in ``[-1, 1]`` from an SB3 SAC/TD3 policy.

    :param policy: the algorithm's ``policy`` (anything with ``_predict(obs, deterministic)``)
    :param deterministic: SAC: use the actor's mean instead of a sample (TD3's actor is deterministic)
    """

    device = policy.device  # a property that walks every parameter: read it once

    def prior(obs: th.Tensor) -> th.Tensor:
        with th.no_grad():
            return policy._predict(obs.to(device=device, dtype=th.float32), deterministic=deterministic)

    return prior


def critic_value(policy: BasePolicy, reduce: CriticReduce = "min") -> Callable[[th.Tensor], th.Tensor]:
    """``V(obs (N, obs_dim)) -> (N,)`` as ``Q(s, pi(s))`` with the policy's deterministic action.

    :param policy: an SB3 SAC/TD3/TQC-style policy with ``critic`` (or ``critic_target``) and ``_predict``
    :param reduce: how twin heads combine: ``"min"`` (clipped double Q), ``"q1"`` (first head, as the
        2022 reference code) or ``"mean"``
    """
    if reduce not in CRITIC_REDUCES:
        raise ValueError(f"critic reduce must be one of {list(CRITIC_REDUCES)}, got {reduce!r}")
    critic = getattr(policy, "critic", None)
    if critic is None:
        raise ValueError(
            f"{type(policy).__name__} has no critic: the planner's terminal value needs an actor-critic "
            "policy (SAC, TD3, TQC, CrossQ)"
        )

    device = policy.device

    def value(obs: th.Tensor) -> th.Tensor:
        with th.no_grad():
            obs = obs.to(device=device, dtype=th.float32)
            actions = policy._predict(obs, deterministic=True)
            qs = critic(obs, actions)
            if isinstance(qs, th.Tensor):  # TQC: (N, n_critics, n_quantiles) -> mean over quantiles
                q = qs.reshape(obs.shape[0], qs.shape[1], -1).mean(dim=2)
            else:  # SAC/TD3: a tuple of (N, 1) heads
                q = th.stack([qi.reshape(obs.shape[0], -1).mean(dim=1) for qi in qs], dim=1)  # (N, heads)
            if reduce == "min":
                return q.min(dim=1).values
            if reduce == "q1":
                return q[:, 0]
            return q.mean(dim=1)

    return value
