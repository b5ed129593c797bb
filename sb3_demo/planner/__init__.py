"""The DMD-MPC planner: pure torch, no gymnasium or SB3."""

from sb3_demo.planner.dmd_mpc import DMDMPCPlanner, PlanResult

__all__ = ["DMDMPCPlanner", "PlanResult"]
