"""The real-time execution contract for hardware envs."""

from sb3_demo.realtime.hardware import (
    HardwareEnv,
    HardwareModelError,
    check_model_allowed,
    control_period_of,
    is_hardware_env,
)

__all__ = ["HardwareEnv", "HardwareModelError", "check_model_allowed", "control_period_of", "is_hardware_env"]
