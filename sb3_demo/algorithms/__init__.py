"""DeMoRL algorithms: SB3 off-policy algorithms with MPC-guided rollouts."""

from sb3_demo.algorithms.demo_sac import DeMoSAC
from sb3_demo.algorithms.demo_td3 import DeMoTD3

__all__ = ["DeMoSAC", "DeMoTD3"]
