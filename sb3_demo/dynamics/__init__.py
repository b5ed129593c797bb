"""Dynamics models the planner can roll through (batched torch, no SB3 needed)."""

from sb3_demo.dynamics.base import CallableDynamics, DynamicsModel, as_dynamics
from sb3_demo.dynamics.classic import (
    ANALYTIC_MODELS,
    MountainCarContinuousDynamics,
    PendulumDynamics,
    analytic_model_for,
)
from sb3_demo.dynamics.ensemble import EnsembleDynamics
from sb3_demo.dynamics.rewards import KNOWN_ENV_IDS, reward_fn_for, termination_fn_for

__all__ = [
    "ANALYTIC_MODELS",
    "KNOWN_ENV_IDS",
    "CallableDynamics",
    "DynamicsModel",
    "EnsembleDynamics",
    "MountainCarContinuousDynamics",
    "MuJoCoRolloutDynamics",
    "PendulumDynamics",
    "analytic_model_for",
    "as_dynamics",
    "reward_fn_for",
    "termination_fn_for",
]


def __getattr__(name: str) -> object:
    # MuJoCoRolloutDynamics imports mujoco (about a second): load it on first use only
    if name == "MuJoCoRolloutDynamics":
        from sb3_demo.dynamics.mujoco_rollout import MuJoCoRolloutDynamics

        return MuJoCoRolloutDynamics
    raise AttributeError(f"module 'sb3_demo.dynamics' has no attribute {name!r}")
