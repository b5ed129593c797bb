"""Exact batched torch re-implementations of gymnasium's classic-control continuous tasks.

States are the environments' observations; actions are in environment units. Each model equals
gymnasium's ``step`` (reward and termination included) to float precision; ``tests/dynamics`` checks
this against gymnasium on random states and actions.

The arithmetic is written with fused ops (``addcmul``, ``add(alpha=...)``, in-place clamps) because
the planner calls these models ``horizon`` times per iteration and each torch op costs microseconds of
dispatch on small batches.
"""

from __future__ import annotations

import math

import torch as th


def angle_normalize(x: th.Tensor) -> th.Tensor:
    """Wrap angles to [-pi, pi)."""
    return th.remainder(x + math.pi, 2 * math.pi) - math.pi


class PendulumDynamics:
    """``Pendulum-v1``: observation ``[cos th, sin th, thdot]`` (S=3), torque action (A=1) in [-2, 2].

    The angle is recovered with ``atan2(sin, cos)``, which already lies in ``(-pi, pi]``: gymnasium's
    ``angle_normalize`` of it differs only at exactly ``pi``, where the squared angle is the same.

    :param g: gravity (gymnasium's ``g`` argument, default 10)
    """

    observation_dim = 3
    state_dim = 3
    action_dim = 1
    env_id = "Pendulum-v1"
    #: the model never terminates (Pendulum-v1 only truncates)
    can_terminate = False

    def __init__(self, g: float = 10.0) -> None:
        self.g = g
        self.m = 1.0
        self.length = 1.0
        self.dt = 0.05
        self.max_speed = 8.0
        self.max_torque = 2.0
        # new_thdot = thdot + (3 g / (2 l) sin + 3 / (m l^2) u) dt
        self._sin_gain = 3.0 * g / (2.0 * self.length) * self.dt
        self._torque_gain = 3.0 / (self.m * self.length**2) * self.dt

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        :param states: (N, 3)
        :param actions: (N, 1)
        :return: next_states (N, 3), rewards (N,), terminated (N,) (always False)
        """
        cos, sin, thdot = states[:, 0], states[:, 1], states[:, 2]
        theta = th.atan2(sin, cos)
        u = actions[:, 0].clamp(-self.max_torque, self.max_torque)
        # cost = theta^2 + 0.1 thdot^2 + 0.001 u^2
        costs = th.addcmul(theta * theta, thdot, thdot, value=0.1).addcmul_(u, u, value=0.001)
        new_thdot = (
            th.add(thdot, sin, alpha=self._sin_gain)
            .add_(u, alpha=self._torque_gain)
            .clamp_(-self.max_speed, self.max_speed)
        )
        new_theta = th.add(theta, new_thdot, alpha=self.dt)
        next_states = th.stack([th.cos(new_theta), th.sin(new_theta), new_thdot], dim=1)
        return next_states, costs.neg_(), th.zeros(states.shape[0], dtype=th.bool, device=states.device)


class MountainCarContinuousDynamics:
    """``MountainCarContinuous-v0``: observation ``[position, velocity]`` (S=2), force (A=1) in [-1, 1]."""

    observation_dim = 2
    state_dim = 2
    action_dim = 1
    env_id = "MountainCarContinuous-v0"
    can_terminate = True

    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.45
    goal_velocity = 0.0
    power = 0.0015

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        :param states: (N, 2)
        :param actions: (N, 1)
        :return: next_states (N, 2), rewards (N,), terminated (N,)
        """
        position, velocity = states[:, 0], states[:, 1]
        raw = actions[:, 0]
        force = raw.clamp(-1.0, 1.0)
        velocity = (
            th.add(velocity, force, alpha=self.power)
            .sub_(th.cos(3.0 * position), alpha=0.0025)
            .clamp_(-self.max_speed, self.max_speed)
        )
        position = (position + velocity).clamp_(self.min_position, self.max_position)
        velocity = velocity.masked_fill_((position <= self.min_position) & (velocity < 0), 0.0)
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        reward = th.mul(raw, raw).mul_(-0.1).add_(terminated.to(states.dtype), alpha=100.0)
        return th.stack([position, velocity], dim=1), reward, terminated


ANALYTIC_MODELS: dict[str, type] = {
    "Pendulum-v1": PendulumDynamics,
    "MountainCarContinuous-v0": MountainCarContinuousDynamics,
}


def analytic_model_for(env_id: str) -> PendulumDynamics | MountainCarContinuousDynamics:
    """The analytic model of a gymnasium env id.

    :raises ValueError: if there is none (use the learned ensemble instead)
    """
    try:
        return ANALYTIC_MODELS[env_id]()
    except KeyError:
        raise ValueError(
            f"no analytic model for {env_id!r}; analytic models exist for {sorted(ANALYTIC_MODELS)}. "
            "Use model='ensemble' (learned) or pass your own DynamicsModel."
        ) from None
