"""DeMoARS: Augmented Random Search of a linear policy with the DeMo Layer in the loop.

sb3-contrib's :class:`~sb3_contrib.ARS` improves a linear policy from the returns of ``2 * n_delta``
perturbed copies, one episode each. DeMoARS keeps that update and adds the DeMo Layer (DMD-MPC over a
dynamics model, the current linear policy as its prior) in two places:

1. **Distillation (DAgger-style, no extra env steps).** Every observation that the perturbed policies
   visit is a state the learner reaches. After each ARS step a batch of them is labelled with the
   planner's action (planning costs model calls, not env steps), added to an aggregated data set, and
   the linear policy is fitted to the data by ridge regression *towards the weights ARS just produced*
   (:func:`~sb3_demo.ars.distill.ridge_fit_linear`), then blended with them (``distill_weight``).
2. **Layer-guided rollouts (optional, counted env steps).** Every ``guided_every`` updates,
   ``guided_episodes`` episodes are run by the layer itself (the planner acts, warm-started step to
   step) *before* the ARS candidates; their states and the planner's actions join the data set
   (expert-distribution states) and are distilled at once, so the candidates explore around a policy
   that has seen where the layer went (on MountainCarContinuous the goal, which ARS's perturbations of a
   policy that stays at the bottom rarely find).

Every environment step, the ARS candidates' and the guided rollouts', counts in ``num_timesteps``.
The model is the exact analytic one where it exists (``model="analytic"``: Pendulum-v1,
MountainCarContinuous-v0), or the learned :class:`~sb3_demo.dynamics.EnsembleDynamics`
(``model="ensemble"``), fitted every ``model_train_freq`` env steps on all the real transitions; labels
and guided rollouts start once it has been fitted. At test time the layer is removed: the linear
policy acts alone (``model.predict``), or wrap it with :class:`~sb3_demo.DeMoPolicy` to keep it.

Without a critic, the planner's terminal value is either nothing or ``value_rollout_steps`` steps of the
linear policy through the model (:func:`~sb3_demo.common.policy_fns.prior_rollout_value`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import ARS
from sb3_contrib.ars.policies import ARSPolicy
from sb3_contrib.common.vec_env.async_eval import AsyncEval
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.vec_env import VecNormalize

from sb3_demo.ars.distill import linear_layer_of, ridge_fit_linear
from sb3_demo.checks import check_int
from sb3_demo.common.model_factory import agent_dynamics, check_spaces
from sb3_demo.common.policy_fns import normalize_obs, prior_rollout_value
from sb3_demo.common.policy_planner import DEFAULT_LAYER_PLANNER_KWARGS, make_policy_planner, planner_settings
from sb3_demo.common.schedule import DeMoSchedule, fit_settings, log_fit
from sb3_demo.dynamics.base import DynamicsModel

ActFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class DeMoARS(ARS):
    """ARS of a linear policy, guided and distilled by the DeMo Layer (see the module docstring).

    ARS arguments (``n_delta``, ``n_top``, ``learning_rate``, ``delta_std``, ``zero_policy``,
    ``alive_bonus_offset``, ``n_eval_episodes``, ...) are sb3-contrib's. The others:

    :param model: ``"analytic"`` (exact classic-control model), ``"ensemble"`` (learned, with the env's
        known reward/termination functions), ``"mujoco"`` (the env's simulator) or a
        :class:`~sb3_demo.dynamics.DynamicsModel`
    :param model_kwargs: constructor arguments of the model (e.g. ``EnsembleDynamics``' ``hidden_sizes``)
    :param model_fit_kwargs: arguments of a learned model's ``fit`` (e.g. ``max_epochs``)
    :param model_train_freq: env steps between fits of a learned model
    :param model_learning_starts: env steps of real data before the first fit
    :param random_steps: env steps of uniformly random actions before the first ARS update (counted), so
        that a learned model sees what the actions do (ARS's first policies barely move: zero weights and
        small perturbations)
    :param planner_kwargs: :class:`~sb3_demo.DMDMPCPlanner` settings of the layer (missing ones from
        ``DEFAULT_LAYER_PLANNER_KWARGS``)
    :param value_rollout_steps: > 0: terminal value = that many steps of the linear policy in the model
    :param labels_per_update: visited states labelled by the planner after each ARS step (0: no labels)
    :param min_label_advantage: keep only labels whose plan's expected return beats the linear policy's own
        rollout (over the same horizon, plus the terminal value) by more than this (return units); None
        keeps every label. Where no plan sees more than small action-cost savings (MountainCar before the
        goal is in sight), this leaves ARS's exploration alone instead of shrinking the policy to zero.
    :param distill_ridge: pull of the regression towards the ARS weights (per sample), > 0
    :param distill_weight: blend of the fitted weights into the policy after each update, in [0, 1]
        (0: plain ARS plus guided rollouts)
    :param distill_check: run the distilled policy for ``n_eval_episodes`` episodes (counted env steps)
        and adopt it only if its mean return is at least the mean return of this update's ARS candidates;
        otherwise keep the ARS weights (the labels stay in the data set)
    :param distill_patience: with ``distill_check``, stop distilling after this many rejections in a row
        (from then on plain ARS); None never stops
    :param dataset_size: labelled pairs kept (the oldest are dropped)
    :param guided_episodes: episodes run by the layer every ``guided_every`` updates (counted env steps)
    :param guided_every: ARS updates between guided rollouts, >= 1
    :param guided_deterministic: the layer acts with the plan's mean (True) or a sampled sequence
    """

    policy_aliases: ClassVar[dict[str, type[ARSPolicy]]] = ARS.policy_aliases  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[ARSPolicy],
        env: GymEnv | str,
        n_delta: int = 8,
        n_top: int | None = None,
        learning_rate: float | Schedule = 0.02,
        delta_std: float | Schedule = 0.05,
        zero_policy: bool = True,
        alive_bonus_offset: float = 0,
        n_eval_episodes: int = 1,
        model: str | DynamicsModel | Any = "analytic",
        model_kwargs: dict[str, Any] | None = None,
        model_fit_kwargs: dict[str, Any] | None = None,
        model_train_freq: int = 250,
        model_learning_starts: int = 500,
        random_steps: int = 0,
        planner_kwargs: dict[str, Any] | None = None,
        value_rollout_steps: int = 0,
        labels_per_update: int = 256,
        min_label_advantage: float | None = None,
        distill_ridge: float = 0.1,
        distill_weight: float = 1.0,
        distill_check: bool = False,
        distill_patience: int | None = None,
        dataset_size: int = 20_000,
        guided_episodes: int = 0,
        guided_every: int = 1,
        guided_deterministic: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        seed: int | None = None,
        verbose: int = 0,
        device: th.device | str = "cpu",
        _init_setup_model: bool = True,
    ) -> None:
        for name, value, low in (
            ("model_learning_starts", model_learning_starts, 0),
            ("random_steps", random_steps, 0),
            ("value_rollout_steps", value_rollout_steps, 0),
            ("labels_per_update", labels_per_update, 0),
            ("dataset_size", dataset_size, 1),
            ("guided_episodes", guided_episodes, 0),
            ("guided_every", guided_every, 1),
        ):
            check_int(name, value, low)
        if not (isinstance(distill_ridge, int | float) and distill_ridge > 0 and math.isfinite(distill_ridge)):
            raise ValueError(f"distill_ridge must be a finite number > 0, got {distill_ridge!r}")
        if not (isinstance(distill_weight, int | float) and 0.0 <= distill_weight <= 1.0):
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight!r}")
        # the model's learning starts count the transitions DeMoARS keeps for fits
        self.schedule = DeMoSchedule(
            model_train_freq, model_learning_starts=0, min_transitions=max(1, model_learning_starts)
        )
        self.model_choice = model
        self.model_kwargs = dict(model_kwargs or {})
        self.model_fit_kwargs = fit_settings(model_fit_kwargs)
        self.model_train_freq = model_train_freq
        self.model_learning_starts = model_learning_starts
        self.random_steps = random_steps
        self.planner_kwargs = planner_settings(planner_kwargs, DEFAULT_LAYER_PLANNER_KWARGS, "DeMoARS")
        self.value_rollout_steps = value_rollout_steps
        self.labels_per_update = labels_per_update
        if min_label_advantage is not None and not math.isfinite(float(min_label_advantage)):
            raise ValueError(f"min_label_advantage must be a finite number or None, got {min_label_advantage!r}")
        self.min_label_advantage = None if min_label_advantage is None else float(min_label_advantage)
        self.distill_ridge = float(distill_ridge)
        self.distill_weight = float(distill_weight)
        check_int("distill_patience", distill_patience, 1, allow_none=True)
        self.distill_check = bool(distill_check)
        self.distill_patience = distill_patience
        self.dataset_size = dataset_size
        self.guided_episodes = guided_episodes
        self.guided_every = guided_every
        self.guided_deterministic = guided_deterministic
        self.dynamics: DynamicsModel | None = None
        super().__init__(
            policy,
            env,
            n_delta=n_delta,
            n_top=n_top,
            learning_rate=learning_rate,
            delta_std=delta_std,
            zero_policy=zero_policy,
            alive_bonus_offset=alive_bonus_offset,
            n_eval_episodes=n_eval_episodes,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            seed=seed,
            verbose=verbose,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    # ------------------------------------------------------------------ set-up

    def _setup_model(self) -> None:
        super()._setup_model()
        check_spaces(self.observation_space, self.action_space, who="DeMoARS")
        assert isinstance(self.action_space, spaces.Box) and isinstance(self.observation_space, spaces.Box)
        linear_layer_of(self.policy)  # raises for non-linear policies
        if self.env is not None and self.env.num_envs != 1:
            raise ValueError(f"DeMoARS runs its rollouts in one env (n_envs=1), got n_envs={self.env.num_envs}")
        if self.dynamics is None:
            self.dynamics = agent_dynamics(self, self.model_choice, self.model_kwargs)
        self._model_is_learned = callable(getattr(self.dynamics, "fit", None))
        self._model_ready = not self._model_is_learned
        self._steps_at_last_fit = 0
        self._reset_data()
        self._build_planners()
        self.num_guided_steps = 0
        self.num_random_steps = 0
        self.num_labels = 0
        self.num_label_fallbacks = 0
        self.num_distill_accepted = 0
        self.num_distill_rejected = 0
        self._rejections_in_a_row = 0
        self._candidate_episode_returns: list[float] = []

    def _reset_data(self) -> None:
        obs_dim = int(self.observation_space.shape[0])  # type: ignore[index]
        act_dim = int(self.action_space.shape[0])  # type: ignore[index]
        self._label_obs = np.zeros((0, obs_dim), dtype=np.float32)
        self._label_actions = np.zeros((0, act_dim), dtype=np.float32)
        self._visited: list[np.ndarray] = []  # original observations of this update's candidate rollouts
        self._transitions: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "next_obs", "rew", "term")}

    def _obs_transform(self, obs: th.Tensor) -> th.Tensor:
        """Original observations -> the policy's inputs, with the live VecNormalize statistics."""
        return normalize_obs(obs, self._vec_normalize_env)

    def _build_planners(self) -> None:
        """The label planner (independent states: the plan's mean re-seeded from the linear policy's rollout
        each call) and the guide planner (episodes: warm-started plans), over the same prior and value."""
        assert self.dynamics is not None and isinstance(self.action_space, spaces.Box)
        seed = None if self.seed is None else int(self.seed)
        label_settings = {**self.planner_kwargs, "shift": "prior"}
        self.label_planner, self.guide_planner = (
            make_policy_planner(
                self.dynamics,
                self.policy,
                self.action_space,
                settings,
                critic=None,
                value_rollout_steps=self.value_rollout_steps,
                obs_transform=self._obs_transform,
                deterministic_prior=True,
                seed=planner_seed,
                device=self.device,
            )
            for settings, planner_seed in (
                (label_settings, seed),
                (self.planner_kwargs, None if seed is None else seed + 1),
            )
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "label_planner",
            "guide_planner",
            "_label_obs",
            "_label_actions",
            "_visited",
            "_transitions",
        ]

    # ------------------------------------------------------------------ rollouts

    def _original(self, obs: Any) -> np.ndarray:
        vec_norm = self._vec_normalize_env
        return np.asarray(vec_norm.get_original_obs() if vec_norm is not None else obs)

    def _unnormalize(self, obs: np.ndarray) -> np.ndarray:
        vec_norm = self._vec_normalize_env
        if vec_norm is None or not vec_norm.norm_obs:
            return obs
        rms: Any = vec_norm.obs_rms
        return obs * np.sqrt(rms.var + vec_norm.epsilon) + rms.mean

    def _run_episode(self, act: ActFn, callback: BaseCallback) -> tuple[float, int, np.ndarray, np.ndarray]:
        """One episode in the (single) training env; every step counts.

        :param act: ``act(policy_obs (1, S), original_obs (1, S)) -> (1, A)`` env-unit actions
        :return: return, length, the original observations (L, S) and the executed actions (L, A)
        """
        assert self.env is not None
        obs = self.env.reset()
        assert isinstance(obs, np.ndarray)
        raw = self._original(obs)
        episode_return, length = 0.0, 0
        observations, actions = [], []
        vec_norm: VecNormalize | None = self._vec_normalize_env
        while True:
            action = np.asarray(act(obs, raw), dtype=np.float32).reshape(1, -1)
            assert isinstance(self.action_space, spaces.Box)
            action = np.clip(action, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = self.env.step(action)
            assert isinstance(new_obs, np.ndarray)
            reward = float(vec_norm.get_original_reward()[0]) if vec_norm is not None else float(rewards[0])
            new_raw = self._original(new_obs)
            done = bool(dones[0])
            if done:
                terminal = infos[0].get("terminal_observation")
                next_raw = self._unnormalize(np.asarray(terminal)[None]) if terminal is not None else new_raw
                terminated = not infos[0].get("TimeLimit.truncated", False)
            else:
                next_raw, terminated = new_raw, False
            observations.append(raw[0].copy())
            actions.append(action[0].copy())
            if self._model_is_learned:
                tr = self._transitions
                tr["obs"].append(raw[0].copy())
                tr["act"].append(action[0].copy())
                tr["next_obs"].append(np.asarray(next_raw, dtype=np.float32).reshape(-1).copy())
                tr["rew"].append(np.float32(reward))
                tr["term"].append(np.float32(terminated))
            episode_return += reward
            length += 1
            self.num_timesteps += 1
            callback.on_step()
            obs, raw = new_obs, new_raw
            if done:
                return episode_return, length, np.asarray(observations), np.asarray(actions)

    def evaluate_candidates(
        self, candidate_weights: th.Tensor, callback: BaseCallback, async_eval: AsyncEval | None
    ) -> th.Tensor:
        """ARS's candidate evaluation (one process), also recording the visited original observations."""
        if async_eval is not None:
            raise ValueError("DeMoARS evaluates candidates in this process: async_eval is not supported")
        candidate_returns = th.zeros(self.pop_size, device=self.device)
        train_policy = copy.deepcopy(self.policy)
        self.ep_info_buffer = []  # type: ignore[assignment]
        self._visited = []
        self._candidate_episode_returns = []
        callback.on_rollout_start()

        def act(obs: np.ndarray, raw: np.ndarray) -> np.ndarray:
            return train_policy.predict(obs, deterministic=True)[0]

        for idx in range(self.pop_size):
            train_policy.load_from_vector(candidate_weights[idx].cpu().numpy())
            returns, lengths = [], []
            for _ in range(self.n_eval_episodes):
                ret, length, observations, _ = self._run_episode(act, callback)
                returns.append(ret)
                lengths.append(length)
                self._visited.append(observations)
            candidate_returns[idx] = sum(returns) + self.alive_bonus_offset * sum(lengths)
            self._candidate_episode_returns.extend(returns)
            self._mimic_monitor_wrapper(np.asarray(returns), np.asarray(lengths))
        callback.on_rollout_end()
        return candidate_returns

    def _guided_rollout(self, callback: BaseCallback) -> float:
        """One episode run by the layer; its states and the planner's actions join the data set."""
        self.guide_planner.reset()

        def act(obs: np.ndarray, raw: np.ndarray) -> np.ndarray:
            states = th.as_tensor(raw, dtype=th.float32)
            result = self.guide_planner.plan(states, deterministic=self.guided_deterministic)
            return result.action.cpu().numpy()

        ret, length, observations, actions = self._run_episode(act, callback)
        self.num_guided_steps += length
        self._add_labels(observations, actions)
        return ret

    # ------------------------------------------------------------------ model, labels, distillation

    def _maybe_fit_model(self) -> None:
        if not self._model_is_learned:
            return
        n = len(self._transitions["obs"])
        last_fit = self._steps_at_last_fit if self._model_ready else -1
        if not self.schedule.fit_due(self.num_timesteps, 0, last_fit, n):
            return
        tr = {k: np.asarray(v, dtype=np.float32) for k, v in self._transitions.items()}
        stats = self.dynamics.fit(  # type: ignore[union-attr]
            tr["obs"], tr["act"], tr["next_obs"], tr["rew"], tr["term"], **self.model_fit_kwargs
        )
        self._steps_at_last_fit = self.num_timesteps
        self._model_ready = True
        log_fit(self.logger, stats)

    def _add_labels(self, observations: np.ndarray, actions: np.ndarray) -> None:
        self._label_obs = np.concatenate([self._label_obs, observations.astype(np.float32)])[-self.dataset_size :]
        self._label_actions = np.concatenate([self._label_actions, actions.astype(np.float32)])[-self.dataset_size :]

    def label_states(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The layer's actions at independent states (one batched plan; no env steps).

        :param observations: (N, S) original observations
        :return: the (M, S) states whose plan succeeded and their (M, A) env-unit actions
        """
        states = th.as_tensor(observations, dtype=th.float32, device=self.device)
        self.label_planner.reset()
        result = self.label_planner.plan(states, deterministic=True)
        ok_t = ~result.fallback
        if self.min_label_advantage is not None:
            horizon = self.label_planner.horizon + self.value_rollout_steps
            assert isinstance(self.action_space, spaces.Box) and self.label_planner.prior is not None
            assert self.dynamics is not None
            prior_return = prior_rollout_value(self.dynamics, self.label_planner.prior, self.action_space, horizon)(
                states
            )
            ok_t &= (result.expected_return - prior_return) > self.min_label_advantage
        ok = ok_t.cpu().numpy()
        self.num_labels += int(ok.sum())
        self.num_label_fallbacks += int((~ok).sum())
        return observations[ok], result.action.cpu().numpy()[ok]

    def distill(self) -> dict[str, float]:
        """Ridge-fit the linear policy to the labelled data, towards and blended with the current weights."""
        layer = linear_layer_of(self.policy)
        obs = th.as_tensor(self._label_obs, dtype=th.float32, device=self.device)
        targets = th.as_tensor(self._label_actions, dtype=th.float32, device=self.device)
        with th.no_grad():
            features = self._obs_transform(obs)
            weight, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
            before = float(((features @ weight.T + (0.0 if bias is None else bias)) - targets).pow(2).mean())
            new_weight, new_bias = ridge_fit_linear(features, targets, weight, bias, self.distill_ridge)
            alpha = self.distill_weight
            layer.weight.copy_((1.0 - alpha) * weight + alpha * new_weight)
            if bias is not None and new_bias is not None:
                layer.bias.copy_((1.0 - alpha) * bias + alpha * new_bias)
            predicted = features @ layer.weight.T + (0.0 if layer.bias is None else layer.bias)
            after = float((predicted - targets).pow(2).mean())
        self.weights = th.nn.utils.parameters_to_vector(self.policy.parameters()).detach()  # type: ignore[assignment]
        return {"mse_before": before, "mse_after": after, "num_pairs": float(len(targets))}

    def _check_distilled(self, previous: np.ndarray, callback: BaseCallback) -> None:
        """Keep the distilled weights only if they do at least as well as this update's ARS candidates."""
        policy = self.policy

        def act(obs: np.ndarray, raw: np.ndarray) -> np.ndarray:
            return policy.predict(obs, deterministic=True)[0]

        returns = [self._run_episode(act, callback)[0] for _ in range(self.n_eval_episodes)]
        baseline = float(np.mean(self._candidate_episode_returns)) if self._candidate_episode_returns else -math.inf
        if float(np.mean(returns)) >= baseline:
            self.num_distill_accepted += 1
            self._rejections_in_a_row = 0
        else:
            self.num_distill_rejected += 1
            self._rejections_in_a_row += 1
            self.policy.load_from_vector(previous)
            self.weights = th.as_tensor(previous, device=self.device)  # type: ignore[assignment]

    # ------------------------------------------------------------------ the update

    def _random_warmup(self, callback: BaseCallback) -> None:
        """Episodes of uniformly random actions until ``random_steps`` (their transitions feed the model)."""
        assert isinstance(self.action_space, spaces.Box)
        space = self.action_space
        rng = np.random.default_rng(self.seed)

        def act(obs: np.ndarray, raw: np.ndarray) -> np.ndarray:
            return rng.uniform(space.low, space.high).astype(np.float32)[None]

        while self.num_random_steps < self.random_steps:
            self.num_random_steps += self._run_episode(act, callback)[1]

    def _distill_step(self, callback: BaseCallback) -> None:
        """Distil the labelled data into the policy (and check it, with ``distill_check``), unless stopped."""
        stopped = self.distill_patience is not None and self._rejections_in_a_row >= self.distill_patience
        if self.distill_weight > 0.0 and len(self._label_obs) > 0 and not stopped:
            previous = self.policy.parameters_to_vector()
            stats = self.distill()
            if self.distill_check:
                self._check_distilled(previous, callback)
            for key, value in stats.items():
                self.logger.record(f"demo/distill_{key}", value)

    def _do_one_update(self, callback: BaseCallback, async_eval: AsyncEval | None) -> None:
        if self.num_random_steps < self.random_steps:
            self._random_warmup(callback)
        if self.guided_episodes > 0 and self._n_updates % self.guided_every == 0:
            # the layer goes first and its episodes are distilled, so that this update's ARS candidates explore
            # around a policy that has seen where the layer went (e.g. the goal of a sparse task)
            self._maybe_fit_model()
            if self._model_ready:
                guided_returns = [self._guided_rollout(callback) for _ in range(self.guided_episodes)]
                self.logger.record("demo/guided_return", float(np.mean(guided_returns)))
                self._maybe_fit_model()
                self._distill_step(callback)
        super()._do_one_update(callback, async_eval)  # ARS: candidates in the env, then the ARS step
        self._maybe_fit_model()
        if not self._model_ready:
            return
        if self.labels_per_update > 0 and self._visited:
            visited = np.concatenate(self._visited)
            count = min(self.labels_per_update, len(visited))
            pick = np.sort(np.random.default_rng(self.num_timesteps).choice(len(visited), count, replace=False))
            self._add_labels(*self.label_states(visited[pick]))
        self._distill_step(callback)
        self.logger.record("demo/distill_accepted", self.num_distill_accepted)
        self.logger.record("demo/distill_rejected", self.num_distill_rejected)
        self.logger.record("demo/guided_steps", self.num_guided_steps)
        self.logger.record("demo/label_fallbacks", self.num_label_fallbacks)
