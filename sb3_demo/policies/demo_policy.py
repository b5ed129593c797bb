"""The DeMo Layer: an SB3 policy that refines any base policy's actions with DMD-MPC at predict time.

The base policy (an SB3 SAC/TD3/TQC/PPO/ARS policy, or a linear policy) is the planner's prior: its
rollouts through the dynamics model are proposals, it re-seeds nothing by default and it is the fallback
when planning fails. Its critic, where it has one, is the planner's terminal value. What runs is the
planner's action::

    layer = DeMoPolicy.from_agent(agent, dynamics="analytic", horizon=10)
    mean_return, std_return = evaluate_policy(layer, gym.make("Pendulum-v1"), n_eval_episodes=10)

Observations: the layer takes the environment's *original* observations (what the dynamics model
predicts). A base policy trained under ``VecNormalize`` sees them normalised with a frozen copy of the
statistics (:class:`~sb3_demo.common.policy_fns.ObsNormalizer`), so evaluate the layer on the raw env,
not on a ``VecNormalize`` wrapper.

Saving: ``layer.save(path)`` stores the base policy (class, constructor arguments and weights), the
observation statistics, the planner settings and the dynamics model: plain model objects (the analytic
classic-control models, a :class:`~sb3_demo.dynamics.CallableDynamics` of a module-level function) by
class and attributes, ``nn.Module`` models (the learned ensemble) with their ``state_dict``. A model that
cannot be pickled (a lambda, a closure, a simulator handle) raises a ``ValueError`` at save time; save it
with ``include_dynamics=False`` and hand the model to :meth:`DeMoPolicy.load` again.
"""

from __future__ import annotations

import inspect
import io
import pickle
from typing import Any, ClassVar, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import get_device
from torch import nn

from sb3_demo.common.model_factory import check_model_dims, check_spaces, env_id_of
from sb3_demo.common.plan_state import plan_predict
from sb3_demo.common.policy_fns import (
    CriticReduce,
    ObsNormalizer,
    check_critic_reduce,
    has_critic,
    raw_policy_actions,
)
from sb3_demo.common.policy_planner import (
    DEFAULT_LAYER_PLANNER_KWARGS,
    CriticValue,
    make_policy_planner,
    planner_settings,
)
from sb3_demo.common.seeding import PREDICT_PLANNER
from sb3_demo.dynamics.base import DynamicsModel, as_dynamics
from sb3_demo.planner import DMDMPCPlanner, PlanResult

ValueSource = Literal["auto", "critic", "none"]
VALUE_SOURCES = ("auto", "critic", "none")

_SAVE_FORMAT = 1


class DeMoPolicy(BasePolicy):
    """DMD-MPC refinement of a base policy, as an SB3 policy (``predict``, ``evaluate_policy``, save/load).

    :param observation_space: the env's flat Box observation space
    :param action_space: the env's bounded Box action space (asymmetric bounds are fine)
    :param base_policy: the prior: an SB3 ``BasePolicy`` (squashed or not, see
        :mod:`sb3_demo.common.policy_fns`) or a plain ``nn.Module`` mapping observations to actions in
        environment units (e.g. a linear layer)
    :param dynamics: the model the planner rolls through (original observations, env-unit actions)
    :param planner_kwargs: :class:`~sb3_demo.DMDMPCPlanner` settings (horizon, num_samples, ...); missing
        ones come from ``DEFAULT_LAYER_PLANNER_KWARGS``
    :param value_source: the planner's terminal value: ``"auto"`` (the base policy's critic if it has one),
        ``"critic"`` (required) or ``"none"``. The critic must value the model's rewards: one trained on
        ``VecNormalize``-normalised rewards (``norm_reward=True``) is on another scale, use ``"none"`` there
    :param critic_reduce: twin Q heads as terminal value: ``"min"``, ``"q1"`` or ``"mean"``
    :param obs_normalizer: observation statistics the base policy was trained with (VecNormalize), or None
    :param seed: the planner's sampling seed (with a seed, a fresh or loaded layer gives reproducible actions)
    """

    planner: DMDMPCPlanner
    _PREDICT_NEEDS: ClassVar[str] = "original (not VecNormalize-normalised) observations"

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        base_policy: nn.Module,
        dynamics: DynamicsModel | Any,
        planner_kwargs: dict[str, Any] | None = None,
        value_source: ValueSource = "auto",
        critic_reduce: CriticReduce = "min",
        obs_normalizer: ObsNormalizer | None = None,
        seed: int | None = None,
    ) -> None:
        check_spaces(observation_space, action_space, who="DeMoPolicy")
        assert isinstance(observation_space, spaces.Box) and isinstance(action_space, spaces.Box)
        super().__init__(observation_space, action_space, squash_output=True)
        if not isinstance(base_policy, nn.Module):
            raise TypeError(f"base_policy must be an SB3 policy or a torch nn.Module, got {type(base_policy).__name__}")
        if value_source not in VALUE_SOURCES:
            raise ValueError(f"value_source must be one of {list(VALUE_SOURCES)}, got {value_source!r}")
        check_critic_reduce(critic_reduce, "DeMoPolicy")  # also when the policy has no critic to reduce
        if obs_normalizer is not None and not isinstance(obs_normalizer, ObsNormalizer):
            raise TypeError(f"obs_normalizer must be an ObsNormalizer or None, got {type(obs_normalizer).__name__}")
        self.obs_dim = int(observation_space.shape[0])
        self.action_dim = int(action_space.shape[0])
        _check_base_policy(base_policy, self.obs_dim, self.action_dim)
        if obs_normalizer is not None and obs_normalizer.mean.shape[0] != self.obs_dim:
            raise ValueError(
                f"obs_normalizer has {obs_normalizer.mean.shape[0]} statistics for observations of size {self.obs_dim}"
            )

        self.base_policy = base_policy
        self.obs_normalizer = obs_normalizer
        self.value_source = value_source
        self.critic_reduce: CriticReduce = critic_reduce
        self.seed_value = seed
        self.planner_kwargs = planner_settings(planner_kwargs, DEFAULT_LAYER_PLANNER_KWARGS, "DeMoPolicy")

        dynamics = as_dynamics(dynamics)
        check_model_dims(dynamics, self.obs_dim, self.action_dim)
        self._dynamics = (dynamics,)  # a tuple: an nn.Module model is not registered as a submodule

        use_critic = value_source == "critic" or (value_source == "auto" and has_critic(base_policy))
        self.planner = make_policy_planner(
            dynamics,
            base_policy,
            action_space,
            self.planner_kwargs,
            critic=CriticValue(reduce=critic_reduce) if use_critic else None,
            obs_transform=obs_normalizer,
            deterministic_prior=True,
            seed=seed,
            stream=PREDICT_PLANNER,
        )
        self.uses_terminal_value = use_critic

        # diagnostics
        self.last_plan: PlanResult | None = None
        self.num_plans = 0  # planned actions (one per environment per call)
        self.num_fallbacks = 0  # of which came from the base policy because planning failed

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_agent(
        cls,
        agent: Any,
        dynamics: DynamicsModel | Any = "analytic",
        env_id: str | None = None,
        value_source: ValueSource = "auto",
        critic_reduce: CriticReduce = "min",
        seed: int | None = None,
        **planner_kwargs: Any,
    ) -> DeMoPolicy:
        """The layer on top of a trained SB3 agent (SAC, TD3, TQC, PPO, ARS, ...).

        :param agent: the trained algorithm; its ``policy`` is the prior and, if it trained under
            ``VecNormalize``, a frozen copy of the observation statistics goes with it
        :param dynamics: a :class:`~sb3_demo.dynamics.DynamicsModel` (e.g. a fitted ``EnsembleDynamics``),
            a callable ``(states, actions) -> (next_states, rewards[, terminated])``, or ``"analytic"``
            for the exact classic-control model of the agent's env (or of ``env_id``)
        :param env_id: gymnasium id, for ``dynamics="analytic"`` when the agent has no env
        :param value_source: see :class:`DeMoPolicy`
        :param critic_reduce: see :class:`DeMoPolicy`
        :param seed: the planner's seed
        :param planner_kwargs: :class:`~sb3_demo.DMDMPCPlanner` settings
        """
        policy = getattr(agent, "policy", None)
        if not isinstance(policy, nn.Module):
            raise TypeError(f"from_agent needs a trained SB3 algorithm with a .policy, got {type(agent).__name__}")
        if isinstance(dynamics, str):
            if dynamics != "analytic":
                raise ValueError(
                    f"dynamics must be 'analytic' or a dynamics model object (e.g. a fitted EnsembleDynamics), "
                    f"got {dynamics!r}"
                )
            from sb3_demo.dynamics.classic import analytic_model_for

            env_id = env_id or env_id_of(agent.get_env())
            if env_id is None:
                raise ValueError("dynamics='analytic' needs the env id: pass env_id='Pendulum-v1' (for example)")
            dynamics = analytic_model_for(env_id)
        get_vec_normalize = getattr(agent, "get_vec_normalize_env", None)
        normalizer = ObsNormalizer.from_vec_normalize(get_vec_normalize() if get_vec_normalize else None)
        return cls(
            agent.observation_space,
            agent.action_space,
            base_policy=policy,
            dynamics=dynamics,
            planner_kwargs=planner_kwargs,
            value_source=value_source,
            critic_reduce=critic_reduce,
            obs_normalizer=normalizer,
            seed=seed,
        )

    @property
    def dynamics(self) -> DynamicsModel:
        """The model the planner rolls through."""
        return self._dynamics[0]

    # ------------------------------------------------------------------ acting

    def reset(self, indices: np.ndarray | list[int] | None = None) -> None:
        """Forget the plans of some environments (all if None), as at an episode start."""
        self.planner.reset(None if indices is None else np.asarray(indices, dtype=np.int64))

    def base_predict(self, observation: np.ndarray) -> np.ndarray:
        """The base policy's own deterministic action (environment units, within the bounds), no planning.

        :param observation: (obs_dim,) or (B, obs_dim) original observations
        """
        obs = th.as_tensor(np.asarray(observation, dtype=np.float32))
        batch = obs.reshape(-1, self.obs_dim)
        prior = self.planner.prior
        assert prior is not None
        normalized = prior(batch).cpu().numpy()
        actions = self.unscale_action(normalized)
        return actions.reshape(-1, self.action_dim) if obs.dim() > 1 else actions.reshape(self.action_dim)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Planned actions for original observations, as a recurrent policy's ``predict``.

        :param observation: (obs_dim,) or (B, obs_dim)
        :param state: the previous call's plan state (the warm start), None for a fresh plan (see
            :mod:`sb3_demo.common.plan_state`)
        :param episode_start: (B,) bool, True where an episode begins: that plan starts afresh
            (``evaluate_policy`` passes it)
        :param deterministic: the plan's weighted mean, with noise seeded afresh for the call (the same
            observation and state give the same action), or a stochastic action
        :return: actions in environment units, within the action space's bounds, and the next state
        """
        obs_tensor, vectorized = self.obs_to_tensor(observation)
        assert isinstance(obs_tensor, th.Tensor)
        with th.no_grad():
            states = obs_tensor.reshape(obs_tensor.shape[0], -1)
            step, next_state = plan_predict(self.planner, states, state, episode_start, deterministic, self.seed_value)
        self._count(step.result)
        assert isinstance(self.action_space, spaces.Box)
        normalized = step.result.normalized_action.cpu().numpy().reshape((-1, *self.action_space.shape))
        actions = np.clip(self.unscale_action(normalized), self.action_space.low, self.action_space.high)
        return (actions if vectorized else actions.squeeze(axis=0)), next_state

    def _count(self, result: PlanResult) -> None:
        self.last_plan = result
        self.num_plans += int(result.fallback.numel())
        self.num_fallbacks += int(result.fallback.sum())

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        assert isinstance(observation, th.Tensor)
        result = self.planner.plan(observation.reshape(observation.shape[0], -1), deterministic=deterministic)
        self._count(result)
        return result.normalized_action

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Planned actions in ``[-1, 1]`` for a (B, obs_dim) batch of original observations."""
        return self._predict(obs, deterministic=deterministic)

    @property
    def fallback_rate(self) -> float:
        """Share of planned actions so far that fell back to the base policy (planning failed)."""
        return self.num_fallbacks / max(1, self.num_plans)

    # ------------------------------------------------------------------ persistence

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            planner_kwargs=dict(self.planner_kwargs),
            value_source=self.value_source,
            critic_reduce=self.critic_reduce,
            seed=self.seed_value,
        )

    def save(self, path: str, include_dynamics: bool = True) -> None:
        """Save the layer: base policy, observation statistics, planner settings and (optionally) the model.

        :param path: file path
        :param include_dynamics: also save the dynamics model (False: :meth:`load` needs ``dynamics=``)
        :raises ValueError: if the model cannot be saved (e.g. a lambda); use ``include_dynamics=False``
        """
        payload = {
            "format": _SAVE_FORMAT,
            "constructor": self._get_constructor_parameters(),
            "base_policy": _policy_record(self.base_policy),
            "obs_normalizer": None
            if self.obs_normalizer is None
            else dict(
                mean=self.obs_normalizer.mean.cpu(),
                var=self.obs_normalizer.var.cpu(),
                epsilon=self.obs_normalizer.epsilon,
                clip_obs=self.obs_normalizer.clip_obs,
            ),
            "dynamics": _dynamics_record(self.dynamics) if include_dynamics else None,
        }
        th.save(payload, path)

    @classmethod
    def load(
        cls, path: str, device: th.device | str = "auto", dynamics: DynamicsModel | Any | None = None
    ) -> DeMoPolicy:
        """Load a layer saved with :meth:`save`.

        :param path: file path
        :param device: torch device of the base policy
        :param dynamics: the model to plan with; required when the layer was saved without one. An
            ``nn.Module`` of the saved model's class receives the saved ``state_dict``.
        """
        device = get_device(device)
        payload = th.load(path, map_location=device, weights_only=False)
        if not isinstance(payload, dict) or payload.get("format") != _SAVE_FORMAT:
            raise ValueError(f"{path} is not a DeMoPolicy file (saved by DeMoPolicy.save)")
        base_policy = _policy_from_record(payload["base_policy"], device)
        record = payload["dynamics"]
        if dynamics is None:
            if record is None:
                raise ValueError(
                    f"{path} was saved without its dynamics model (include_dynamics=False): "
                    "pass it again, DeMoPolicy.load(path, dynamics=model)"
                )
            dynamics = _dynamics_from_record(record)
        elif record is not None and record["kind"] == "module" and isinstance(dynamics, nn.Module):
            dynamics.load_state_dict(record["state_dict"])
        constructor = dict(payload["constructor"])
        if "terminal_value" in constructor:  # files saved before the setting was named value_source
            constructor["value_source"] = constructor.pop("terminal_value")
        norm = payload["obs_normalizer"]
        normalizer = None if norm is None else ObsNormalizer(**norm)
        return cls(base_policy=base_policy, dynamics=dynamics, obs_normalizer=normalizer, **constructor).to(device)


# ---------------------------------------------------------------------- helpers


def _check_base_policy(policy: nn.Module, obs_dim: int, action_dim: int) -> None:
    """Raise a clear error when the base policy does not fit the env's spaces."""
    obs_space = getattr(policy, "observation_space", None)
    act_space = getattr(policy, "action_space", None)
    if act_space is not None and not isinstance(act_space, spaces.Box):
        raise ValueError(f"the base policy acts in {act_space}; the DeMo Layer needs a Box action space")
    if obs_space is not None and tuple(getattr(obs_space, "shape", ())) != (obs_dim,):
        raise ValueError(f"the base policy expects observations of shape {obs_space.shape}, the env gives ({obs_dim},)")
    if act_space is not None and tuple(act_space.shape) != (action_dim,):
        raise ValueError(f"the base policy has actions of shape {act_space.shape}, the env has ({action_dim},)")
    if obs_space is None or act_space is None:  # a plain module: probe it
        param = next(iter(policy.parameters()), None)
        device = param.device if param is not None else th.device("cpu")
        try:
            out = raw_policy_actions(policy, th.zeros(1, obs_dim, device=device))
        except Exception as exc:
            raise ValueError(f"the base policy failed on a (1, {obs_dim}) observation batch: {exc}") from exc
        if out.numel() != action_dim:
            raise ValueError(
                f"the base policy returned {out.numel()} action values for one observation, the env has "
                f"action_dim={action_dim}"
            )


def _policy_record(policy: nn.Module) -> dict[str, Any]:
    """Class, constructor arguments and weights of an SB3 policy (a plain module is pickled whole)."""
    ctor = getattr(policy, "_get_constructor_parameters", None)
    if ctor is not None:
        return {"class": type(policy), "data": ctor(), "state_dict": policy.state_dict()}
    return {"class": type(policy), "module": policy}


def _policy_from_record(record: dict[str, Any], device: th.device) -> nn.Module:
    if "module" in record:
        return record["module"].to(device)
    cls, data, state_dict = record["class"], dict(record["data"]), record["state_dict"]
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # sb3-contrib's ARSLinearPolicy records net_arch/activation_fn that its constructor does not take,
        # and does not record with_bias: keep what the constructor accepts, read the bias from the weights
        data = {k: v for k, v in data.items() if k in params}
        if "with_bias" in params and "with_bias" not in data:
            data["with_bias"] = any(k.endswith("bias") for k in state_dict)
    policy = cls(**data)
    policy.load_state_dict(state_dict)
    return policy.to(device)


def _dynamics_record(dynamics: Any) -> dict[str, Any]:
    """What :meth:`DeMoPolicy.save` stores of a dynamics model; raises a clear error if it cannot."""
    try:
        if isinstance(dynamics, nn.Module):
            # the architecture by pickle (constructor arguments are not recorded by nn.Module), the weights
            # as the state_dict
            buffer = io.BytesIO()
            th.save(dynamics, buffer)
            return {
                "kind": "module",
                "class": type(dynamics),
                "module": buffer.getvalue(),
                "state_dict": dynamics.state_dict(),
            }
        return {"kind": "object", "class": type(dynamics), "object": pickle.dumps(dynamics)}
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ValueError(
            f"cannot save the dynamics model {dynamics!r} ({exc}). Models must be picklable (analytic models, "
            "nn.Modules, module-level functions); save with include_dynamics=False and pass the model again "
            "with DeMoPolicy.load(path, dynamics=model)"
        ) from None


def _dynamics_from_record(record: dict[str, Any]) -> Any:
    if record["kind"] == "module":
        module = th.load(io.BytesIO(record["module"]), weights_only=False)
        module.load_state_dict(record["state_dict"])
        return module
    return pickle.loads(record["object"])
