"""The real-time execution contract for hardware envs: anytime planning under a deadline
(:class:`RealTimeController`) or ahead of the observation in a worker thread
(:class:`PlanAheadController`), a safety layer (:class:`SafetyWrapper`), latency statistics
(:class:`LatencyStats`), training off the control loop (:class:`ThreadedTrainCallback`), and the rule
that a planner never uses a hardware env as its model (:func:`check_model_allowed`, defined with the
:class:`HardwareEnv` marker in :mod:`sb3_demo.common.hardware`, below the envs that use it).

Public names are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sb3_demo._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DeadlineGuard": "sb3_demo.realtime.controller",
    "RealTimeController": "sb3_demo.realtime.controller",
    "PlanAheadController": "sb3_demo.realtime.plan_ahead",
    "HardwareEnv": "sb3_demo.common.hardware",
    "HardwareModelError": "sb3_demo.common.hardware",
    "check_model_allowed": "sb3_demo.common.hardware",
    "control_period_of": "sb3_demo.common.hardware",
    "is_hardware_env": "sb3_demo.common.hardware",
    "LatencyLoggerCallback": "sb3_demo.realtime.latency",
    "LatencyStats": "sb3_demo.realtime.latency",
    "SafetyWrapper": "sb3_demo.realtime.safety",
    "Watchdog": "sb3_demo.realtime.safety",
    "ExecutedActionCallback": "sb3_demo.realtime.training",
    "RealTimeRolloutCallback": "sb3_demo.realtime.training",
    "ThreadedTrainCallback": "sb3_demo.realtime.training",
}

if TYPE_CHECKING:
    from sb3_demo.common.hardware import (
        HardwareEnv,
        HardwareModelError,
        check_model_allowed,
        control_period_of,
        is_hardware_env,
    )
    from sb3_demo.realtime.controller import DeadlineGuard, RealTimeController
    from sb3_demo.realtime.latency import LatencyLoggerCallback, LatencyStats
    from sb3_demo.realtime.plan_ahead import PlanAheadController
    from sb3_demo.realtime.safety import SafetyWrapper, Watchdog
    from sb3_demo.realtime.training import (
        ExecutedActionCallback,
        RealTimeRolloutCallback,
        ThreadedTrainCallback,
    )

__all__ = [
    "DeadlineGuard",
    "ExecutedActionCallback",
    "HardwareEnv",
    "HardwareModelError",
    "LatencyLoggerCallback",
    "LatencyStats",
    "PlanAheadController",
    "RealTimeController",
    "RealTimeRolloutCallback",
    "SafetyWrapper",
    "ThreadedTrainCallback",
    "Watchdog",
    "check_model_allowed",
    "control_period_of",
    "is_hardware_env",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
