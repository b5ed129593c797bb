"""DeMoTD3: TD3 whose rollouts are chosen by DMD-MPC, with the actor as prior and the critic as terminal value."""

from __future__ import annotations

from typing import Any, ClassVar

from stable_baselines3 import TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.td3.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, TD3Policy

from sb3_demo.algorithms.planning import DeMoMixin
from sb3_demo.buffers import AugmentedReplayBuffer
from sb3_demo.common.policy_fns import CriticReduce


class DeMoTD3(DeMoMixin, TD3):
    """Twin Delayed DDPG with MPC-guided rollouts (DeMoRL).

    The planner plans deterministically (the first action of its weighted mean); exploration comes from
    TD3's ``action_noise``, added to the planned action. Everything else is as in
    :class:`~sb3_demo.DeMoSAC`; see it for the DeMo arguments.

    :param policy: the TD3 policy (``"MlpPolicy"`` or a class)
    :param env: the environment (a flat Box observation space and a Box action space)
    :param kwargs: every other argument of :class:`stable_baselines3.TD3`
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: TD3Policy
    _plan_deterministic_in_rollout = True

    def __init__(
        self,
        policy: str | type[TD3Policy],
        env: GymEnv | str,
        planner_kwargs: dict[str, Any] | None = None,
        model: Any = "ensemble",
        model_kwargs: dict[str, Any] | None = None,
        model_train_freq: int = 250,
        model_learning_starts: int | None = None,
        model_fit_kwargs: dict[str, Any] | None = None,
        planner_starts: int | str = "auto",
        critic_reduce: CriticReduce = "min",
        use_terminal_value: bool = True,
        terminal_value_starts: int = 0,
        imagined_rollouts: int = 1,
        predict_with_planner: bool = True,
        realtime: bool | dict[str, Any] | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = AugmentedReplayBuffer,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        self._init_demo(
            env,
            planner_kwargs=planner_kwargs,
            model=model,
            model_kwargs=model_kwargs,
            model_train_freq=model_train_freq,
            model_learning_starts=model_learning_starts,
            model_fit_kwargs=model_fit_kwargs,
            planner_starts=planner_starts,
            critic_reduce=critic_reduce,
            use_terminal_value=use_terminal_value,
            terminal_value_starts=terminal_value_starts,
            imagined_rollouts=imagined_rollouts,
            predict_with_planner=predict_with_planner,
            realtime=realtime,
        )
        super().__init__(policy, env, replay_buffer_class=replay_buffer_class, _init_setup_model=False, **kwargs)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._setup_demo()
