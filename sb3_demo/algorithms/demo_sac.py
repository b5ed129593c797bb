"""DeMoSAC: SAC whose rollouts are chosen by DMD-MPC, with the actor as prior and the critic as terminal value."""

from __future__ import annotations

import pathlib
from typing import Any, ClassVar

import torch as th
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac.policies import SACPolicy

from sb3_demo.algorithms.checkpoint import demo_from_base
from sb3_demo.algorithms.planning import DeMoMixin
from sb3_demo.algorithms.policies import DeMoSACPolicy
from sb3_demo.checks import check_int


class DeMoSAC(DeMoMixin, SAC):
    """Soft Actor-Critic with MPC-guided rollouts (DeMoRL, Mishra et al. 2021).

    Every rollout action comes from :class:`~sb3_demo.DMDMPCPlanner`, planning through a dynamics model
    with SAC's actor as prior/proposals and its critic as terminal value; exploration comes from the
    planner's own distribution (the executed action is drawn by weight). The replay buffer stores the
    executed action; by default it is an :class:`~sb3_demo.buffers.AugmentedReplayBuffer` that also
    samples the planner's imagined transitions (``replay_buffer_kwargs=dict(imagined_fraction=...)``).

    :param policy: the SAC policy (``"MlpPolicy"``: :class:`~sb3_demo.algorithms.policies.DeMoSACPolicy`, SB3's
        SACPolicy with ``policy_kwargs=dict(critic_layer_norm=True)`` for LayerNorm critics; or a class)
    :param env: the environment (a flat Box observation space and a Box action space)
    :param planner_kwargs: :class:`~sb3_demo.DMDMPCPlanner` settings (defaults: the 2022 reference code)
    :param model: ``"ensemble"`` (default), ``"analytic"``, ``"mujoco"`` or a DynamicsModel instance
    :param model_kwargs: constructor arguments of the model
    :param model_train_freq: fit a learned model every this many env steps
    :param model_learning_starts: env steps before the first model fit (default: ``learning_starts``)
    :param model_fit_kwargs: arguments of the model's ``fit`` (missing ones: ``DEFAULT_MODEL_FIT_KWARGS``)
    :param planner_starts: env steps before the planner acts, or ``"auto"`` (once the model is ready)
    :param critic_reduce: terminal value from the twin critics: ``"min"``, ``"q1"`` or ``"mean"``
    :param use_terminal_value: add the critic's value of the last planned state to each return
    :param terminal_value_starts: gradient updates before the critic's value enters the planner's returns
        (a critic warm-up: an untrained critic can mislead a short-horizon planner); 0: from the start
    :param imagined_rollouts: planned sequences per step stored as imagined transitions (0: none)
    :param predict_with_planner: ``predict`` plans (True) or uses the bare actor (False)
    :param realtime: run the rollout planner under :class:`~sb3_demo.realtime.RealTimeController` (a
        deadline from the env's control period, the actor's action as fallback, latency logged under
        ``planner/``): ``None`` (default) on hardware envs only, ``True``/``False`` always/never, or a dict
        of the controller's keyword arguments (e.g. ``budget_fraction``) to switch it on with them;
        ``dict(plan_ahead=True)`` plans each step in a worker thread while the previous action executes
        (:class:`~sb3_demo.realtime.PlanAheadController`)
    :param policy_delay: the actor and the entropy coefficient are updated with every ``policy_delay``-th
        critic update (as in TD3; REDQ updates them once per ``gradient_steps``): a critic update alone costs
        about half of a full SAC update. 1 (default): SAC's own updates
    :param kwargs: every other argument of :class:`stable_baselines3.SAC`
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {**SAC.policy_aliases, "MlpPolicy": DeMoSACPolicy}
    policy: SACPolicy
    policy_delay: int

    def __init__(self, *args: Any, policy_delay: int = 1, **kwargs: Any) -> None:
        self.policy_delay = check_int("policy_delay", policy_delay, 1)
        super().__init__(*args, **kwargs)

    def _update_networks(self, gradient_steps: int, batch_size: int) -> None:
        """SAC's gradient steps; with ``policy_delay > 1`` all but every ``policy_delay``-th update the critics
        alone (the logged losses are those of the full updates)."""
        if self.policy_delay == 1:
            super()._update_networks(gradient_steps, batch_size)
            return
        self.policy.set_training_mode(True)
        for _ in range(gradient_steps):
            if (self._n_updates + 1) % self.policy_delay == 0:
                super()._update_networks(1, batch_size)  # critics, actor, entropy coefficient and targets
            else:
                self._update_critics(batch_size)

    def _update_critics(self, batch_size: int) -> None:
        """One update of the twin critics (and their targets) alone, with SAC's soft TD target."""
        assert self.replay_buffer is not None
        batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
        discounts = batch.discounts if batch.discounts is not None else self.gamma
        if self.use_sde:
            self.actor.reset_noise()
        log_ent_coef = self.log_ent_coef
        ent_coef = th.exp(log_ent_coef.detach()) if log_ent_coef is not None else self.ent_coef_tensor
        with th.no_grad():
            next_actions, next_log_prob = self.actor.action_log_prob(batch.next_observations)
            next_q = th.cat(self.critic_target(batch.next_observations, next_actions), dim=1).min(dim=1).values
            next_q = next_q.reshape(-1, 1) - ent_coef * next_log_prob.reshape(-1, 1)
            target_q = batch.rewards + (1 - batch.dones) * discounts * next_q
        critic_loss = 0.5 * sum(F.mse_loss(q, target_q) for q in self.critic(batch.observations, batch.actions))
        assert isinstance(critic_loss, th.Tensor)
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        self.critic.optimizer.step()
        self._n_updates += 1
        if self._n_updates % self.target_update_interval == 0:
            polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
            polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

    @classmethod
    def from_sac(
        cls,
        source: SAC | str | pathlib.Path,
        env: GymEnv | str | None = None,
        device: th.device | str = "auto",
        **kwargs: Any,
    ) -> DeMoSAC:
        """A DeMoSAC that starts from a trained SAC: its actor and critic (with their optimisers, and the
        entropy coefficient) and a fresh dynamics model.

        :param source: a ``stable_baselines3.SAC`` or the path of its ``save`` file
        :param env: the training env (default: the SAC's own, when it has one)
        :param device: the device
        :param kwargs: every other argument of DeMoSAC (``planner_kwargs``, ``model``, ...); ``policy_kwargs``,
            ``gamma``, ``tau``, ``batch_size`` and ``seed`` default to the SAC's
        """
        return demo_from_base(cls, SAC, source, env=env, device=device, **kwargs)
