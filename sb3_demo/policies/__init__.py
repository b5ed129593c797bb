"""The DeMo Layer: SB3 policies refined by DMD-MPC at predict time."""

from sb3_demo.policies.demo_policy import DeMoPolicy

__all__ = ["DeMoPolicy"]
