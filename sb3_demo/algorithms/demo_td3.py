"""DeMoTD3: TD3 whose rollouts are chosen by DMD-MPC, with the actor as prior and the critic as terminal value."""

from __future__ import annotations

import pathlib
from typing import Any, ClassVar

import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.td3.policies import TD3Policy

from sb3_demo.algorithms.checkpoint import demo_from_base
from sb3_demo.algorithms.planning import DeMoMixin
from sb3_demo.algorithms.policies import DeMoTD3Policy


class DeMoTD3(DeMoMixin, TD3):
    """Twin Delayed DDPG with MPC-guided rollouts (DeMoRL).

    By default (``exploration="actor"``) the planner plans deterministically (the first action of its weighted
    mean) and exploration comes from TD3's ``action_noise``, added to the planned action. Everything else is as in
    :class:`~sb3_demo.DeMoSAC`; see it for the DeMo arguments.

    :param policy: the TD3 policy (``"MlpPolicy"``: :class:`~sb3_demo.algorithms.policies.DeMoTD3Policy`, SB3's
        TD3Policy with ``policy_kwargs=dict(critic_layer_norm=True)`` for LayerNorm critics; or a class)
    :param env: the environment (a flat Box observation space and a Box action space)
    :param kwargs: every other argument of :class:`stable_baselines3.TD3`
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {**TD3.policy_aliases, "MlpPolicy": DeMoTD3Policy}
    policy: TD3Policy
    _default_exploration = "actor"
    _from_base_method = "from_td3"

    @classmethod
    def from_td3(
        cls,
        source: TD3 | str | pathlib.Path,
        env: GymEnv | str | None = None,
        device: th.device | str = "auto",
        **kwargs: Any,
    ) -> DeMoTD3:
        """A DeMoTD3 that starts from a trained TD3: its actor and critic (with their optimisers) and a fresh
        dynamics model.

        :param source: a ``stable_baselines3.TD3`` or the path of its ``save`` file
        :param env: the training env (default: the TD3's own, when it has one)
        :param device: the device
        :param kwargs: every other argument of DeMoTD3 (``planner_kwargs``, ``model``, ...); ``policy_kwargs``,
            ``gamma``, ``tau``, ``batch_size`` and ``seed`` default to the TD3's
        """
        return demo_from_base(cls, TD3, source, env=env, device=device, **kwargs)
