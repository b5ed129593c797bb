"""MPC guidance for stock SB3 algorithms: env wrappers that run the planner's actions and a callback."""

from sb3_demo.wrappers.callback import DeMoCallback
from sb3_demo.wrappers.demo_wrapper import DeMoVecEnvWrapper, DeMoWrapper
from sb3_demo.wrappers.guide import DeMoGuide

__all__ = ["DeMoCallback", "DeMoGuide", "DeMoVecEnvWrapper", "DeMoWrapper"]
