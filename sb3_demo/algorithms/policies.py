"""The ``MlpPolicy`` of DeMoSAC and DeMoTD3: SB3's own, with an optional LayerNorm in the critics.

At many critic updates per env step (model-based regimes such as MBPO's) a critic's values on states outside
its data are poorly constrained: DeMoSAC on HalfCheetah-v5 with 20 critic updates per env step valued states its
policy had left at +75 against a true -22, and 2 of 3 seeds settled running on their backs (BENCHMARKS.md). A
LayerNorm after each hidden layer of the critics bounds their features and so their extrapolation (RLPD, Ball et
al., 2023); with it the same seeds ran upright, past 2500 at 20k env steps.
``policy_kwargs=dict(critic_layer_norm=True)`` switches it on; off, the policy is SB3's, parameter for parameter.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn


class LayerNormContinuousCritic(ContinuousCritic):
    """SB3's :class:`~stable_baselines3.common.policies.ContinuousCritic` with a LayerNorm after every hidden
    linear layer (linear, LayerNorm, activation; the output layer plain). Arguments: those of ContinuousCritic.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            net_arch,
            features_extractor,
            features_dim,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )
        input_dim = features_dim + get_action_dim(action_space)
        self.q_networks = []
        for idx in range(n_critics):
            layers = create_mlp(input_dim, 1, net_arch, activation_fn, post_linear_modules=[nn.LayerNorm])
            q_net = nn.Sequential(*layers)
            self.add_module(f"qf{idx}", q_net)  # replaces ContinuousCritic's network of the same name
            self.q_networks.append(q_net)


class CriticLayerNormMixin(BasePolicy):
    """The ``critic_layer_norm`` setting of :class:`DeMoSACPolicy` and :class:`DeMoTD3Policy`, before SB3's
    SACPolicy / TD3Policy in their bases (both build their critics in ``make_critic`` from ``critic_kwargs``).

    :param critic_layer_norm: a LayerNorm after each hidden layer of the critics (and their targets)
    """

    critic_kwargs: dict[str, Any]

    def __init__(self, *args: Any, critic_layer_norm: bool = False, **kwargs: Any) -> None:
        if not isinstance(critic_layer_norm, bool):
            raise TypeError(f"critic_layer_norm must be True or False, got {critic_layer_norm!r}")
        self.critic_layer_norm = critic_layer_norm  # read by make_critic, which the base's __init__ calls
        super().__init__(*args, **kwargs)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        # SACPolicy's and TD3Policy's own make_critic, with the class chosen
        critic_class = LayerNormContinuousCritic if self.critic_layer_norm else ContinuousCritic
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return critic_class(**critic_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "critic_layer_norm": self.critic_layer_norm}


class DeMoSACPolicy(CriticLayerNormMixin, SACPolicy):
    """SB3's :class:`~stable_baselines3.sac.policies.SACPolicy` with ``critic_layer_norm``
    (:class:`CriticLayerNormMixin`); SACPolicy's arguments otherwise."""


class DeMoTD3Policy(CriticLayerNormMixin, TD3Policy):
    """SB3's :class:`~stable_baselines3.td3.policies.TD3Policy` with ``critic_layer_norm``
    (:class:`CriticLayerNormMixin`); TD3Policy's arguments otherwise."""


__all__ = ["DeMoSACPolicy", "DeMoTD3Policy", "LayerNormContinuousCritic"]
