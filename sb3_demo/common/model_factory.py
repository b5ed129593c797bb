"""Build the planner's dynamics model from a user's choice and check it against the env's spaces."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from sb3_demo.dynamics.base import DynamicsModel, as_dynamics

MODEL_CHOICES = ("ensemble", "analytic", "mujoco")
LEARNED_MODELS = ("ensemble",)  # the choices fitted on the agent's transitions


def check_model_choice(model: Any, allowed: tuple[str, ...], who: str) -> None:
    """:raises ValueError: ``model`` is a string outside ``allowed`` (the message names the allowed choices)"""
    if isinstance(model, str) and model not in allowed:
        hint = (
            " (model='mujoco' plans through the env's own simulator; use DeMoSAC/DeMoTD3 for it)"
            if model in MODEL_CHOICES
            else ""
        )
        raise ValueError(
            f"{who}: model must be one of {list(allowed)} or a DynamicsModel instance, got {model!r}{hint}"
        )


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space, who: str = "DeMo") -> None:
    """Raise a clear error for spaces the planner cannot work with.

    :raises ValueError: non-Box actions, unbounded actions, Dict/image/non-flat observations
    """
    if not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"{who} plans continuous actions and needs a Box action space, got {action_space}. "
            "Discrete/MultiDiscrete actions are not supported."
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(
            f"{who} needs a bounded Box action space, got low={action_space.low}, high={action_space.high}"
        )
    if isinstance(observation_space, spaces.Dict):
        raise ValueError(
            f"{who} plans over flat vector observations, got a Dict observation space. Wrap the env in "
            "gymnasium.wrappers.FlattenObservation (or pick the keys the dynamics need) first."
        )
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        shape = getattr(observation_space, "shape", None)
        raise ValueError(
            f"{who} plans over flat vector observations (a 1-D Box), got {observation_space} with shape {shape}. "
            "Image observations are not supported; other Box shapes can be flattened with "
            "gymnasium.wrappers.FlattenObservation."
        )


def env_id_of(env: gym.Env | VecEnv | None) -> str | None:
    """The gymnasium id of a (vectorised) env, or None."""
    if env is None:
        return None
    if isinstance(env, VecEnv):
        specs = env.get_attr("spec", indices=[0])
        spec = specs[0] if specs else None
    else:
        spec = env.spec
    return None if spec is None else spec.id


def single_envs(env: VecEnv) -> list[gym.Env]:
    """The in-process gymnasium envs behind a VecEnv (through VecNormalize and other wrappers).

    :raises ValueError: for envs in other processes (SubprocVecEnv), whose simulator cannot be reached
    """
    venv: Any = env
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    envs = getattr(venv, "envs", None)
    if envs is None:
        raise ValueError(
            f"model='mujoco' plans through the env's own simulator and needs the envs in this process "
            f"(DummyVecEnv); {type(venv).__name__} keeps them in other processes. Use DummyVecEnv or model='ensemble'."
        )
    return list(envs)


def make_dynamics(
    model: str | DynamicsModel | Any,
    observation_space: spaces.Box,
    action_space: spaces.Box,
    env: gym.Env | VecEnv | None = None,
    env_id: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    device: th.device | str = "cpu",
    seed: int | None = None,
) -> DynamicsModel:
    """The dynamics model for a choice ``"ensemble"``, ``"analytic"``, ``"mujoco"`` or a model object.

    :param model: the choice, or a :class:`~sb3_demo.dynamics.DynamicsModel` / callable
    :param observation_space: the env's (flat Box) observation space
    :param action_space: the env's Box action space
    :param env: the env (needed for ``"mujoco"``)
    :param env_id: gymnasium id (for ``"analytic"`` and the known reward/termination functions)
    :param model_kwargs: keyword arguments of the model's constructor
    :param device: torch device
    :param seed: seed of a learned model's initialisation
    """
    kwargs = dict(model_kwargs or {})
    obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
    env_id = env_id or env_id_of(env)
    if isinstance(model, str):
        if model == "ensemble":
            from sb3_demo.dynamics.ensemble import EnsembleDynamics
            from sb3_demo.dynamics.rewards import reward_fn_for, termination_fn_for

            if env_id is not None:
                kwargs.setdefault("reward_fn", reward_fn_for(env_id))
                kwargs.setdefault("termination_fn", termination_fn_for(env_id))
            return EnsembleDynamics(obs_dim, act_dim, device=device, seed=seed, **kwargs)
        if model == "analytic":
            from sb3_demo.dynamics.classic import analytic_model_for

            if env_id is None:
                raise ValueError("model='analytic' needs to know the env id; pass an env created with gymnasium.make")
            return analytic_model_for(env_id)
        if model == "mujoco":
            from sb3_demo.dynamics.mujoco_rollout import MuJoCoRolloutDynamics

            if env is None:
                raise ValueError("model='mujoco' needs the env whose simulator it plans through")
            single = single_envs(env)[0] if isinstance(env, VecEnv) else env
            return MuJoCoRolloutDynamics(single, **kwargs)
        raise ValueError(f"model must be one of {list(MODEL_CHOICES)} or a DynamicsModel instance, got {model!r}")
    dynamics = as_dynamics(model)
    check_model_dims(dynamics, obs_dim, act_dim, device)
    return dynamics


def agent_dynamics(agent: Any, model: Any, model_kwargs: dict[str, Any] | None, env_id: str | None = None) -> Any:
    """:func:`make_dynamics` for an SB3 algorithm: its spaces, env, device and seed; a torch model is moved
    to the algorithm's device."""
    dynamics = make_dynamics(
        model,
        agent.observation_space,
        agent.action_space,
        env=agent.env,
        env_id=env_id,
        model_kwargs=model_kwargs,
        device=agent.device,
        seed=agent.seed,
    )
    if isinstance(dynamics, th.nn.Module):
        dynamics.to(agent.device)
    return dynamics


def check_model_dims(dynamics: DynamicsModel, obs_dim: int, act_dim: int, device: th.device | str = "cpu") -> None:
    """Call a user model once on zeros and check that it returns the env's shapes.

    :raises ValueError: naming the mismatching dimension
    """
    if hasattr(dynamics, "observe"):  # its state is not the observation: nothing to probe with
        return
    declared = getattr(dynamics, "observation_dim", None), getattr(dynamics, "action_dim", None)
    if declared[0] is not None and declared[0] != obs_dim:
        raise ValueError(f"the dynamics model is for observation_dim={declared[0]} but the env has {obs_dim}")
    if declared[1] is not None and declared[1] != act_dim:
        raise ValueError(f"the dynamics model is for action_dim={declared[1]} but the env has {act_dim}")
    states = th.zeros(2, obs_dim, device=device)
    actions = th.zeros(2, act_dim, device=device)
    try:
        next_states, rewards, terminated = dynamics(states, actions)
    except Exception as exc:
        raise ValueError(
            f"the dynamics model failed on states of shape (2, {obs_dim}) and actions of shape (2, {act_dim}) "
            f"(the env's dimensions): {exc}"
        ) from exc
    if tuple(next_states.shape) != (2, obs_dim):
        raise ValueError(
            f"the dynamics model returned next states of shape {tuple(next_states.shape)} for 2 states, "
            f"expected (2, {obs_dim}) to match the env's observation space"
        )
    if rewards.reshape(-1).shape[0] != 2 or terminated.reshape(-1).shape[0] != 2:
        raise ValueError("the dynamics model must return one reward and one termination flag per state")
