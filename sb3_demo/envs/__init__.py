"""Simulated hardware: a MuJoCo planar 2R leg on a vertical slider, sealed in its own process.

Importing this package registers, with gymnasium:

- ``sb3_demo/Leg2R-v0``: the wall-clock env (125 Hz, resets take time, plant in its own process),
- ``sb3_demo/Leg2RSim-v0``: its fast simulation-only twin (same plant, virtual clock).

Without importing it first, ``gym.make("sb3_demo.envs:sb3_demo/Leg2R-v0")`` imports and registers it.
Public names are imported lazily, so the plant process (which imports a module of this package) does
not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gymnasium.envs.registration import register, registry

from sb3_demo._lazy import lazy_exports

ENV_IDS = ("sb3_demo/Leg2R-v0", "sb3_demo/Leg2RSim-v0")
_ENTRY_POINT = "sb3_demo.envs.leg2r_env:Leg2REnv"

if "sb3_demo/Leg2R-v0" not in registry:
    register(id="sb3_demo/Leg2R-v0", entry_point=_ENTRY_POINT, kwargs={"realtime": True})
if "sb3_demo/Leg2RSim-v0" not in registry:
    register(id="sb3_demo/Leg2RSim-v0", entry_point=_ENTRY_POINT, kwargs={"realtime": False})

_EXPORTS: dict[str, str] = {
    "Leg2REnv": "sb3_demo.envs.leg2r_env",
    "sleep_until": "sb3_demo.envs.leg2r_env",
    "LegParameters": "sb3_demo.envs.leg2r_model",
    "desired_foot_position": "sb3_demo.envs.leg2r_model",
    "foot_position": "sb3_demo.envs.leg2r_model",
    "inverse_kinematics": "sb3_demo.envs.leg2r_model",
    "tracking_reward": "sb3_demo.envs.leg2r_model",
    "Leg2RNominalDynamics": "sb3_demo.envs.leg2r_nominal",
    "ik_tracking_action": "sb3_demo.envs.leg2r_nominal",
    "leg_reward_fn": "sb3_demo.envs.leg2r_nominal",
    "tracking_reward_from_obs": "sb3_demo.envs.leg2r_nominal",
}

if TYPE_CHECKING:
    from sb3_demo.envs.leg2r_env import Leg2REnv, sleep_until
    from sb3_demo.envs.leg2r_model import (
        LegParameters,
        desired_foot_position,
        foot_position,
        inverse_kinematics,
        tracking_reward,
    )
    from sb3_demo.envs.leg2r_nominal import (
        Leg2RNominalDynamics,
        ik_tracking_action,
        leg_reward_fn,
        tracking_reward_from_obs,
    )

__all__ = [
    "ENV_IDS",
    "Leg2REnv",
    "Leg2RNominalDynamics",
    "LegParameters",
    "desired_foot_position",
    "foot_position",
    "ik_tracking_action",
    "inverse_kinematics",
    "leg_reward_fn",
    "sleep_until",
    "tracking_reward",
    "tracking_reward_from_obs",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
