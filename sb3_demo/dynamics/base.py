"""The batched dynamics interface every planner rollout goes through.

A dynamics model maps a batch of states and actions (in the environment's own action units) to the
next states, the rewards and the terminations::

    next_states, rewards, terminated = model(states, actions)
    # states (N, state_dim), actions (N, act_dim)
    # -> next_states (N, state_dim), rewards (N,), terminated (N,) bool

``state_dim`` is usually the observation size. Models whose internal state is richer than the
observation (e.g. a full MuJoCo physics state) expose ``observe(states) -> observations`` so that the
planner can feed the SB3 actor and critic with observations.

Optional attributes the planner reads when a model has them:

- ``state_dim`` / ``action_dim``: checked against the states and the planner's action size,
- ``can_terminate = False``: the model never terminates, so the planner skips termination masking,
- ``observe(states)``: see above,
- ``takes_generator = True``: a stochastic model whose ``__call__`` accepts ``generator=`` (a
  ``torch.Generator`` on the model's device) for its sampling noise; the planner passes its own, so
  that each planner's draws are a stream of their own.

Models must not write into their inputs (the planner passes strided views).

Nothing here imports gymnasium or SB3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch as th

StepFn = Callable[[th.Tensor, th.Tensor], tuple[th.Tensor, th.Tensor, th.Tensor]]


@runtime_checkable
class DynamicsModel(Protocol):
    """Batched, differentiable-or-not transition model used by :class:`~sb3_demo.DMDMPCPlanner`."""

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        :param states: (N, state_dim)
        :param actions: (N, act_dim), in the environment's action units
        :return: next_states (N, state_dim), rewards (N,), terminated (N,) bool
        """
        ...


class CallableDynamics:
    """Adapt a user-supplied function to :class:`DynamicsModel`, checking its output shapes once.

    :param fn: ``fn(states, actions) -> (next_states, rewards, terminated)``; ``terminated`` may be
        omitted (a 2-tuple), meaning the model never terminates.
    :param observe: optional ``observe(states) -> observations`` when the state is not the observation.
    """

    def __init__(
        self,
        fn: Callable[[th.Tensor, th.Tensor], tuple[th.Tensor, ...]],
        observe: Callable[[th.Tensor], th.Tensor] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallableDynamics needs a callable fn(states, actions), got {type(fn).__name__}")
        self.fn = fn
        if observe is not None:
            self.observe = observe
        self._checked = False

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        out = self.fn(states, actions)
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise ValueError(
                "a dynamics callable must return (next_states, rewards) or (next_states, rewards, terminated), "
                f"got {type(out).__name__}"
            )
        next_states, rewards = out[0], out[1]
        terminated = out[2] if len(out) == 3 else th.zeros(states.shape[0], dtype=th.bool, device=states.device)
        if not self._checked:
            n = states.shape[0]
            if next_states.shape[0] != n:
                raise ValueError(f"dynamics returned next_states of shape {tuple(next_states.shape)} for {n} states")
            if rewards.reshape(-1).shape[0] != n:
                raise ValueError(f"dynamics returned rewards of shape {tuple(rewards.shape)}, expected ({n},)")
            if terminated.reshape(-1).shape[0] != n:
                raise ValueError(f"dynamics returned terminated of shape {tuple(terminated.shape)}, expected ({n},)")
            self._checked = True
        return next_states, rewards.reshape(-1), terminated.reshape(-1).bool()


def as_dynamics(model: object) -> DynamicsModel:
    """Return ``model`` if it already is a dynamics model object, else wrap a plain function."""
    if isinstance(model, DynamicsModel) and not _is_plain_function(model):
        return model
    if callable(model):
        return CallableDynamics(model)
    raise TypeError(f"expected a DynamicsModel or a callable(states, actions), got {type(model).__name__}")


def _is_plain_function(obj: object) -> bool:
    import types

    return isinstance(obj, types.FunctionType | types.MethodType | types.LambdaType)
