"""DeMoCallback: links the DeMo env wrappers with a stock SB3 agent while it trains.

SB3's ``OffPolicyAlgorithm.collect_rollouts`` calls ``callback.on_step()`` after ``env.step`` and before
``_store_transition(replay_buffer, buffer_actions, ...)``, with ``buffer_actions`` in ``self.locals``.
The callback overwrites, in place, the rows of ``buffer_actions`` whose env ran the planner's action
(``info["demo_guided"]``) with that action (``info["executed_action"]``) scaled to ``[-1, 1]``, so the
replay buffer stores the action that really ran.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_demo.common.env_checks import check_finite_step
from sb3_demo.common.executed_action import store_executed_actions
from sb3_demo.common.imagination import add_imagined, augments
from sb3_demo.common.model_rollouts import (
    BranchedRollouts,
    ModelRolloutRunner,
    check_rollout_target,
    rollout_generator,
    rollout_settings,
)
from sb3_demo.common.policy_fns import vec_normalize_obs_transform
from sb3_demo.common.schedule import DeMoSchedule, fit_model_from_buffer, fit_settings
from sb3_demo.common.seeding import AUGMENTOR, stream_generator
from sb3_demo.wrappers.demo_wrapper import find_guides
from sb3_demo.wrappers.guide import DeMoGuide, check_agent, live_guides


class DeMoCallback(BaseCallback):
    """Train a stock SAC/TD3/TQC/CrossQ with the planner's actions from a DeMo env wrapper.

    At the start of training it attaches every :class:`~sb3_demo.wrappers.DeMoVecEnvWrapper` /
    :class:`~sb3_demo.wrappers.DeMoWrapper` of the training env to the agent (actor as the planner's prior,
    critic as its terminal value); then, each step, it

    - writes the action that really ran into the replay buffer (``buffer_actions``, scaled to ``[-1, 1]``),
    - feeds the training progress to ``guide_prob`` schedules,
    - adds the planner's imagined transitions (the plan's mean rolled through the model) when the agent's
      buffer is an :class:`~sb3_demo.buffers.AugmentedReplayBuffer` with ``imagined_fraction > 0``,
    - fits a learned model (``model="ensemble"``) on the real transitions every ``model_train_freq`` steps,
    - switches the planner on at ``planner_starts``,
    - at the end of each rollout collection, runs the branched model rollouts that are due
      (``branched_rollouts``), before the agent's gradient steps.

    :param model_train_freq: fit a learned model every this many env steps (counting every env)
    :param model_learning_starts: env steps before the first fit (default: the agent's ``learning_starts``)
    :param model_fit_kwargs: arguments of the model's ``fit`` (e.g. ``max_epochs``); missing ones take
        ``DEFAULT_MODEL_FIT_KWARGS`` (early stopping capped at 500 gradient steps per fit)
    :param planner_starts: env steps before the planner acts; ``"auto"``: once a learned model has been
        fitted, at the agent's ``learning_starts`` for other models
    :param add_imagined: add imagined transitions to an AugmentedReplayBuffer
    :param branched_rollouts: MBPO-style model rollouts from real replay states with the agent's actor, stored as
        model data in the agent's AugmentedReplayBuffer (``imagined_fraction > 0``): a dict of
        :class:`~sb3_demo.common.model_rollouts.BranchedRollouts` settings; None: off
    :param attach_eval_envs: also attach, for evaluation, the DeMo wrappers of this process that nothing
        attached (e.g. RL Zoo's evaluation env, built with the same wrapper): they then plan
        deterministically on every step, with the training model, once the planner is on
    :param verbose: 1 to print model fits
    """

    def __init__(
        self,
        model_train_freq: int = 250,
        model_learning_starts: int | None = None,
        model_fit_kwargs: dict[str, Any] | None = None,
        planner_starts: int | str = "auto",
        add_imagined: bool = True,
        branched_rollouts: dict[str, Any] | BranchedRollouts | None = None,
        attach_eval_envs: bool = True,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose=verbose)
        self.schedule = DeMoSchedule(model_train_freq, model_learning_starts, planner_starts)
        self.model_fit_kwargs = fit_settings(model_fit_kwargs)
        self.add_imagined = add_imagined
        self.branched_rollouts = rollout_settings(branched_rollouts)
        self.rollout_runner: ModelRolloutRunner | None = None
        self.attach_eval_envs = attach_eval_envs
        self.guides: list[DeMoGuide] = []
        self.eval_guides: list[DeMoGuide] = []
        self.dynamics: Any = None
        self._augmentor_generator: Any = None  # the imagined transitions' stream, set with the agent
        self.model_fitted = False
        self.last_model_fit = -1
        self.num_model_fits = 0

    # ------------------------------------------------------------------ linking

    def _init_callback(self) -> None:
        agent = self.model
        if not isinstance(agent, OffPolicyAlgorithm):
            raise ValueError(
                f"DeMoCallback needs an off-policy actor-critic (SAC, TD3, sb3_contrib TQC or CrossQ), whose replay "
                f"buffer can store the planner's actions; got {type(agent).__name__}. On-policy algorithms (PPO, "
                "A2C) cannot learn from actions they did not choose."
            )
        guides, remote = find_guides(self.training_env)
        if remote:
            raise ValueError(
                "DeMoWrapper runs inside SubprocVecEnv worker processes, where the planner cannot reach the agent's "
                "networks. Wrap the VecEnv in the main process instead: DeMoVecEnvWrapper(SubprocVecEnv(...)) "
                "(RL Zoo: a 'vec_env_wrapper:' entry instead of 'env_wrapper:')."
            )
        if not guides:
            raise ValueError(
                "DeMoCallback found no DeMo wrapper in the training env: wrap it with "
                "DeMoVecEnvWrapper(venv) (or DeMoWrapper(env) for one gymnasium env) before creating the model "
                "(RL Zoo: a 'vec_env_wrapper: sb3_demo.DeMoVecEnvWrapper' entry)."
            )
        check_agent(agent, guides[0].critic_value.use, who="DeMoCallback")
        vec_normalize = agent.get_vec_normalize_env()
        learned = [g for g in guides if g.uses_learned_model]
        if self.dynamics is None:
            reused = [g.dynamics for g in learned if g.agent is agent and g.dynamics is not None]
            if reused:  # a second learn() with a new callback: keep the fitted model
                self.dynamics = reused[0]
            elif learned:
                self.dynamics = learned[0].build_dynamics(agent.device, agent.seed)
        for guide in guides:
            shared = self.dynamics if guide.uses_learned_model else (guide.dynamics if guide.agent is agent else None)
            guide.attach(agent, dynamics=shared, vec_normalize=vec_normalize, active=False)
            guide.logger = agent.logger
            guide.evaluation = False
            guide.keep_plans = self._augments()
        self.guides = guides
        self._augmentor_generator = stream_generator(agent.seed, AUGMENTOR, agent.device)
        self.eval_guides = []
        if self.attach_eval_envs:
            for guide in live_guides():
                ours = guide.evaluation and guide.agent is agent  # attached by an earlier learn() of this agent
                if guide in guides or (guide.attached and not ours):
                    continue
                shared = self.dynamics if guide.uses_learned_model else None
                guide.attach(agent, dynamics=shared, vec_normalize=vec_normalize, active=False)
                guide.evaluation = True
                self.eval_guides.append(guide)
        if self.branched_rollouts is not None:
            check_rollout_target(agent.replay_buffer, guides[0].model, "DeMoCallback")
            if self.rollout_runner is None or not self.rollout_runner.fits(self.branched_rollouts, agent.device):
                self.rollout_runner = ModelRolloutRunner(
                    self.branched_rollouts, rollout_generator(agent.seed, agent.device)
                )
        self._update_activity()

    def _augments(self) -> bool:
        return self.add_imagined and augments(getattr(self.model, "replay_buffer", None))

    # ------------------------------------------------------------------ schedule

    @property
    def agent(self) -> Any:
        """The off-policy algorithm being trained."""
        return self.model

    @property
    def uses_learned_model(self) -> bool:
        return self.dynamics is not None

    def planner_active(self) -> bool:
        """Whether the planner chooses (some of) the rollout actions now."""
        return self.schedule.planner_active(
            self.num_timesteps, self.agent.learning_starts, self.uses_learned_model, self.model_fitted
        )

    def _update_activity(self) -> None:
        active = self.planner_active()
        for guide in (*self.guides, *self.eval_guides):
            guide.active = active

    def fit_model(self) -> dict[str, float]:
        """Fit the learned model on the agent's real transitions now."""
        stats = fit_model_from_buffer(self.dynamics, self.agent.replay_buffer, self.model_fit_kwargs, self.logger)
        self.model_fitted = True
        self.last_model_fit = self.num_timesteps
        self.num_model_fits += 1
        if self.verbose >= 1:
            print(f"DeMoCallback: fitted the model at {self.num_timesteps} steps: {stats}")
        return stats

    # ------------------------------------------------------------------ each step

    def _on_step(self) -> bool:
        infos = self.locals.get("infos")
        if infos is not None and "new_obs" in self.locals and "rewards" in self.locals:  # before SB3 stores them
            check_finite_step(self.locals["new_obs"], self.locals["rewards"], infos, self.num_timesteps // len(infos))
        self._store_executed_actions()
        progress = float(self.model._current_progress_remaining)
        for guide in self.guides:
            guide.progress_remaining = progress
        if self._augments():
            self._add_imagined()
        if self.uses_learned_model:
            buffer = self.agent.replay_buffer
            if self.schedule.fit_due(
                self.num_timesteps, self.agent.learning_starts, self.last_model_fit, buffer.size() * buffer.n_envs
            ):
                self.fit_model()
        self._update_activity()
        steps = sum(g.num_steps for g in self.guides)
        if steps > 0:
            self.logger.record("demo/guided_fraction", sum(g.num_planned for g in self.guides) / steps)
        return True

    def _on_rollout_end(self) -> None:
        runner = self.rollout_runner
        dynamics = self.dynamics if self.dynamics is not None else self.guides[0].dynamics if self.guides else None
        if runner is None or dynamics is None:
            return
        agent = self.agent
        if runner.active(self.num_timesteps, agent.learning_starts, self.uses_learned_model, self.model_fitted):
            runner.maybe_run(
                self.num_timesteps,
                agent.replay_buffer,
                dynamics,
                agent.policy,
                agent.action_space,
                vec_normalize_obs_transform(agent.get_vec_normalize_env(), agent.device),
                self.logger,
            )

    def _store_executed_actions(self) -> None:
        buffer_actions = self.locals.get("buffer_actions")
        infos = self.locals.get("infos")
        if buffer_actions is None or infos is None:
            raise RuntimeError(
                "DeMoCallback must run inside an off-policy algorithm's collect_rollouts (it needs 'buffer_actions' "
                "and 'infos'); pass it to model.learn(callback=...)"
            )
        store_executed_actions(buffer_actions, infos, self.model.policy, guided_only=True)

    def _add_imagined(self) -> None:
        for guide in self.guides:
            if guide.planner is not None:
                add_imagined(
                    self.agent.replay_buffer,
                    guide.dynamics,
                    guide.pop_last_plan(),
                    guide.planner.unscale_action,
                    self._augmentor_generator,
                )
