"""DeMoTD3: TD3 whose rollouts are chosen by DMD-MPC, with the actor as prior and the critic as terminal value."""

from __future__ import annotations

from typing import ClassVar

from stable_baselines3 import TD3
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.td3.policies import TD3Policy

from sb3_demo.algorithms.planning import DeMoMixin


class DeMoTD3(DeMoMixin, TD3):
    """Twin Delayed DDPG with MPC-guided rollouts (DeMoRL).

    The planner plans deterministically (the first action of its weighted mean); exploration comes from
    TD3's ``action_noise``, added to the planned action. Everything else is as in
    :class:`~sb3_demo.DeMoSAC`; see it for the DeMo arguments.

    :param policy: the TD3 policy (``"MlpPolicy"`` or a class)
    :param env: the environment (a flat Box observation space and a Box action space)
    :param kwargs: every other argument of :class:`stable_baselines3.TD3`
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = TD3.policy_aliases
    policy: TD3Policy
    _plan_deterministic_in_rollout = True
