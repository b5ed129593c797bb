"""sb3_demo: Dynamic Mirror Descent MPC (DeMo) for Stable-Baselines3.

Public names are imported lazily, so ``import sb3_demo`` stays cheap and
``from sb3_demo import DMDMPCPlanner`` does not import SB3. ``import sb3_demo`` registers the gymnasium ids
``sb3_demo/Leg2R-v0`` and ``sb3_demo/Leg2RSim-v0`` (``gym.make``, RL Zoo's ``--gym-packages sb3_demo``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sb3_demo._lazy import lazy_exports

__version__ = "0.1.0"

# string entry points: MuJoCo and the env modules are imported by gym.make, not here
importlib.import_module("sb3_demo.envs")

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "DMDMPCPlanner": "sb3_demo.planner",
    "PlanResult": "sb3_demo.planner",
    "PlannerConfig": "sb3_demo.planner",
    "DynamicsModel": "sb3_demo.dynamics",
    "CallableDynamics": "sb3_demo.dynamics",
    "PendulumDynamics": "sb3_demo.dynamics",
    "MountainCarContinuousDynamics": "sb3_demo.dynamics",
    "EnsembleDynamics": "sb3_demo.dynamics.ensemble",
    "MuJoCoRolloutDynamics": "sb3_demo.dynamics.mujoco_rollout",
    "DeMoSAC": "sb3_demo.algorithms",
    "DeMoTD3": "sb3_demo.algorithms",
    "DeMoEvalCallback": "sb3_demo.algorithms",
    "AugmentedReplayBuffer": "sb3_demo.buffers",
    "DeMoPolicy": "sb3_demo.policies",
    "DeMoARS": "sb3_demo.ars",
    "DeMoWrapper": "sb3_demo.wrappers",
    "DeMoVecEnvWrapper": "sb3_demo.wrappers",
    "DeMoCallback": "sb3_demo.wrappers",
    "RealTimeController": "sb3_demo.realtime",
    "PlanAheadController": "sb3_demo.realtime",
    "SafetyWrapper": "sb3_demo.realtime",
    "LatencyStats": "sb3_demo.realtime",
    "ThreadedTrainCallback": "sb3_demo.realtime",
    "check_model_allowed": "sb3_demo.realtime",
}

if TYPE_CHECKING:
    from sb3_demo.algorithms import DeMoEvalCallback, DeMoSAC, DeMoTD3
    from sb3_demo.ars import DeMoARS
    from sb3_demo.buffers import AugmentedReplayBuffer
    from sb3_demo.dynamics import (
        CallableDynamics,
        DynamicsModel,
        MountainCarContinuousDynamics,
        PendulumDynamics,
    )
    from sb3_demo.dynamics.ensemble import EnsembleDynamics
    from sb3_demo.dynamics.mujoco_rollout import MuJoCoRolloutDynamics
    from sb3_demo.planner import DMDMPCPlanner, PlannerConfig, PlanResult
    from sb3_demo.policies import DeMoPolicy
    from sb3_demo.realtime import (
        LatencyStats,
        PlanAheadController,
        RealTimeController,
        SafetyWrapper,
        ThreadedTrainCallback,
        check_model_allowed,
    )
    from sb3_demo.wrappers import DeMoCallback, DeMoVecEnvWrapper, DeMoWrapper

__all__ = [  # the same names as _EXPORTS (a test keeps them equal); static so linters see them
    "AugmentedReplayBuffer",
    "CallableDynamics",
    "DMDMPCPlanner",
    "DeMoARS",
    "DeMoCallback",
    "DeMoEvalCallback",
    "DeMoPolicy",
    "DeMoSAC",
    "DeMoTD3",
    "DeMoVecEnvWrapper",
    "DeMoWrapper",
    "DynamicsModel",
    "EnsembleDynamics",
    "LatencyStats",
    "MountainCarContinuousDynamics",
    "MuJoCoRolloutDynamics",
    "PendulumDynamics",
    "PlanAheadController",
    "PlanResult",
    "PlannerConfig",
    "RealTimeController",
    "SafetyWrapper",
    "ThreadedTrainCallback",
    "__version__",
    "check_model_allowed",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
