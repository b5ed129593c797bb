"""Dynamics models the planner can roll through (batched torch, no SB3 needed)."""

from sb3_demo.dynamics.base import CallableDynamics, DynamicsModel, as_dynamics
from sb3_demo.dynamics.classic import (
    ANALYTIC_MODELS,
    MountainCarContinuousDynamics,
    PendulumDynamics,
    analytic_model_for,
)

__all__ = [
    "ANALYTIC_MODELS",
    "CallableDynamics",
    "DynamicsModel",
    "MountainCarContinuousDynamics",
    "PendulumDynamics",
    "analytic_model_for",
    "as_dynamics",
]
