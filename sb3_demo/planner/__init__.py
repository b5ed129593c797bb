"""The DMD-MPC planner: pure torch, no gymnasium or SB3."""

from sb3_demo.planner.dmd_mpc import PLANNER_SETTINGS, DMDMPCPlanner, PlannerConfig, PlanResult, PlanState

__all__ = ["PLANNER_SETTINGS", "DMDMPCPlanner", "PlanResult", "PlanState", "PlannerConfig"]
