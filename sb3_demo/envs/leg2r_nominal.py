"""The leg's nominal model for planners: the MuJoCo leg with nominal parameters, batched over
observations, plus torch versions of the task's kinematics and reward.

The nominal model never touches the plant: it is what the robot's designers believe the leg to be (no
mass/friction mismatch, no latency, no sensor noise), so it is allowed on the hardware env (see
:func:`sb3_demo.realtime.check_model_allowed`) and the mismatch is measured against it.
"""

from __future__ import annotations

import math

import mujoco
import mujoco.rollout
import numpy as np
import torch as th

from sb3_demo.checks import check_int
from sb3_demo.envs.leg2r_model import (
    ACT_DIM,
    ELLIPSE_CENTER_Y,
    ELLIPSE_HALF_WIDTH,
    ELLIPSE_HEIGHT,
    GAIT_FREQUENCY,
    OBS_DIM,
    PHASE_SLICE,
    Q_SLICE,
    REWARD_SCALE,
    SHANK_LENGTH,
    THIGH_LENGTH,
    LegParameters,
    action_to_targets,
    desired_foot_position,
    inverse_kinematics,
    leg_mjcf,
    targets_to_action,
)

# The three functions below run inside every model call of a planner on the leg (the reward of each
# predicted step): they are written with few tensor operations, each of which costs microseconds.


def foot_position_torch(q: th.Tensor) -> th.Tensor:
    """:func:`foot_position` in torch: (..., 2) -> (..., 2)."""
    angles = q.cumsum(dim=-1)  # hip, hip + knee
    s, c = angles.sin(), angles.cos()
    x = s[..., 0].mul(THIGH_LENGTH).add_(s[..., 1], alpha=SHANK_LENGTH)
    y = c[..., 0].mul(-THIGH_LENGTH).add_(c[..., 1], alpha=-SHANK_LENGTH)
    return th.stack([x, y], dim=-1)


def desired_foot_position_torch(sin_phase: th.Tensor, cos_phase: th.Tensor) -> th.Tensor:
    """:func:`desired_foot_position` from the observed ``sin``/``cos`` of the phase: (...) -> (..., 2).

    With ``theta = atan2(sin, cos)`` in ``(-pi, pi]``: the swing is ``theta >= 0`` (the phase in
    ``[0, pi)``; at ``theta = pi`` both pieces meet), where the ellipse is read off ``sin`` and ``cos``
    directly (its height is ``sin`` where ``sin >= 0``, i.e. in the swing, and 0 in the stance); the
    stance line is linear in ``theta + 2 pi``.
    """
    theta = th.atan2(sin_phase, cos_phase)
    x_stance = theta.mul(-2.0 * ELLIPSE_HALF_WIDTH / math.pi).sub_(ELLIPSE_HALF_WIDTH)
    x = th.where(theta >= 0.0, cos_phase.mul(-ELLIPSE_HALF_WIDTH), x_stance)
    y = sin_phase.clamp(min=0.0).mul_(ELLIPSE_HEIGHT).add_(ELLIPSE_CENTER_Y)
    return th.stack([x, y], dim=-1)


def tracking_reward_from_obs(obs: th.Tensor) -> th.Tensor:
    """The tracking reward computed from observations (N, 10) -> (N,) (what a learned model's reward
    head would have to learn; exact up to sensor noise and latency)."""
    phase = obs[..., PHASE_SLICE]
    error = foot_position_torch(obs[..., Q_SLICE]).sub_(desired_foot_position_torch(phase[..., 0], phase[..., 1]))
    return th.linalg.vector_norm(error, dim=-1).mul_(-REWARD_SCALE).exp_()


def leg_reward_fn(states: th.Tensor, actions: th.Tensor, next_states: th.Tensor) -> th.Tensor:
    """The leg's reward in the ``reward_fn(states, actions, next_states) -> (N,)`` form a learned model
    (:class:`~sb3_demo.dynamics.EnsembleDynamics`) takes, so it need not learn the reward: the tracking
    reward of the next observation."""
    return tracking_reward_from_obs(next_states)


def ik_tracking_action(obs: np.ndarray, lead: float = 0.05) -> np.ndarray:
    """A hand-written tracking controller: joint targets from inverse kinematics of the reference
    ``lead`` seconds ahead of the observed phase (to make up for the position loops' lag).

    :param obs: (..., 10) observations
    :param lead: s
    :return: (..., 2) actions in ``[-1, 1]``
    """
    obs = np.asarray(obs, dtype=np.float64)
    phase = np.arctan2(obs[..., PHASE_SLICE.start], obs[..., PHASE_SLICE.start + 1])
    target = desired_foot_position(phase + 2 * np.pi * GAIT_FREQUENCY * lead)
    return np.clip(targets_to_action(inverse_kinematics(target)), -1.0, 1.0)


class Leg2RNominalDynamics:
    """Batched one-control-step model of the leg on observations, through ``mujoco.rollout``.

    ``model(states (N, 10), actions (N, 2) in [-1, 1]) -> (next_states (N, 10), rewards (N,),
    terminated (N,))``; the reward is the tracking reward of the next state.

    :param control_period: s per step (the env's, default 8 ms)
    :param params: the physical parameters the model believes in (default: the nominal leg)
    :param num_threads: threads of ``mujoco.rollout``
    """

    def __init__(
        self, control_period: float = 0.008, params: LegParameters | None = None, num_threads: int = 1
    ) -> None:
        if not (math.isfinite(control_period) and control_period > 0):
            raise ValueError(f"control_period must be a finite number of seconds > 0, got {control_period}")
        num_threads = check_int("num_threads", num_threads, 1)
        self.params = params or LegParameters()
        self.control_period = float(control_period)
        self._model = mujoco.MjModel.from_xml_string(leg_mjcf(self.params))
        self._datas = [mujoco.MjData(self._model) for _ in range(num_threads)]
        self.substeps = max(1, round(control_period / self._model.opt.timestep))
        self._spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self._template = np.zeros(mujoco.mj_stateSize(self._model, self._spec))
        mujoco.mj_getState(self._model, self._datas[0], self._template, self._spec)
        nq, nv = self._model.nq, self._model.nv
        self._qpos = slice(1, 1 + nq)  # FULLPHYSICS starts with time, qpos, qvel
        self._qvel = slice(1 + nq, 1 + nq + nv)
        self._phase_step = 2.0 * math.pi * GAIT_FREQUENCY * self.control_period

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        if states.dim() != 2 or states.shape[1] != OBS_DIM:
            raise ValueError(f"states must have shape (N, {OBS_DIM}), got {tuple(states.shape)}")
        if actions.shape != (states.shape[0], ACT_DIM):
            raise ValueError(f"actions must have shape ({states.shape[0]}, {ACT_DIM}), got {tuple(actions.shape)}")
        s = states.detach().cpu().double().numpy()
        a = np.clip(actions.detach().cpu().double().numpy(), -1.0, 1.0)
        n = s.shape[0]
        init = np.tile(self._template, (n, 1))
        # model qpos = [rail, hip, knee]; observation = [q_hip, q_knee, dq_hip, dq_knee, rail, rail_vel, ...]
        init[:, self._qpos] = s[:, [4, 0, 1]]
        init[:, self._qvel] = s[:, [5, 2, 3]]
        control = np.repeat(action_to_targets(a)[:, None, :], self.substeps, axis=1)
        out, _ = mujoco.rollout.rollout(
            self._model, self._datas, init, control, nstep=self.substeps, persistent_pool=len(self._datas) > 1
        )
        last = out[:, -1]
        qpos, qvel = last[:, self._qpos], last[:, self._qvel]
        sin_p, cos_p = s[:, 6], s[:, 7]
        c, d = math.cos(self._phase_step), math.sin(self._phase_step)
        nxt = np.empty_like(s)
        nxt[:, 0:2] = qpos[:, 1:3]
        nxt[:, 2:4] = qvel[:, 1:3]
        nxt[:, 4] = qpos[:, 0]
        nxt[:, 5] = qvel[:, 0]
        nxt[:, 6] = sin_p * c + cos_p * d
        nxt[:, 7] = cos_p * c - sin_p * d
        nxt[:, 8:10] = a
        next_states = th.as_tensor(nxt, dtype=states.dtype, device=states.device)
        rewards = tracking_reward_from_obs(next_states)
        return next_states, rewards, th.zeros(n, dtype=th.bool, device=states.device)
