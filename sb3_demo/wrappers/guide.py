"""The planning core of the DeMo env wrappers: which action runs, for a batch of environments.

A :class:`DeMoGuide` holds a :class:`~sb3_demo.DMDMPCPlanner` built around an SB3 agent (its actor as
the planner's prior, its critic as terminal value) and decides, for each environment and step, whether
the agent's own action or the planner's runs (``guide_prob``). It lives in the process of the agent's
networks: inside :class:`~sb3_demo.wrappers.DeMoVecEnvWrapper` (main process, any VecEnv) or
:class:`~sb3_demo.wrappers.DeMoWrapper` (one gymnasium env).

A guide is *attached* to an agent by :class:`~sb3_demo.wrappers.DeMoCallback` at the start of training,
or by hand (``wrapper.attach(agent)``) to evaluate a trained agent with the planner in the loop.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecNormalize

from sb3_demo.common.model_factory import LEARNED_MODELS, check_model_choice, check_spaces, make_dynamics
from sb3_demo.common.policy_fns import CriticReduce, vec_normalize_obs_transform
from sb3_demo.common.policy_planner import (
    DEFAULT_PLANNER_KWARGS,
    CriticValue,
    PlanStep,
    as_state_tensor,
    make_policy_planner,
    plan_step,
    planner_settings,
)
from sb3_demo.common.seeding import ROLLOUT_PLANNER, deterministic_seed
from sb3_demo.planner import DMDMPCPlanner

GuideProb = float | str | Callable[[float], float]
WRAPPER_MODELS = ("ensemble", "analytic")
UNATTACHED_CHOICES = ("raise", "passthrough")

# every guide of this process, so that DeMoCallback can attach the ones it does not train with (RL Zoo's
# evaluation env is built with the same wrapper as the training env)
_LIVE_GUIDES: weakref.WeakSet[DeMoGuide] = weakref.WeakSet()


def _not_attached_message(who: str) -> str:
    return (
        f"{who} is not attached to an agent, so it has no actor/critic to plan with. When training, add "
        f"DeMoCallback() to learn(): model.learn(..., callback=DeMoCallback()) (RL Zoo: a 'callback: "
        f"sb3_demo.DeMoCallback' entry). To evaluate a trained agent, call wrapper.attach(model) or pass "
        f"agent=model to the wrapper."
    )


def guide_prob_schedule(guide_prob: GuideProb) -> Callable[[float], float]:
    """``progress_remaining (1 -> 0) -> probability that the planner's action runs``.

    :param guide_prob: a probability in [0, 1]; ``"lin_<p>"``: ``p * progress_remaining`` (from ``p`` down
        to 0, as RL Zoo's linear schedules); or a callable of the progress remaining
    :raises ValueError: a probability outside [0, 1] or an unknown string
    """
    if isinstance(guide_prob, bool):
        raise TypeError(f"guide_prob must be a float in [0, 1], 'lin_<p>' or a callable, got {guide_prob!r}")
    if isinstance(guide_prob, str):
        if not guide_prob.startswith("lin_"):
            raise ValueError(f"guide_prob as a string must be 'lin_<p>' (e.g. 'lin_1.0'), got {guide_prob!r}")
        try:
            start = float(guide_prob[4:])
        except ValueError:
            raise ValueError(f"guide_prob as a string must be 'lin_<p>' (e.g. 'lin_1.0'), got {guide_prob!r}") from None
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"guide_prob 'lin_<p>' needs p in [0, 1], got {guide_prob!r}")
        return lambda progress_remaining: start * progress_remaining
    if callable(guide_prob):
        return guide_prob
    if isinstance(guide_prob, int | float):
        value = float(guide_prob)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"guide_prob must be in [0, 1], got {guide_prob!r}")
        return lambda _: value
    raise TypeError(f"guide_prob must be a float in [0, 1], 'lin_<p>' or a callable, got {type(guide_prob).__name__}")


def check_agent(agent: Any, use_terminal_value: bool = True, who: str = "DeMo guidance") -> None:
    """Raise a clear error for agents the planner cannot be built around.

    :raises TypeError: not an SB3 algorithm
    :raises ValueError: an algorithm without a critic (PPO, A2C, ...) or a non-Box action space
    """
    policy = getattr(agent, "policy", None)
    if policy is None or not hasattr(policy, "_predict"):
        raise TypeError(
            f"{who} needs an SB3 algorithm (SAC, TD3, sb3_contrib TQC or CrossQ), got {type(agent).__name__}"
        )
    if not isinstance(agent.action_space, spaces.Box):
        raise ValueError(
            f"{who} plans continuous actions and needs a Box action space; {type(agent).__name__} acts in "
            f"{agent.action_space}"
        )
    if use_terminal_value and getattr(policy, "critic", None) is None:
        raise ValueError(
            f"{who} needs an off-policy actor-critic whose critic gives the planner's terminal value: "
            f"{type(agent).__name__} ({type(policy).__name__}) has no Q-critic. Use SAC, TD3, or sb3_contrib "
            "TQC / CrossQ (on-policy algorithms such as PPO or A2C cannot learn from actions they did not "
            "choose)."
        )


class DeMoGuide:
    """Chooses between the agent's action and the planner's for a batch of ``B`` environments.

    :param observation_space: the env's observation space (a flat Box)
    :param action_space: the env's action space (a bounded Box)
    :param model: the planner's dynamics: ``"ensemble"`` (learned, fitted by :class:`DeMoCallback`),
        ``"analytic"`` (exact classic-control model, needs ``env_id``) or a
        :class:`~sb3_demo.dynamics.DynamicsModel` instance (e.g. an ensemble fitted during training)
    :param model_kwargs: constructor arguments of the model
    :param planner_kwargs: :class:`~sb3_demo.DMDMPCPlanner` settings; missing ones take
        ``DEFAULT_PLANNER_KWARGS`` (the 2022 reference with 2 iterations instead of 5)
    :param guide_prob: probability that the planner's action replaces the agent's, per env and step: a
        float in [0, 1], ``"lin_<p>"`` (``p`` decaying linearly to 0 over training) or a callable of the
        progress remaining (1 -> 0)
    :param critic_reduce: terminal value from the twin critics: ``"min"``, ``"q1"`` or ``"mean"``
    :param use_terminal_value: add the critic's value of the last planned state to each return
    :param terminal_value_starts: the agent's gradient updates before its critic's value is added (a
        critic warm-up; 0: from the start)
    :param deterministic: execute the plan's weighted mean (evaluation) instead of a sequence drawn by
        its weight (training, the planner's own exploration)
    :param on_unattached: ``"raise"`` (default): stepping before an agent is attached is an error;
        ``"passthrough"``: the agent's actions run unchanged until then
    :param env_id: gymnasium id of the env (for ``"analytic"`` and the known reward functions)
    :param seed: seed of the guide's coin flips and of the planner (default: the agent's seed)
    :param who: the owner's name in error messages
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        model: Any = "ensemble",
        model_kwargs: dict[str, Any] | None = None,
        planner_kwargs: dict[str, Any] | None = None,
        guide_prob: GuideProb = 1.0,
        critic_reduce: CriticReduce = "min",
        use_terminal_value: bool = True,
        terminal_value_starts: int = 0,
        deterministic: bool = False,
        on_unattached: str = "raise",
        env_id: str | None = None,
        seed: int | None = None,
        who: str = "DeMoWrapper",
    ) -> None:
        check_spaces(observation_space, action_space, who=who)
        check_model_choice(model, WRAPPER_MODELS, who)
        if on_unattached not in UNATTACHED_CHOICES:
            raise ValueError(f"{who}: on_unattached must be one of {list(UNATTACHED_CHOICES)}, got {on_unattached!r}")
        self.observation_space = observation_space
        self.action_space: spaces.Box = action_space  # type: ignore[assignment]
        self.model = model
        self.model_kwargs = dict(model_kwargs or {})
        self.planner_kwargs = planner_settings(planner_kwargs, DEFAULT_PLANNER_KWARGS, who)
        self.guide_prob = guide_prob
        self._guide_prob_fn = guide_prob_schedule(guide_prob)
        self.critic_value = CriticValue(use_terminal_value, critic_reduce, terminal_value_starts)
        self.deterministic = deterministic
        self.on_unattached = on_unattached
        self.env_id = env_id
        self.seed = seed
        self.who = who

        self.agent: Any = None
        self.dynamics: Any = None
        self.planner: DMDMPCPlanner | None = None
        self.active = False  # the planner acts (set by the callback on its schedule, or by attach)
        self.progress_remaining = 1.0
        self.logger: Any = None  # the agent's logger while training
        self.keep_plans = False  # keep the last plan for imagined transitions (set by the callback)
        self.evaluation = False  # an evaluation env attached by the callback: plan every step, deterministically
        self.last_plan: tuple[th.Tensor, th.Tensor] | None = None  # (states, plan means) of guided rows
        self.num_planned = 0  # steps on which the planner's action ran (counting every env)
        self.num_steps = 0
        self._rng = np.random.default_rng(seed)
        self._deterministic_seed = deterministic_seed(seed)  # set again by attach
        _LIVE_GUIDES.add(self)

    # ------------------------------------------------------------------ linking

    @property
    def attached(self) -> bool:
        return self.planner is not None

    @property
    def uses_learned_model(self) -> bool:
        return isinstance(self.model, str) and self.model in LEARNED_MODELS

    def build_dynamics(self, device: th.device | str = "cpu", seed: int | None = None) -> Any:
        """The dynamics model of this guide's ``model`` choice (a fresh one for ``"ensemble"``)."""
        dynamics = make_dynamics(
            self.model,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            env_id=self.env_id,
            model_kwargs=self.model_kwargs,
            device=device,
            seed=seed,
        )
        if isinstance(dynamics, th.nn.Module):
            dynamics.to(device)
        return dynamics

    def attach(
        self,
        agent: Any,
        dynamics: Any = None,
        vec_normalize: VecNormalize | None = None,
        active: bool = True,
    ) -> DeMoGuide:
        """Build the planner around ``agent``'s actor (prior) and critic (terminal value).

        :param agent: an SB3 SAC/TD3 or sb3_contrib TQC/CrossQ model
        :param dynamics: the model to plan through (default: built from this guide's ``model`` choice; a
            learned one then needs fitting before it helps)
        :param vec_normalize: the VecNormalize whose statistics the agent's networks expect (default: the
            agent's own, ``agent.get_vec_normalize_env()``); observations seen here are the original ones
        :param active: the planner acts from now on (False: the agent's actions pass through until
            ``active`` is set, as the callback does on its schedule)
        :raises ValueError: an agent without a critic, or whose spaces differ from the env's
        """
        check_agent(agent, self.critic_value.use, who=self.who)
        if agent.action_space.shape != self.action_space.shape or not (
            np.allclose(agent.action_space.low, self.action_space.low)
            and np.allclose(agent.action_space.high, self.action_space.high)
        ):
            raise ValueError(
                f"{self.who}: the agent's action space {agent.action_space} differs from the env's {self.action_space}"
            )
        if agent.observation_space.shape != self.observation_space.shape:
            raise ValueError(
                f"{self.who}: the agent's observation space {agent.observation_space} differs from the env's "
                f"{self.observation_space}"
            )
        seed = self.seed if self.seed is not None else getattr(agent, "seed", None)
        if dynamics is None:
            dynamics = self.build_dynamics(agent.device, seed)
        if vec_normalize is None and hasattr(agent, "get_vec_normalize_env"):
            vec_normalize = agent.get_vec_normalize_env()
        self.agent = agent
        self.dynamics = dynamics
        self.planner = make_policy_planner(
            dynamics,
            agent.policy,
            self.action_space,
            self.planner_kwargs,
            critic=self.critic_value,
            agent=agent,
            obs_transform=vec_normalize_obs_transform(vec_normalize, agent.device),
            seed=seed,
            device=agent.device,
            stream=ROLLOUT_PLANNER,
        )
        self._deterministic_seed = deterministic_seed(seed)
        if self.seed is None and seed is not None:
            self._rng = np.random.default_rng(seed)
        self.active = active
        return self

    def detach(self) -> None:
        """Forget the agent (the wrapper then raises or passes actions through, see ``on_unattached``)."""
        self.agent = self.planner = self.logger = None
        self.active = self.evaluation = self.keep_plans = False
        self.last_plan = None

    # ------------------------------------------------------------------ acting

    def current_guide_prob(self) -> float:
        """The probability that the planner's action runs now."""
        p = float(self._guide_prob_fn(self.progress_remaining))
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{self.who}: guide_prob({self.progress_remaining:.3f}) = {p}, expected a value in [0, 1]")
        return p

    def reset(self, indices: np.ndarray | None = None) -> None:
        """Forget the plans of new episodes (``indices`` of the batch; None: all)."""
        if self.planner is not None:
            self.planner.reset(None if indices is None else np.asarray(indices))

    def choose(self, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The actions that run: the planner's where guided, the agent's elsewhere.

        :param obs: (B, obs_dim) current observations (original scale)
        :param actions: (B, A) the agent's actions, in env units
        :return: executed actions (B, A) in env units, guided (B,) bool
        """
        actions = np.asarray(actions, dtype=np.float32).reshape(obs.shape[0], -1)
        self.last_plan = None
        batch = actions.shape[0]
        self.num_steps += batch
        if self.planner is None:
            if self.on_unattached == "passthrough":
                return actions, np.zeros(batch, dtype=bool)
            raise RuntimeError(_not_attached_message(self.who))
        if not self.active:
            return actions, np.zeros(batch, dtype=bool)
        p = 1.0 if self.evaluation else self.current_guide_prob()
        guided = np.ones(batch, dtype=bool) if p >= 1.0 else self._rng.random(batch) < p
        if not guided.any():
            return actions, guided
        step = self._plan(as_state_tensor(obs, self.planner.device))
        planned = step.result.action.detach().cpu().numpy().astype(np.float32)
        planned = np.clip(planned, self.action_space.low, self.action_space.high)
        executed = np.where(guided[:, None], planned, actions).astype(np.float32)
        self.num_planned += int(guided.sum())
        if self.keep_plans:
            self.last_plan = step.imagination(np.flatnonzero(guided))
        return executed, guided

    def _plan(self, states: th.Tensor) -> PlanStep:
        """Plan for every env of the batch, with the agent's networks in evaluation mode (batch norm, as in
        CrossQ, must not learn from planning batches). A deterministic plan's noise is seeded afresh: the
        same observation and warm start give the same action."""
        assert self.planner is not None
        policy = self.agent.policy
        was_training = bool(policy.training)
        if was_training:
            policy.set_training_mode(False)
        try:
            deterministic = self.deterministic or self.evaluation
            reseed = self._deterministic_seed if deterministic else None
            return plan_step(self.planner, states, deterministic, self.logger, reseed=reseed)
        finally:
            if was_training:
                policy.set_training_mode(True)

    def pop_last_plan(self) -> tuple[th.Tensor, th.Tensor] | None:
        """The last step's guided start states (N, S) and plan means (N, H, A); cleared once read."""
        plan, self.last_plan = self.last_plan, None
        return plan


def live_guides() -> list[DeMoGuide]:
    """Every guide alive in this process."""
    return list(_LIVE_GUIDES)
