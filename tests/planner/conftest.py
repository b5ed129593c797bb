"""Toy dynamics models shared by the planner tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch as th

Model = Callable[[th.Tensor, th.Tensor], tuple[th.Tensor, th.Tensor, th.Tensor]]


class LinearQuadratic:
    """``x' = A x + B u``, reward ``-(x'Qx + u'Ru)`` (the cost of the state the action is taken in).

    A discrete double integrator (S=2, A=1) in float64, with its finite-horizon LQR solution.
    """

    state_dim = 2
    action_dim = 1
    can_terminate = False

    def __init__(self, dtype: th.dtype = th.float64) -> None:
        self.a = th.tensor([[1.0, 0.1], [0.0, 1.0]], dtype=dtype)
        self.b = th.tensor([[0.005], [0.1]], dtype=dtype)
        self.q = th.diag(th.tensor([1.0, 0.1], dtype=dtype))
        self.r = th.tensor([[0.01]], dtype=dtype)
        self.q_final = 10.0 * self.q

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        cost = ((states @ self.q) * states).sum(1) + ((actions @ self.r) * actions).sum(1)
        next_states = states @ self.a.T + actions @ self.b.T
        return next_states, -cost, th.zeros(states.shape[0], dtype=th.bool)

    def terminal_value(self, states: th.Tensor) -> th.Tensor:
        return -((states @ self.q_final) * states).sum(1)

    def lqr(self, x0: th.Tensor, horizon: int) -> tuple[th.Tensor, float]:
        """Finite-horizon discrete Riccati recursion.

        :param x0: (S,)
        :return: the optimal (H, A) action sequence from x0 and its cost
        """
        p = self.q_final
        gains = []
        for _ in range(horizon):
            k = th.linalg.solve(self.r + self.b.T @ p @ self.b, self.b.T @ p @ self.a)
            gains.append(k)
            p = self.q + self.a.T @ p @ (self.a - self.b @ k)
        gains.reverse()
        x, actions = x0[:, None], []
        for k in gains:
            u = -k @ x
            actions.append(u[:, 0])
            x = self.a @ x + self.b @ u
        return th.stack(actions), float(x0 @ p @ x0)


class StepTarget:
    """Stateless toy (S=1): reward ``-sum (u - target)^2`` every step; the optimum is ``u = target``."""

    state_dim = 1

    def __init__(self, target: float | list[float], dtype: th.dtype = th.float64) -> None:
        self.target = th.as_tensor(target, dtype=dtype).reshape(-1)
        self.action_dim = self.target.shape[0]
        self.seen_low = th.full_like(self.target, th.inf)
        self.seen_high = th.full_like(self.target, -th.inf)
        self.calls = 0

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        self.calls += 1
        self.seen_low = th.minimum(self.seen_low, actions.min(0).values)
        self.seen_high = th.maximum(self.seen_high, actions.max(0).values)
        reward = -((actions - self.target) ** 2).sum(1)
        return states.clone(), reward, th.zeros(states.shape[0], dtype=th.bool)


class SlowModel(StepTarget):
    """:class:`StepTarget` that sleeps on every call (a stand-in for an expensive learned model)."""

    def __init__(self, target: float, delay: float) -> None:
        super().__init__(target)
        self.delay = delay

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        time.sleep(self.delay)
        return super().__call__(states, actions)


@pytest.fixture
def linear_quadratic() -> LinearQuadratic:
    return LinearQuadratic()


@pytest.fixture
def step_target() -> Callable[..., StepTarget]:
    return StepTarget


@pytest.fixture
def slow_model() -> Callable[..., SlowModel]:
    return SlowModel


@pytest.fixture(autouse=True)
def _one_thread_for_planner_tests(one_torch_thread: None) -> None:
    """Small batches: one thread is faster (the fixture of tests/conftest.py)."""
