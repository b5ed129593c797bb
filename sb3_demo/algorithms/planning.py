"""What DeMoSAC and DeMoTD3 add to SAC and TD3: MPC-guided rollouts, a learned model, D_MPC.

:class:`DeMoMixin` is mixed in front of an SB3 off-policy algorithm. It overrides four hooks:

- ``_setup_model``: builds the dynamics model and the :class:`~sb3_demo.DMDMPCPlanner` (actor as prior,
  critic as terminal value),
- ``_sample_action``: once planning has started, the planner chooses the rollout action; the replay
  buffer stores exactly that action (normalised),
- ``_store_transition``: resets the plans of finished episodes and adds the planner's imagined
  transitions to an :class:`~sb3_demo.buffers.AugmentedReplayBuffer`,
- ``_on_step`` / ``collect_rollouts``: a learned model's fit falls due on its schedule and runs when the
  rollout ends (with ``train_freq=(1, "episode")``: between episodes, off a robot's control loop); then the
  branched model rollouts that are due (``branched_rollouts``, :mod:`sb3_demo.common.model_rollouts`).

``predict`` plans too (``predict_with_planner``), with a planner of its own whose warm start travels in
``predict``'s ``state`` (see :mod:`sb3_demo.common.plan_state`). Every use of randomness has a stream of its
own derived from ``seed`` (:mod:`sb3_demo.common.seeding`): the rollout planner (with the actor prior's
samples and the model's noise in its rollouts), the imagined transitions, ``predict``'s planner and the
model's fits, so that evaluating never moves what training draws.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch.nn import functional as F

from sb3_demo.algorithms.checkpoint import check_demo_checkpoint
from sb3_demo.buffers import AugmentedReplayBuffer
from sb3_demo.checks import check_int
from sb3_demo.common.env_checks import check_finite_step
from sb3_demo.common.hardware import check_model_allowed, is_hardware_env
from sb3_demo.common.imagination import add_imagined
from sb3_demo.common.model_factory import (
    LEARNED_MODELS,
    MODEL_CHOICES,
    agent_dynamics,
    check_model_choice,
    check_spaces,
    env_id_of,
    make_dynamics,
    single_envs,
)
from sb3_demo.common.model_rollouts import (
    BranchedRollouts,
    ModelRolloutRunner,
    check_rollout_target,
    rollout_generator,
    rollout_settings,
)
from sb3_demo.common.part_times import PartTimes
from sb3_demo.common.plan_state import plan_predict
from sb3_demo.common.policy_fns import (
    CriticReduce,
    deterministic_actor_action,
    explore_around,
    samples_own_noise,
    vec_normalize_obs_transform,
)
from sb3_demo.common.policy_planner import (
    DEFAULT_PLANNER_KWARGS,
    CriticValue,
    make_policy_planner,
    plan_step,
    planner_settings,
)
from sb3_demo.common.schedule import DeMoSchedule, fit_model_from_buffer, fit_settings
from sb3_demo.common.seeding import AUGMENTOR, EXPLORATION, PREDICT_PLANNER, ROLLOUT_PLANNER, stream_generator
from sb3_demo.planner import DMDMPCPlanner

EXPLORATIONS = ("planner", "actor", "none")


class DeMoMixin:
    """MPC-guided rollouts for an SB3 off-policy actor-critic (see the module docstring).

    :param planner_kwargs: settings of :class:`~sb3_demo.DMDMPCPlanner` (horizon, num_samples,
        num_iterations, num_particles, utility, temperature, elite_fraction, gamma_mean, gamma_std, ...);
        missing ones take ``DEFAULT_PLANNER_KWARGS`` (the 2022 reference with 2 iterations instead of 5)
    :param model: ``"ensemble"`` (learned probabilistic ensemble, the default), ``"analytic"`` (exact
        classic-control model), ``"mujoco"`` (the env's own simulator, simulation only) or a
        :class:`~sb3_demo.dynamics.DynamicsModel` instance
    :param model_kwargs: constructor arguments of the model
    :param model_train_freq: fit a learned model every this many env steps
    :param model_learning_starts: env steps before the first model fit (default: ``learning_starts``)
    :param model_fit_kwargs: arguments of the model's ``fit`` (e.g. ``max_epochs``); missing ones take
        ``DEFAULT_MODEL_FIT_KWARGS`` (early stopping capped at 500 gradient steps per fit)
    :param planner_starts: env steps before the planner acts; ``"auto"`` = once a learned model has been fitted
        (at ``learning_starts`` for analytic and simulator models)
    :param critic_reduce: terminal value from the twin critics: ``"min"``, ``"q1"`` or ``"mean"``
    :param use_terminal_value: add the critic's value of the last planned state
    :param terminal_value_starts: gradient updates (``_n_updates``) before the critic's value is added (a
        critic warm-up; 0: from the start)
    :param imagined_rollouts: planned sequences stored per step as imagined transitions (0: none); the
        top-weighted mean plan is rolled through the model
    :param predict_with_planner: ``predict`` plans (True) or returns the bare actor's action (False)
    :param exploration: how rollout actions explore: ``"planner"`` (the planner's stochastic action, see
        ``stochastic_mode``; the 2022 code), ``"actor"`` (the planner's mean action with the algorithm's own
        exploration around it: SAC's actor std at that state, TD3's ``action_noise``; it shrinks as the actor
        becomes sure, where the planner's sampling std stays at ``init_std``) or ``"none"`` (the planner's mean
        action as it is, PETS-style: the planner's samples explore in the model, TD3's ``action_noise`` is not
        added); None: the algorithm's default
    :param imitation_coef: > 0: after SB3's gradient steps, as many actor steps toward the executed (planned)
        actions of replay batches, loss ``imitation_coef * mean((actor(s) - a)^2)`` on the actor's
        deterministic action (logged as ``train/imitation_loss``), so the bare actor follows the planner whose
        data it learns from; 0: off
    :param branched_rollouts: MBPO-style model rollouts from real replay states with the current actor, stored as
        model data in the AugmentedReplayBuffer: a dict of :class:`~sb3_demo.common.model_rollouts.BranchedRollouts`
        settings (``num_rollouts``, ``rollout_freq``, ``rollout_length``, ``deterministic``, ``rollouts_start``);
        None: off
    :param realtime: the rollout planner under a :class:`~sb3_demo.realtime.RealTimeController`: ``None``
        on hardware envs only, ``True``/``False`` always/never, or the controller's keyword arguments;
        ``plan_ahead=True`` among them plans each step while the previous action executes
        (:class:`~sb3_demo.realtime.PlanAheadController`, which takes the other keywords)
    """

    # set by the SB3 algorithm we are mixed into
    policy: Any
    env: VecEnv | None
    device: th.device
    seed: int | None
    num_timesteps: int
    learning_starts: int
    replay_buffer: Any
    observation_space: Any
    action_space: Any
    logger: Any
    _last_obs: Any
    _last_original_obs: Any
    _vec_normalize_env: VecNormalize | None

    # how rollout actions explore when ``exploration`` is None
    _default_exploration = "planner"
    # the classmethod that starts this algorithm from its base algorithm's checkpoint (named in load's error)
    _from_base_method = "from_sac"

    def __init__(
        self,
        policy: str | type[BasePolicy],
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
        exploration: str | None = None,
        imitation_coef: float = 0.0,
        branched_rollouts: dict[str, Any] | BranchedRollouts | None = None,
        realtime: bool | dict[str, Any] | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = AugmentedReplayBuffer,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        who = type(self).__name__
        check_model_choice(model, MODEL_CHOICES, who)
        check_int("imagined_rollouts", imagined_rollouts, 0)
        if not (realtime is None or isinstance(realtime, bool | dict)):
            raise ValueError(
                "realtime must be None (automatic on hardware envs), True, False or a dict of "
                f"RealTimeController keyword arguments, got {realtime!r}"
            )
        self.planner_kwargs = planner_settings(planner_kwargs, DEFAULT_PLANNER_KWARGS, who)
        self.model = model
        self.model_kwargs = dict(model_kwargs or {})
        self.model_train_freq = model_train_freq
        self.model_learning_starts = model_learning_starts
        self.planner_starts = planner_starts
        self.model_fit_kwargs = fit_settings(model_fit_kwargs)
        self.critic_reduce: CriticReduce = critic_reduce
        self.use_terminal_value = use_terminal_value
        self.terminal_value_starts = terminal_value_starts
        # built once here so bad settings fail now, before SB3's set-up; the properties rebuild them from
        # the attributes, which RL Zoo and load() may set afterwards
        DeMoSchedule(model_train_freq, model_learning_starts, planner_starts)
        CriticValue(use_terminal_value, critic_reduce, terminal_value_starts)
        self.imagined_rollouts = imagined_rollouts
        self.predict_with_planner = predict_with_planner
        if exploration not in (None, *EXPLORATIONS):
            raise ValueError(f"exploration must be one of {list(EXPLORATIONS)} or None, got {exploration!r}")
        self.exploration = exploration or self._default_exploration
        if isinstance(imitation_coef, bool) or not isinstance(imitation_coef, int | float) or not imitation_coef >= 0:
            raise ValueError(f"imitation_coef must be a number >= 0, got {imitation_coef!r}")
        self.imitation_coef = float(imitation_coef)
        self.branched_rollouts = rollout_settings(branched_rollouts)
        self.rollout_runner: ModelRolloutRunner | None = None
        self.realtime = realtime
        self.env_id = env_id_of(env) if not isinstance(env, str) else env
        if hasattr(env, "action_space") and hasattr(env, "observation_space"):  # fail before SB3's asserts
            check_spaces(env.observation_space, env.action_space, who=who)
        self.model_fitted = False
        self._last_model_fit = -1
        self._model_fit_due = False
        self.planner: Any = None  # a DMDMPCPlanner, or a RealTimeController around one
        self._eval_planner: DMDMPCPlanner | None = None
        self._warned_actor_predict = False
        self.dynamics: Any = None
        self.part_times = PartTimes()  # seconds in planning, model fits, rollouts and gradient steps
        super().__init__(  # type: ignore[call-arg]
            policy, env, replay_buffer_class=replay_buffer_class, _init_setup_model=False, **kwargs
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()  # type: ignore[misc]
        self._setup_demo()

    @property
    def critic_value(self) -> CriticValue:
        """How the critic enters the planner's returns (from this algorithm's settings)."""
        return CriticValue(self.use_terminal_value, self.critic_reduce, self.terminal_value_starts)

    @property
    def schedule(self) -> DeMoSchedule:
        """When the planner acts and when the model's fit is due (from this algorithm's settings)."""
        return DeMoSchedule(self.model_train_freq, self.model_learning_starts, self.planner_starts)

    # ------------------------------------------------------------------ set-up

    def _setup_demo(self) -> None:
        """Build the dynamics model and the planner (called from ``_setup_model`` and after ``load``)."""
        check_spaces(self.observation_space, self.action_space, who=type(self).__name__)
        if self.model == "mujoco" and self.env is None:
            self.dynamics = None  # built by set_env / learn, it needs the live simulator
        else:
            self.dynamics = agent_dynamics(self, self.model, self.model_kwargs, env_id=self.env_id)
            if self.env is not None and is_hardware_env(self.env):  # plan through a model, never the robot itself
                check_model_allowed(self.env, self.dynamics)
        self._augmentor_generator = stream_generator(self.seed, AUGMENTOR, self.device)
        self._exploration_generator = stream_generator(self.seed, EXPLORATION, self.device)
        if self.exploration == "actor" and getattr(self, "use_sde", False):
            raise ValueError(
                f"{type(self).__name__}: exploration='actor' samples around the plan with the actor's std, which "
                "gSDE (use_sde=True) does not give per step; use exploration='planner' with gSDE"
            )
        self.close_planner()
        self.planner = self._make_rollout_planner() if self.dynamics is not None else None
        self._eval_planner = None
        self._setup_rollout_runner()

    def _setup_rollout_runner(self) -> None:
        """The branched rollouts' runner (kept when ``load`` restored one with the same settings)."""
        settings = self.branched_rollouts = rollout_settings(self.branched_rollouts)
        if settings is None:
            self.rollout_runner = None
            return
        check_rollout_target(self.replay_buffer, self.model, type(self).__name__)
        runner = self.rollout_runner
        if runner is None or not runner.fits(settings, self.device):
            self.rollout_runner = ModelRolloutRunner(settings, rollout_generator(self.seed, self.device))

    def _make_rollout_planner(self) -> Any:
        """The planner that picks rollout actions: under a RealTimeController when ``realtime`` says so."""
        planner = self.make_planner()
        if self.realtime is False or self.env is None:
            return planner
        from sb3_demo.realtime import PlanAheadController, RealTimeController

        if self.realtime is None and not is_hardware_env(self.env):
            return planner
        kwargs = dict(self.realtime) if isinstance(self.realtime, dict) else {}
        controller = PlanAheadController if kwargs.pop("plan_ahead", False) else RealTimeController
        envs = single_envs(self.env)
        unwrapped = getattr(envs[0], "unwrapped", envs[0])
        if len(envs) == 1 and hasattr(unwrapped, "last_observation_time") and "step_start_fn" not in kwargs:
            kwargs["step_start_fn"] = lambda: unwrapped.last_observation_time  # the step starts at the observation
        return controller.for_env(planner, self.env, **kwargs)

    @property
    def latency_stats(self) -> Any:
        """The rollout planner's :class:`~sb3_demo.realtime.LatencyStats` (None when not under a deadline)."""
        return getattr(self.planner, "stats", None)

    def make_planner(self, stream: str = ROLLOUT_PLANNER, deterministic_prior: bool = False) -> DMDMPCPlanner:
        """The planner over ``self.dynamics``; ``deterministic_prior`` for evaluation (same obs, same action).

        With VecNormalize the planner works on original observations; the actor/critic see normalised ones.

        :param stream: the planner's random stream (``ROLLOUT_PLANNER`` or ``PREDICT_PLANNER``)
        :param deterministic_prior: the actor's mean action as the prior
        """
        settings = self.planner_kwargs
        if hasattr(self.dynamics, "state_from_env"):  # simulator states (model='mujoco') lose precision in float32
            settings = {"dtype": th.float64, **settings}
        return make_policy_planner(
            self.dynamics,
            self.policy,
            self.action_space,
            settings,
            critic=self.critic_value,
            agent=self,
            obs_transform=vec_normalize_obs_transform(self._vec_normalize_env, self.device),
            deterministic_prior=deterministic_prior,
            seed=self.seed,
            device=self.device,
            stream=stream,
        )

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        super().set_env(env, force_reset=force_reset)  # type: ignore[misc]
        if self.model == "mujoco":
            self.dynamics = make_dynamics("mujoco", self.observation_space, self.action_space, env=self.env)
            self.close_planner()
            self.planner = self._make_rollout_planner()
            self._eval_planner = None

    # ------------------------------------------------------------------ when to plan

    @property
    def uses_learned_model(self) -> bool:
        return isinstance(self.model, str) and self.model in LEARNED_MODELS

    def planner_active(self) -> bool:
        """Whether the planner chooses rollout actions now."""
        if self.planner is None:
            return False
        return self.schedule.planner_active(
            self.num_timesteps, self.learning_starts, self.uses_learned_model, self.model_fitted
        )

    # ------------------------------------------------------------------ rollouts

    def _planning_states(self, obs: np.ndarray, env: Any = None) -> th.Tensor:
        """The planner's states for a batch of observations: the observations themselves, or the
        simulator's physics states (model='mujoco')."""
        state_from_env = getattr(self.dynamics, "state_from_env", None)
        if state_from_env is not None:
            vec_env = env if env is not None else self.env
            assert vec_env is not None, "model='mujoco' needs the training env"
            envs = single_envs(vec_env)
            return th.stack([state_from_env(e) for e in envs]).to(self.device)
        return th.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device).reshape(obs.shape[0], -1)

    def _rollout_obs(self) -> np.ndarray:
        """Observations in the model's scale (the original ones under VecNormalize)."""
        if self._vec_normalize_env is not None:
            return self._last_original_obs
        return self._last_obs

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.planner_active():
            return super()._sample_action(learning_starts, action_noise, n_envs)  # type: ignore[misc]
        with self.part_times.measure("planning"):
            return self._planned_action(action_noise)

    def _planned_action(self, action_noise: Any) -> tuple[np.ndarray, np.ndarray]:
        """The rollout planner's action for the current observation, with the chosen exploration."""
        assert self.planner is not None
        states = self._planning_states(self._rollout_obs())
        step = plan_step(self.planner, states, deterministic=self.exploration != "planner", logger=self.logger)
        planned = step.result.normalized_action.detach()
        if self.exploration == "actor" and samples_own_noise(self.policy):  # SAC; TD3 adds its action_noise below
            obs, _ = self.policy.obs_to_tensor(self._last_obs)
            planned = explore_around(self.policy, obs, planned.to(self.device), self._exploration_generator)
        scaled = planned.cpu().numpy().astype(np.float32)
        if action_noise is not None and self.exploration != "none":
            scaled = np.clip(scaled + action_noise(), -1.0, 1.0)
        self._planner_fallbacks = getattr(self, "_planner_fallbacks", 0) + int(step.result.fallback.sum())
        self.logger.record("planner/fallbacks", self._planner_fallbacks)
        self._pending_imagined = step.imagination() if self.imagined_rollouts > 0 else None
        return self.policy.unscale_action(scaled), scaled

    def _store_transition(
        self,
        replay_buffer: Any,
        buffer_action: np.ndarray,
        new_obs: Any,
        reward: Any,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        check_finite_step(new_obs, reward, infos, self.num_timesteps // max(1, len(infos)))
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[misc]
        if self.planner is not None:
            with self.part_times.measure("imagination"):
                add_imagined(
                    replay_buffer,
                    self.dynamics,
                    getattr(self, "_pending_imagined", None),
                    self.planner.unscale_action,
                    self._augmentor_generator,
                )
        self._pending_imagined = None
        if self.planner is not None and np.any(dones):
            self.planner.reset(np.flatnonzero(dones))

    # ------------------------------------------------------------------ the model

    def _on_step(self) -> None:
        super()._on_step()  # type: ignore[misc]
        if not self.uses_learned_model or self.dynamics is None:
            return
        transitions = self.replay_buffer.size() * self.replay_buffer.n_envs
        if self.schedule.fit_due(self.num_timesteps, self.learning_starts, self._last_model_fit, transitions):
            self._model_fit_due = True

    def learn(self, *args: Any, **kwargs: Any) -> Any:
        """SB3's ``learn``; a controller planning ahead is stopped when it returns (or raises)."""
        try:
            return super().learn(*args, **kwargs)  # type: ignore[misc]
        finally:
            self.close_planner()

    def close_planner(self) -> None:
        """Stop the rollout planner's background work, if it has any (a plan-ahead controller's worker and
        its thread switch interval); the next plan starts it again."""
        close = getattr(self.planner, "close", None)
        if close is not None:
            close()

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """SB3's gradient steps, then (``imitation_coef > 0``, once the planner acts) the actor's imitation
        steps."""
        with self.part_times.measure("gradient_steps"):
            self._update_networks(gradient_steps, batch_size)
            if self.imitation_coef > 0 and self.planner_active():
                self._imitate_executed_actions(gradient_steps, batch_size)

    def _update_networks(self, gradient_steps: int, batch_size: int) -> None:
        """The base algorithm's gradient steps (a front end may spread them differently)."""
        super().train(gradient_steps, batch_size)  # type: ignore[misc]

    def _imitate_executed_actions(self, gradient_steps: int, batch_size: int) -> None:
        """Actor steps toward the actions in replay batches (the planner's, once it acts)."""
        actor = self.policy.actor
        losses = []
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            loss = self.imitation_coef * F.mse_loss(
                deterministic_actor_action(actor, batch.observations), batch.actions
            )
            actor.optimizer.zero_grad()
            loss.backward()
            actor.optimizer.step()
            losses.append(loss.item())
        self.logger.record("train/imitation_loss", float(np.mean(losses)))

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> Any:
        """SB3's rollout collection, then the model fit that fell due during it (off the control loop)."""
        rollout = super().collect_rollouts(*args, **kwargs)  # type: ignore[misc]
        wait_idle = getattr(self.planner, "wait_idle", None)
        if wait_idle is not None:  # a plan made ahead reads the model and the policy: let it finish first
            wait_idle()
        if self._model_fit_due:
            self._model_fit_due = False
            self.fit_model()
        self._branched_rollouts()
        return rollout

    def _branched_rollouts(self) -> None:
        """The branched model rollouts that are due, stored as model data before the gradient steps."""
        runner = self.rollout_runner
        if runner is None or self.dynamics is None:
            return
        if not runner.active(self.num_timesteps, self.learning_starts, self.uses_learned_model, self.model_fitted):
            return
        with self.part_times.measure("branched_rollouts"):
            runner.maybe_run(
                self.num_timesteps,
                self.replay_buffer,
                self.dynamics,
                self.policy,
                self.action_space,
                vec_normalize_obs_transform(self._vec_normalize_env, self.device),
                self.logger,
            )

    def dump_logs(self) -> None:
        stats = self.latency_stats
        if stats is not None and stats.steps > 0:
            stats.log(self.logger)
        self.part_times.log(self.logger)
        super().dump_logs()  # type: ignore[misc]

    def fit_model(self) -> dict[str, float]:
        """Fit the learned model on the real transitions of the replay buffer now."""
        logger = getattr(self, "_logger", None)  # SB3 sets it up in learn(); a fit before that logs nothing
        with self.part_times.measure("model_fit"):
            stats = fit_model_from_buffer(self.dynamics, self.replay_buffer, self.model_fit_kwargs, logger)
        self._last_model_fit = self.num_timesteps
        self.model_fitted = True
        return stats

    # ------------------------------------------------------------------ evaluation

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Plan an action (or the bare actor's, with ``predict_with_planner=False`` or before the model is ready).

        As a recurrent policy's: ``state`` is the previous call's plan state (None: a fresh plan), the
        returned state the next call's, and ``episode_start`` (as passed by ``evaluate_policy``) starts the
        plans of new episodes afresh (see :mod:`sb3_demo.common.plan_state`). With ``deterministic=True``
        the same (observation, state) gives the same action; nothing here moves a stream training uses.
        A simulator model (``model="mujoco"``) plans from the live env's physics state, which an observation
        does not carry: ``predict`` then returns the bare actor's action and warns once.
        """
        ready = self.planner is not None and (not self.uses_learned_model or self.model_fitted)
        if not (self.predict_with_planner and ready):
            return super().predict(observation, state, episode_start, deterministic)  # type: ignore[misc]
        if hasattr(self.dynamics, "state_from_env"):
            if not self._warned_actor_predict:
                self._warned_actor_predict = True
                warnings.warn(
                    f"{type(self).__name__}.predict returns the bare actor's action: model='mujoco' plans from the "
                    "training env's physics state, which an observation does not carry (set "
                    "predict_with_planner=False to silence this, or use a learned model to plan in predict)",
                    stacklevel=2,
                )
            return super().predict(observation, state, episode_start, deterministic)  # type: ignore[misc]
        obs = np.asarray(observation, dtype=np.float32)
        vectorized = obs.ndim == 2
        if obs.ndim == 1:
            obs = obs[None]
        if obs.shape[1:] != self.observation_space.shape:
            raise ValueError(
                f"observation of shape {np.asarray(observation).shape} does not match the observation space "
                f"{self.observation_space.shape}"
            )
        if self._eval_planner is None:
            self._eval_planner = self.make_planner(PREDICT_PLANNER, deterministic_prior=True)
        step, next_state = plan_predict(
            self._eval_planner,
            th.as_tensor(obs, device=self.device),
            state,
            episode_start,
            deterministic,
            self.seed,
        )
        actions = self.policy.unscale_action(step.result.normalized_action.detach().cpu().numpy())
        actions = np.clip(actions, self.action_space.low, self.action_space.high)
        return (actions if vectorized else actions[0]), next_state

    # ------------------------------------------------------------------ saving

    @classmethod
    def load(cls, path: Any, *args: Any, **kwargs: Any) -> Any:
        """SB3's ``load``; a plain SAC/TD3 file gets a clear error that points to ``from_sac``/``from_td3``."""
        check_demo_checkpoint(path, cls.__name__, cls._from_base_method, kwargs.get("custom_objects"))
        return super().load(path, *args, **kwargs)  # type: ignore[misc]

    def _excluded_save_params(self) -> list[str]:
        excluded = super()._excluded_save_params()  # type: ignore[misc]
        return [*excluded, "planner", "_eval_planner", "dynamics", "_pending_imagined", "_augmentor_generator"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()  # type: ignore[misc]
        if isinstance(self.dynamics, th.nn.Module):
            state_dicts = [*state_dicts, "dynamics"]
        return state_dicts, variables
