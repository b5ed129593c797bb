"""Turn any SB3 policy into the planner's ``prior`` (actions in ``[-1, 1]``) and ``terminal_value`` callables.

SB3 policies come in two kinds (see ``BasePolicy.predict``):

- *squashed* (``policy.squash_output``: SAC, TD3, TQC, ARS ``MlpPolicy``): ``_predict`` returns actions in
  ``[-1, 1]``, the planner's normalised action space, which ``predict`` rescales to the bounds;
- *unsquashed* (PPO/A2C without gSDE squashing, ARS ``LinearPolicy``): ``_predict`` returns actions in the
  environment's units, which ``predict`` clips to the bounds.

An unsquashed policy's action is clipped to the bounds and scaled: ``2 (a - low) / (high - low) - 1``.

Under ``VecNormalize`` the planner and its model work on original observations while the policy sees
normalised ones: :func:`vec_normalize_obs_transform` (live statistics, while training) or
:class:`ObsNormalizer` (a frozen copy, saved with the DeMo Layer) maps one to the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_demo.checks import check_int

ObsTransform = Callable[[th.Tensor], th.Tensor]
CriticReduce = Literal["min", "q1", "mean"]
CRITIC_REDUCES = ("min", "q1", "mean")


def check_critic_reduce(reduce: Any, who: str = "DeMo") -> None:
    """:raises ValueError: ``reduce`` is not one of ``CRITIC_REDUCES``"""
    if reduce not in CRITIC_REDUCES:
        raise ValueError(f"{who}: critic_reduce must be one of {list(CRITIC_REDUCES)}, got {reduce!r}")


# ---------------------------------------------------------------------- observation normalisation


def _standardize(obs: th.Tensor, mean: th.Tensor, var: th.Tensor, epsilon: float, clip_obs: float) -> th.Tensor:
    return ((obs - mean) / th.sqrt(var + epsilon)).clamp(-clip_obs, clip_obs)


def normalize_obs(obs: th.Tensor, vec_normalize: Any) -> th.Tensor:
    """``obs`` normalised with the current statistics of a ``VecNormalize`` (unchanged if it does not
    normalise observations, or is None)."""
    if vec_normalize is None or not vec_normalize.norm_obs:
        return obs
    rms: Any = vec_normalize.obs_rms
    mean = th.as_tensor(rms.mean, dtype=obs.dtype, device=obs.device)
    var = th.as_tensor(rms.var, dtype=obs.dtype, device=obs.device)
    return _standardize(obs, mean, var, vec_normalize.epsilon, vec_normalize.clip_obs)


def vec_normalize_obs_transform(vec_normalize: Any, device: th.device | str) -> ObsTransform | None:
    """``obs -> normalised obs`` with the live statistics of a ``VecNormalize`` (None if it does not normalise).

    The statistics are read at every call, so the transform follows a VecNormalize that is still training.

    :param vec_normalize: the agent's VecNormalize (``agent.get_vec_normalize_env()``) or None
    :param device: torch device of the returned tensors
    """
    if vec_normalize is None or not vec_normalize.norm_obs:
        return None

    def normalize(obs: th.Tensor) -> th.Tensor:
        return normalize_obs(obs.to(device), vec_normalize)

    return normalize


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
        return _standardize(obs, self.mean.to(obs.device), self.var.to(obs.device), self.epsilon, self.clip_obs)

    def extra_repr(self) -> str:
        return f"obs_dim={self.mean.shape[0]}, epsilon={self.epsilon}, clip_obs={self.clip_obs}"


# ---------------------------------------------------------------------- prior


def is_squashed(policy: nn.Module) -> bool:
    """Whether ``policy``'s raw output is already in ``[-1, 1]`` (SB3's ``squash_output``).

    Plain ``nn.Module`` policies (no ``squash_output`` attribute) are taken to act in environment units.
    """
    return bool(getattr(policy, "squash_output", False))


def samples_own_noise(policy: nn.Module) -> bool:
    """Whether a stochastic action of ``policy`` can be drawn with a caller's generator: a squashed-Gaussian
    actor (SAC, TQC, CrossQ without gSDE), sampled as ``tanh(mean + std * noise)``."""
    actor = getattr(policy, "actor", None)
    return hasattr(actor, "get_action_dist_params") and not getattr(actor, "use_sde", False)


def raw_policy_actions(
    policy: nn.Module, obs: th.Tensor, deterministic: bool = True, generator: th.Generator | None = None
) -> th.Tensor:
    """The policy's output for a batch of (already transformed) observations.

    :param policy: an SB3 ``BasePolicy`` (uses ``_predict(obs, deterministic)``) or a plain ``nn.Module``
        (``policy(obs)``)
    :param obs: (N, obs_dim)
    :param deterministic: SAC: the actor's mean instead of a sample
    :param generator: the generator of a stochastic action's noise (see :func:`samples_own_noise`), so that
        sampling never draws from torch's global generator; None (or another kind of policy): the policy's
        own sampling
    :return: (N, A) actions, in ``[-1, 1]`` for squashed policies, environment units otherwise
    """
    predict = getattr(policy, "_predict", None)
    with th.no_grad():
        if not deterministic and generator is not None and samples_own_noise(policy):
            mean, log_std, _ = policy.actor.get_action_dist_params(obs)  # type: ignore[union-attr,operator]
            noise = th.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
            return th.tanh(mean + log_std.exp() * noise.to(mean.device))
        if predict is not None:
            return predict(obs, deterministic=deterministic)
        return policy(obs)


def deterministic_actor_action(actor: nn.Module, obs: th.Tensor) -> th.Tensor:
    """An SB3 off-policy actor's deterministic action in ``[-1, 1]``, differentiable: SAC's ``tanh(mean)``
    (``actor(obs, deterministic=True)``), TD3's ``actor(obs)``."""
    if hasattr(actor, "get_action_dist_params"):
        return actor(obs, deterministic=True)
    return actor(obs)


def explore_around(policy: nn.Module, obs: th.Tensor, actions: th.Tensor, generator: th.Generator) -> th.Tensor:
    """The actor's own exploration around given actions: ``tanh(atanh(a) + std(obs) * noise)``, with ``std``
    the squashed-Gaussian actor's at ``obs`` (see :func:`samples_own_noise`).

    SAC samples ``tanh(mean + std * noise)``; this keeps its std and replaces its mean by the planned
    action's, so exploration shrinks as SAC's entropy coefficient does.

    :param policy: a policy whose actor samples a squashed Gaussian (SAC, TQC, CrossQ without gSDE)
    :param obs: (N, obs_dim) observations as the policy sees them
    :param actions: (N, A) actions in ``[-1, 1]``
    :param generator: the noise's generator
    :return: (N, A) actions in ``[-1, 1]``
    """
    with th.no_grad():
        _, log_std, _ = policy.actor.get_action_dist_params(obs)  # type: ignore[union-attr,operator]
        noise = th.randn(log_std.shape, generator=generator, device=generator.device, dtype=log_std.dtype)
        # atanh of +-1 is infinite: keep planned actions a hair inside the bounds
        pre_tanh = th.atanh(actions.to(log_std).clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        return th.tanh(pre_tanh + log_std.exp() * noise.to(log_std.device))


def _policy_device(policy: nn.Module, default: th.device) -> th.device:
    param = next(iter(policy.parameters()), None)
    return param.device if param is not None else default


def policy_prior(
    policy: nn.Module,
    action_space: spaces.Box,
    obs_transform: ObsTransform | None = None,
    deterministic: bool = True,
    generator: th.Generator | None = None,
) -> Callable[[th.Tensor], th.Tensor]:
    """``prior(obs (N, obs_dim)) -> (N, A)`` in ``[-1, 1]`` from any SB3 policy (squashed or not).

    :param policy: the policy (SB3 ``BasePolicy`` or a plain ``nn.Module`` acting in env units)
    :param action_space: the env's bounded Box action space (asymmetric bounds allowed)
    :param obs_transform: maps the planner's (original) observations to the policy's input, e.g. the
        VecNormalize statistics the policy was trained with
    :param deterministic: the policy's deterministic action (False: SAC samples its actor, the planner's
        proposals then explore)
    :param generator: the generator of a stochastic prior's noise (see :func:`raw_policy_actions`)
    """
    squashed = is_squashed(policy)
    low = th.as_tensor(np.asarray(action_space.low, dtype=np.float32)).reshape(-1)
    high = th.as_tensor(np.asarray(action_space.high, dtype=np.float32)).reshape(-1)
    action_dim = low.shape[0]

    def prior(obs: th.Tensor) -> th.Tensor:
        x = obs.to(device=_policy_device(policy, obs.device), dtype=th.float32)
        if obs_transform is not None:
            x = obs_transform(x)
        actions = raw_policy_actions(policy, x, deterministic, generator).reshape(obs.shape[0], action_dim)
        actions = actions.to(obs.device, th.float32)
        if squashed:
            return actions.clamp(-1.0, 1.0)
        lo, hi = low.to(obs.device), high.to(obs.device)
        clipped = th.maximum(th.minimum(actions, hi), lo)
        return 2.0 * (clipped - lo) / (hi - lo) - 1.0

    return prior


# ---------------------------------------------------------------------- terminal value


def has_critic(policy: nn.Module) -> bool:
    """Whether the policy carries a value estimate usable as terminal value (Q critic or PPO's V)."""
    return getattr(policy, "critic", None) is not None or callable(getattr(policy, "predict_values", None))


def _q_value(policy: nn.Module, critic: nn.Module, reduce: CriticReduce) -> Callable[[th.Tensor], th.Tensor]:
    """``Q(s, pi(s))`` with the policy's deterministic action, twin heads combined by ``reduce``."""

    def value(obs: th.Tensor) -> th.Tensor:
        with th.no_grad():
            actions = policy._predict(obs, deterministic=True)  # type: ignore[operator]
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


def policy_value(
    policy: nn.Module,
    reduce: CriticReduce = "min",
    obs_transform: ObsTransform | None = None,
    gate: Callable[[], bool] | None = None,
) -> Callable[[th.Tensor], th.Tensor]:
    """``V(obs (N, obs_dim)) -> (N,)`` from the policy's critic.

    SAC/TD3/TQC/CrossQ: ``Q(s, pi(s))`` with the policy's deterministic action; PPO/A2C: the value head
    ``predict_values``.

    :param policy: the policy
    :param reduce: how twin Q heads combine: ``"min"`` (clipped double Q), ``"q1"`` (first head, as the
        2022 reference code) or ``"mean"``
    :param obs_transform: maps the planner's observations to the policy's input
    :param gate: called before every evaluation; while it returns False the value is 0 and the critic is
        not called (a critic warm-up); None: always on
    :raises ValueError: when the policy has no critic (ARS, linear policies)
    """
    check_critic_reduce(reduce)
    base: Callable[[th.Tensor], th.Tensor]
    critic = getattr(policy, "critic", None)
    if critic is not None:
        base = _q_value(policy, critic, reduce)
    elif callable(getattr(policy, "predict_values", None)):
        predict_values: Callable[[th.Tensor], th.Tensor] = policy.predict_values  # type: ignore[assignment]

        def base(obs: th.Tensor) -> th.Tensor:
            with th.no_grad():
                return predict_values(obs).reshape(-1)

    else:
        raise ValueError(
            f"{type(policy).__name__} has no critic to use as terminal value (ARS and linear policies have none)"
        )

    def value(obs: th.Tensor) -> th.Tensor:
        if gate is not None and not gate():
            return obs.new_zeros(obs.shape[0])
        x = obs.to(device=_policy_device(policy, obs.device), dtype=th.float32)
        if obs_transform is not None:
            x = obs_transform(x)
        return base(x).to(obs.device)

    return value


def prior_rollout_value(
    dynamics: Callable[[th.Tensor, th.Tensor], tuple[th.Tensor, th.Tensor, th.Tensor]],
    prior: Callable[[th.Tensor], th.Tensor],
    action_space: spaces.Box,
    steps: int,
    discount: float = 1.0,
) -> Callable[[th.Tensor], th.Tensor]:
    """``V(s) = sum_{k<steps} discount^k r_k`` of following the prior from ``s`` through the model.

    A terminal value for policies without a critic (ARS, linear policies): the planner then optimises
    "H planned steps, then the policy", a one-step policy improvement of the policy (a rollout algorithm),
    which looks ``H + steps`` ahead at the cost of ``steps`` more model calls per sequence.

    :param dynamics: the planner's model (original observations, env-unit actions); models with
        ``observe`` are not supported (the value receives observations)
    :param prior: ``prior(obs) -> (N, A)`` in ``[-1, 1]``
    :param action_space: the env's Box action space (to map prior actions to env units)
    :param steps: rollout length, >= 1
    :param discount: per-step discount, in (0, 1]
    """
    steps = check_int("value_rollout_steps", steps, 1)
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
