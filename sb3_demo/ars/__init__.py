"""Training simple (linear) policies with the DeMo Layer in the loop."""

from sb3_demo.ars.demo_ars import DeMoARS
from sb3_demo.ars.distill import linear_layer_of, ridge_fit_linear

__all__ = ["DeMoARS", "linear_layer_of", "ridge_fit_linear"]
