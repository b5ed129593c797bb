"""Distil planner actions into a linear policy: ridge regression towards the current weights, in closed form.

For a linear policy ``a = W x (+ b)`` (sb3-contrib's ARS ``LinearPolicy``: unsquashed, so ``a`` is in the
environment's units and ``predict`` clips it to the bounds) and labelled pairs ``(x_i, a*_i)``::

    W_fit = argmin_W  1/N sum_i |W x_i - a*_i|^2  +  ridge * |W - W_0|^2

whose solution is ``(X^T X / N + ridge I) W^T = X^T A* / N + ridge W_0^T``. The ridge term pulls towards
``W_0`` (the weights ARS has just produced), not towards zero, so that a small data set only moves the
policy where the data say something.
"""

from __future__ import annotations

import torch as th
from torch import nn


def linear_layer_of(policy: nn.Module) -> nn.Linear:
    """The single ``nn.Linear`` of a linear policy (ARS ``LinearPolicy``: ``action_net = [Linear]``).

    :raises ValueError: when the policy is not linear (hidden layers, a tanh squashing)
    """
    layers = [m for m in policy.modules() if isinstance(m, nn.Linear)]
    others = [m for m in policy.modules() if len(list(m.children())) == 0 and not isinstance(m, nn.Linear | nn.Flatten)]
    if len(layers) != 1 or others or getattr(policy, "squash_output", False):
        raise ValueError(
            "distillation into the policy needs a linear policy (sb3-contrib ARS 'LinearPolicy': one nn.Linear, "
            f"no squashing), got {type(policy).__name__} with {len(layers)} linear layers and {len(others)} "
            "other layers"
        )
    return layers[0]


def ridge_fit_linear(
    features: th.Tensor,
    targets: th.Tensor,
    weight: th.Tensor,
    bias: th.Tensor | None,
    ridge: float,
) -> tuple[th.Tensor, th.Tensor | None]:
    """Closed-form ridge regression of a linear map towards given weights.

    :param features: (N, S) policy inputs (normalised observations)
    :param targets: (N, A) target actions in the policy's output units
    :param weight: (A, S) current weights (the ridge's centre)
    :param bias: (A,) current bias, or None for a bias-free policy
    :param ridge: strength of the pull towards the current weights (per sample), > 0
    :return: fitted (A, S) weight and (A,) bias (None if ``bias`` is None)
    """
    if ridge <= 0.0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    n = features.shape[0]
    x = features.to(th.float64)
    w0 = weight.to(th.float64)
    if bias is not None:
        x = th.cat([x, th.ones(n, 1, dtype=th.float64, device=x.device)], dim=1)
        w0 = th.cat([w0, bias.to(th.float64).reshape(-1, 1)], dim=1)
    y = targets.to(th.float64)
    gram = x.T @ x / n + ridge * th.eye(x.shape[1], dtype=th.float64, device=x.device)
    rhs = x.T @ y / n + ridge * w0.T
    solution = th.linalg.solve(gram, rhs).T.to(weight.dtype)  # (A, S[+1])
    if bias is None:
        return solution, None
    return solution[:, :-1].contiguous(), solution[:, -1].contiguous()
