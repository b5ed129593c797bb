"""The DeMo Layer: SB3 policies refined by DMD-MPC at predict time."""

from sb3_demo.policies.demo_policy import DEFAULT_LAYER_PLANNER_KWARGS, DeMoPolicy
from sb3_demo.policies.priors import ObsNormalizer, normalized_prior, policy_value

__all__ = ["DEFAULT_LAYER_PLANNER_KWARGS", "DeMoPolicy", "ObsNormalizer", "normalized_prior", "policy_value"]
