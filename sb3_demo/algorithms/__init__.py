"""DeMoRL algorithms: SB3 off-policy algorithms with MPC-guided rollouts."""

from sb3_demo.algorithms.demo_sac import DeMoSAC
from sb3_demo.algorithms.demo_td3 import DeMoTD3
from sb3_demo.algorithms.evaluation import DeMoEvalCallback

__all__ = ["DeMoEvalCallback", "DeMoSAC", "DeMoTD3"]
