"""Turn any SB3 policy into the planner's ``prior`` (actions in ``[-1, 1]``) and optional terminal value.

SB3 policies come in two kinds (see ``BasePolicy.predict``):

- *squashed* (``policy.squash_output``: SAC, TD3, TQC, ARS ``MlpPolicy``): ``_predict`` returns actions in
  ``[-1, 1]``, which ``predict`` rescales to the action space's bounds;
- *unsquashed* (PPO/A2C without gSDE squashing, ARS ``LinearPolicy``): ``_predict`` returns actions in the
  environment's units, which ``predict`` clips to the bounds.

The planner works in ``[-1, 1]`` (mapped affinely to possibly asymmetric bounds), so an unsquashed
policy's action is clipped to the bounds first and then scaled: ``2 (a - low) / (high - low) - 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_demo.common.policy_fns import CRITIC_REDUCES, CriticReduce, critic_value

ObsTransform = Callable[[th.Tensor], th.Tensor]
TerminalValueChoice = Literal["auto", "critic", "none"]
TERMINAL_VALUE_CHOICES = ("auto", "critic", "none")


def is_squashed(policy: nn.Module) -> bool:
    """Whether ``policy``'s raw output is already in ``[-1, 1]`` (SB3's ``squash_output``).

    Plain ``nn.Module`` policies (no ``squash_output`` attribute) are taken to act in environment units.
    """
    return bool(getattr(policy, "squash_output", False))


def raw_policy_actions(policy: nn.Module, obs: th.Tensor) -> th.Tensor:
    """The policy's deterministic output for a batch of (already transformed) observations.

    :param policy: an SB3 ``BasePolicy`` (uses ``_predict(obs, deterministic=True)``) or a plain
        ``nn.Module`` (``policy(obs)``)
    :param obs: (N, obs_dim)
    :return: (N, A) actions, in ``[-1, 1]`` for squashed policies, environment units otherwise
    """
    predict = getattr(policy, "_predict", None)
    with th.no_grad():
        if predict is not None:
            return predict(obs, deterministic=True)
        return policy(obs)


def normalized_prior(
    policy: nn.Module,
    action_space: spaces.Box,
    obs_transform: ObsTransform | None = None,
) -> Callable[[th.Tensor], th.Tensor]:
    """``prior(obs (N, obs_dim)) -> (N, A)`` in ``[-1, 1]`` from any SB3 policy (squashed or not).

    :param policy: the base policy (SB3 ``BasePolicy`` or a plain ``nn.Module`` acting in env units)
    :param action_space: the env's bounded Box action space (asymmetric bounds allowed)
    :param obs_transform: maps the planner's (original) observations to the policy's input, e.g. the
        VecNormalize statistics the policy was trained with
    """
    squashed = is_squashed(policy)
    low = th.as_tensor(np.asarray(action_space.low, dtype=np.float32)).reshape(-1)
    high = th.as_tensor(np.asarray(action_space.high, dtype=np.float32)).reshape(-1)
    action_dim = low.shape[0]

    def prior(obs: th.Tensor) -> th.Tensor:
        param = next(iter(policy.parameters()), None)
        device = param.device if param is not None else obs.device
        x = obs.to(device=device, dtype=th.float32)
        if obs_transform is not None:
            x = obs_transform(x)
        actions = raw_policy_actions(policy, x).reshape(obs.shape[0], action_dim).to(obs.device, th.float32)
        if squashed:
            return actions.clamp(-1.0, 1.0)
        lo, hi = low.to(obs.device), high.to(obs.device)
        clipped = th.maximum(th.minimum(actions, hi), lo)
        return 2.0 * (clipped - lo) / (hi - lo) - 1.0

    return prior


def has_critic(policy: nn.Module) -> bool:
    """Whether the policy carries a value estimate usable as terminal value (Q critic or PPO's V)."""
    return getattr(policy, "critic", None) is not None or callable(getattr(policy, "predict_values", None))


def policy_value(
    policy: nn.Module,
    reduce: CriticReduce = "min",
    obs_transform: ObsTransform | None = None,
) -> Callable[[th.Tensor], th.Tensor]:
    """``V(obs (N, obs_dim)) -> (N,)`` from the base policy's critic.

    SAC/TD3/TQC/CrossQ: ``Q(s, pi(s))`` (see :func:`sb3_demo.common.policy_fns.critic_value`);
    PPO/A2C: the value head ``predict_values``.

    :param policy: the base policy
    :param reduce: how twin Q heads combine: ``"min"``, ``"q1"`` or ``"mean"``
    :param obs_transform: maps the planner's observations to the policy's input
    :raises ValueError: when the policy has no critic (ARS, linear policies)
    """
    if reduce not in CRITIC_REDUCES:
        raise ValueError(f"critic_reduce must be one of {list(CRITIC_REDUCES)}, got {reduce!r}")
    base: Callable[[th.Tensor], th.Tensor]
    if getattr(policy, "critic", None) is not None:
        base = critic_value(policy, reduce)  # type: ignore[arg-type]
    elif callable(getattr(policy, "predict_values", None)):
        predict_values: Callable[[th.Tensor], th.Tensor] = policy.predict_values  # type: ignore[assignment]

        def base(obs: th.Tensor) -> th.Tensor:
            with th.no_grad():
                return predict_values(obs).reshape(-1)

    else:
        raise ValueError(
            f"{type(policy).__name__} has no critic to use as terminal value (ARS and linear policies have "
            "none): use terminal_value='none'"
        )

    def value(obs: th.Tensor) -> th.Tensor:
        param = next(iter(policy.parameters()))
        x = obs.to(device=param.device, dtype=th.float32)
        if obs_transform is not None:
            x = obs_transform(x)
        return base(x).to(obs.device)

    return value


class ObsNormalizer(nn.Module):
    """Frozen VecNormalize observation statistics: ``clip((obs - mean) / sqrt(var + eps), -clip, clip)``.

    Lets a policy trained under ``VecNormalize`` see normalised observations while the planner and its
    dynamics model work on the original ones. The statistics are buffers (saved with the policy).

    :param mean: (obs_dim,) running mean
    :param var: (obs_dim,) running variance
    :param epsilon: VecNormalize's ``epsilon``
    :param clip_obs: VecNormalize's ``clip_obs``
    """

    def __init__(self, mean: np.ndarray | th.Tensor, var: np.ndarray | th.Tensor, epsilon: float, clip_obs: float):
        super().__init__()
        self.register_buffer("mean", th.as_tensor(np.asarray(mean), dtype=th.float32).reshape(-1).clone())
        self.register_buffer("var", th.as_tensor(np.asarray(var), dtype=th.float32).reshape(-1).clone())
        self.epsilon = float(epsilon)
        self.clip_obs = float(clip_obs)
        self.mean: th.Tensor
        self.var: th.Tensor

    @classmethod
    def from_vec_normalize(cls, vec_normalize: object | None) -> ObsNormalizer | None:
        """A frozen copy of a ``VecNormalize``'s observation statistics (None if it does not normalise)."""
        if vec_normalize is None or not getattr(vec_normalize, "norm_obs", False):
            return None
        rms = vec_normalize.obs_rms  # type: ignore[attr-defined]
        if isinstance(rms, dict):
            raise ValueError("DeMoPolicy supports flat Box observations, not dict observations under VecNormalize")
        return cls(rms.mean, rms.var, vec_normalize.epsilon, vec_normalize.clip_obs)  # type: ignore[attr-defined]

    def forward(self, obs: th.Tensor) -> th.Tensor:
        mean, var = self.mean.to(obs.device), self.var.to(obs.device)
        return ((obs - mean) / th.sqrt(var + self.epsilon)).clamp(-self.clip_obs, self.clip_obs)

    def extra_repr(self) -> str:
        return f"obs_dim={self.mean.shape[0]}, epsilon={self.epsilon}, clip_obs={self.clip_obs}"


def prior_rollout_value(
    dynamics: Callable[[th.Tensor, th.Tensor], tuple[th.Tensor, th.Tensor, th.Tensor]],
    prior: Callable[[th.Tensor], th.Tensor],
    action_space: spaces.Box,
    steps: int,
    discount: float = 1.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """``V(s) = sum_{k<steps} discount^k r_k`` of following the prior from ``s`` through the model.

    A terminal value for base policies without a critic (ARS, linear policies): the planner then optimises
    "H planned steps, then the base policy", a one-step policy improvement of the base policy (a rollout
    algorithm), which looks ``H + steps`` ahead at the cost of ``steps`` more model calls per sequence.

    :param dynamics: the planner's model (original observations, env-unit actions); models with
        ``observe`` are not supported (the value receives observations)
    :param prior: ``prior(obs) -> (N, A)`` in ``[-1, 1]``
    :param action_space: the env's Box action space (to map prior actions to env units)
    :param steps: rollout length, >= 1
    :param discount: per-step discount, in (0, 1]
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"value_rollout_steps must be an integer >= 1, got {steps!r}")
    if not 0.0 < discount <= 1.0:
        raise ValueError(f"discount must be in (0, 1], got {discount}")
    low = th.as_tensor(np.asarray(action_space.low, dtype=np.float32)).reshape(-1)
    high = th.as_tensor(np.asarray(action_space.high, dtype=np.float32)).reshape(-1)

    def value(obs: th.Tensor) -> th.Tensor:
        lo, hi = low.to(obs.device, obs.dtype), high.to(obs.device, obs.dtype)
        s = obs
        total = th.zeros(obs.shape[0], dtype=obs.dtype, device=obs.device)
        alive = th.ones(obs.shape[0], dtype=th.bool, device=obs.device)
        weight = 1.0
        with th.no_grad():
            for _ in range(steps):
                a = prior(s).to(obs.dtype)
                s, r, done = dynamics(s, lo + (a + 1.0) * 0.5 * (hi - lo))
                total = total + weight * th.where(alive, r.reshape(-1).to(obs.dtype), 0.0)
                alive = alive & ~done.reshape(-1).bool()
                weight *= discount
        return total

    return value
