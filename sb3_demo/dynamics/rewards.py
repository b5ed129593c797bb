"""Batched torch reward and termination functions of Gymnasium tasks, written on observations.

Every function has the signature ``fn(obs (N, S), action (N, A), next_obs (N, S)) -> (N,)`` (rewards as
floats, terminations as bools), with actions in the environment's own units, and reproduces the env's
``step`` for its default (v5) settings. A learned model that is given them only has to learn the state
transition. :func:`reward_fn_for` / :func:`termination_fn_for` look them up by env id.

Which tasks have what (``None`` = no function):

=============================  ================  ===================  ==================================
env id                         reward            termination          why / notes
=============================  ================  ===================  ==================================
``Pendulum-v1``                exact             None (never)
``MountainCarContinuous-v0``   exact             exact
``InvertedPendulum-v5``        exact             exact                both read ``qpos[1]`` from the obs
``InvertedDoublePendulum-v5``  approximate       approximate          tip height from the obs' angles,
                                                                      see below
``Reacher-v5``                 exact             None (never)         ``fingertip - target`` is in the obs
``Swimmer-v5``                 None (learned)    None (never)         forward reward needs ``qpos[0]``
``HalfCheetah-v5``             None (learned)    None (never)         forward reward needs ``qpos[0]``
``Hopper-v5``                  None (learned)    exact                forward reward needs ``qpos[0]``
``Walker2d-v5``                None (learned)    exact                forward reward needs ``qpos[0]``
``Ant-v5``                     None (learned)    exact                forward reward needs torso ``x``
=============================  ================  ===================  ==================================

**Why the locomotion rewards are learned.** Swimmer, HalfCheetah, Hopper, Walker2d and Ant reward the
forward velocity ``(x_after - x_before) / dt`` of the root, where ``x`` is excluded from the observation
(``exclude_current_positions_from_observation=True``). The root's x-velocity ``qvel[0]`` *is* observed,
but it is the velocity at the end of the step, not the average over the ``frame_skip`` physics
sub-steps; on random-action transitions it misses ``x_velocity`` by an RMSE of 0.27 (HalfCheetah, where
``x_velocity`` has std 0.62), 0.048 (Hopper, std 0.38), 0.14 (Walker2d, std 0.50), 0.11 (Swimmer, std
0.35) and 0.23 (Ant, std 0.79): far from exact, so :func:`reward_fn_for` returns ``None`` for them and
the ensemble learns the reward (its reward head).

**InvertedDoublePendulum.** The env reads the pole tip's height from ``data.site_xpos``, which after
``mj_step`` holds the kinematics of the integrator's last internal (RK4) stage, not of the final
``qpos``. We compute the tip from the observed angles (``sin``/``cos`` of both hinges). On 3000
random-action transitions (471 terminations) the reward differed from the env's by at most 1e-4 (mean
1e-5) and every termination agreed; termination (tip height <= 1) could only differ on a transition
whose tip ends within about a millimetre of the threshold. The velocity penalty uses the observed hinge
velocities, which the observation clips to [-10, 10].

**Hopper.** Its health check also requires every entry of ``qpos[2:]`` and ``qvel`` to lie in
(-100, 100); the observation clips ``qvel`` to [-10, 10], so a velocity beyond 100 cannot be seen. That
never happens in practice (the episode ends on height or angle long before).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch as th

RewardFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]
TerminationFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]


def _angle_normalize(x: th.Tensor) -> th.Tensor:
    return th.remainder(x + math.pi, 2 * math.pi) - math.pi


# ---------------------------------------------------------------------------------------- classic control


def pendulum_reward(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``Pendulum-v1``: ``-(angle^2 + 0.1 thdot^2 + 0.001 u^2)`` of the *pre-step* state (torque clipped)."""
    theta = th.atan2(obs[:, 1], obs[:, 0])
    u = action[:, 0].clamp(-2.0, 2.0)
    return -(_angle_normalize(theta) ** 2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2)


def mountain_car_continuous_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``MountainCarContinuous-v0``: the car reached ``position >= 0.45`` with ``velocity >= 0``."""
    return (next_obs[:, 0] >= 0.45) & (next_obs[:, 1] >= 0.0)


def mountain_car_continuous_reward(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``MountainCarContinuous-v0``: 100 on reaching the goal, minus ``0.1 a^2`` (unclipped action)."""
    reached = mountain_car_continuous_termination(obs, action, next_obs)
    return 100.0 * reached.to(next_obs.dtype) - 0.1 * action[:, 0] ** 2


# ---------------------------------------------------------------------------------------- MuJoCo v5


def inverted_pendulum_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``InvertedPendulum-v5``: non-finite observation or pole angle ``|qpos[1]| > 0.2``."""
    return ~th.isfinite(next_obs).all(dim=1) | (next_obs[:, 1].abs() > 0.2)


def inverted_pendulum_reward(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``InvertedPendulum-v5``: 1 while the pole is up (the step that terminates earns 0)."""
    return (~inverted_pendulum_termination(obs, action, next_obs)).to(next_obs.dtype)


_IDP_POLE_LENGTH = 0.6  # both poles of inverted_double_pendulum.xml; the tip site sits at the end of pole 2


def _double_pendulum_tip(next_obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Tip (x, height) from ``[x_cart, sin q1, sin q2, cos q1, cos q2, ...]``."""
    s1, s2, c1, c2 = next_obs[:, 1], next_obs[:, 2], next_obs[:, 3], next_obs[:, 4]
    sin12 = s1 * c2 + c1 * s2
    cos12 = c1 * c2 - s1 * s2
    x = next_obs[:, 0] + _IDP_POLE_LENGTH * (s1 + sin12)
    y = _IDP_POLE_LENGTH * (c1 + cos12)
    return x, y


def inverted_double_pendulum_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``InvertedDoublePendulum-v5``: the tip fell to height <= 1 (approximate, see the module docstring)."""
    _, y = _double_pendulum_tip(next_obs)
    return ~(y > 1.0)


def inverted_double_pendulum_reward(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``InvertedDoublePendulum-v5``: ``10 * alive - 0.01 x^2 - (y - 2)^2 - 1e-3 v1^2 - 5e-3 v2^2``."""
    x, y = _double_pendulum_tip(next_obs)
    alive = (y > 1.0).to(next_obs.dtype)
    v1, v2 = next_obs[:, 6], next_obs[:, 7]
    return 10.0 * alive - (0.01 * x**2 + (y - 2.0) ** 2) - (1e-3 * v1**2 + 5e-3 * v2**2)


def reacher_reward(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``Reacher-v5``: ``-|fingertip - target| - |a|^2`` (both bodies at the same height)."""
    return -th.linalg.vector_norm(next_obs[:, 8:10], dim=1) - (action**2).sum(dim=1)


def hopper_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``Hopper-v5``: unhealthy when height <= 0.7, ``|angle| >= 0.2`` or any state entry ``|.| >= 100``."""
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy_state = ((next_obs[:, 1:] > -100.0) & (next_obs[:, 1:] < 100.0)).all(dim=1)
    healthy = healthy_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
    return ~healthy


def walker2d_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``Walker2d-v5``: unhealthy when the height leaves (0.8, 2.0) or the angle leaves (-1, 1)."""
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def ant_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """``Ant-v5``: unhealthy when the state is not finite or the torso height leaves [0.2, 1.0]."""
    z = next_obs[:, 0]
    healthy = th.isfinite(next_obs).all(dim=1) & (z >= 0.2) & (z <= 1.0)
    return ~healthy


def leg2r_reward(states: th.Tensor, actions: th.Tensor, next_states: th.Tensor) -> th.Tensor:
    """The simulated 2R leg's tracking reward (``sb3_demo/Leg2R-v0``, ``sb3_demo/Leg2RSim-v0``):
    :func:`sb3_demo.envs.leg_reward_fn`, imported on first use (it needs mujoco)."""
    from sb3_demo.envs.leg2r_nominal import leg_reward_fn

    return leg_reward_fn(states, actions, next_states)


# ---------------------------------------------------------------------------------------- registry

REWARD_FNS: dict[str, RewardFn | None] = {
    "Pendulum-v1": pendulum_reward,
    "MountainCarContinuous-v0": mountain_car_continuous_reward,
    "InvertedPendulum-v5": inverted_pendulum_reward,
    "InvertedDoublePendulum-v5": inverted_double_pendulum_reward,
    "Reacher-v5": reacher_reward,
    "Swimmer-v5": None,
    "HalfCheetah-v5": None,
    "Hopper-v5": None,
    "Walker2d-v5": None,
    "Ant-v5": None,
    "sb3_demo/Leg2R-v0": leg2r_reward,
    "sb3_demo/Leg2RSim-v0": leg2r_reward,
}

TERMINATION_FNS: dict[str, TerminationFn | None] = {
    "Pendulum-v1": None,
    "MountainCarContinuous-v0": mountain_car_continuous_termination,
    "InvertedPendulum-v5": inverted_pendulum_termination,
    "InvertedDoublePendulum-v5": inverted_double_pendulum_termination,
    "Reacher-v5": None,
    "Swimmer-v5": None,
    "HalfCheetah-v5": None,
    "Hopper-v5": hopper_termination,
    "Walker2d-v5": walker2d_termination,
    "Ant-v5": ant_termination,
    "sb3_demo/Leg2R-v0": None,  # episodes end by time only
    "sb3_demo/Leg2RSim-v0": None,
}

KNOWN_ENV_IDS: tuple[str, ...] = tuple(REWARD_FNS)


def _check_env_id(env_id: str, strict: bool) -> bool:
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string such as 'Hopper-v5', got {type(env_id).__name__}")
    known = env_id in REWARD_FNS
    if strict and not known:
        raise ValueError(f"no reward/termination functions for {env_id!r}; known env ids: {list(KNOWN_ENV_IDS)}")
    return known


def reward_fn_for(env_id: str, strict: bool = False) -> RewardFn | None:
    """The reward function of a task, or ``None`` when the model must learn the reward.

    :param env_id: gymnasium id, e.g. ``"Hopper-v5"`` (default env settings assumed)
    :param strict: raise ``ValueError`` for an env id this module does not know (default: return None)
    """
    _check_env_id(env_id, strict)
    return REWARD_FNS.get(env_id)


def termination_fn_for(env_id: str, strict: bool = False) -> TerminationFn | None:
    """The termination function of a task, or ``None`` when it never terminates.

    An unknown env id also gives ``None`` (treated as never terminating) unless ``strict``.

    :param env_id: gymnasium id, e.g. ``"Hopper-v5"`` (default env settings assumed)
    :param strict: raise ``ValueError`` for an env id this module does not know
    """
    _check_env_id(env_id, strict)
    return TERMINATION_FNS.get(env_id)
