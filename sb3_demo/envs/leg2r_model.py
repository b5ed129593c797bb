"""The planar 2R leg on a vertical slider: geometry, MJCF, and the foot-trajectory tracking task.

Everything here is plain data and pure numpy functions (torch versions live in
:mod:`sb3_demo.envs.leg2r_nominal`), shared by the sealed plant process, the agent-side
env and the nominal model a planner may roll through.

Frames: MuJoCo's world is ``x`` forward, ``z`` up; the leg moves in the ``x-z`` plane. The task is
written in the *hip frame* of the papers: ``x`` forward, ``y`` up, origin at the hip axis, so the foot
hangs at negative ``y``.

Joints: ``hip`` (pitch, 0 = thigh pointing straight down, positive swings the foot forward), ``knee``
(relative to the thigh, negative bends the knee forward like a human's), and the ``rail`` slide joint of
the body (0 = resting on the rail's lower stop, positive up).

Observation (10 values)::

    [q_hip, q_knee, dq_hip, dq_knee, rail_height, rail_velocity, sin(phase), cos(phase),
     previous_action_hip, previous_action_knee]

Action (2 values in ``[-1, 1]``): joint position targets of the motor drivers' PD loops, mapped
linearly onto :data:`HIP_TARGET_RANGE` and :data:`KNEE_TARGET_RANGE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

THIGH_LENGTH = 0.26  # m
SHANK_LENGTH = 0.26  # m
FOOT_RADIUS = 0.015  # m

# the task: the foot tracks a half-ellipse (swing) closed by its chord (stance), in the hip frame
ELLIPSE_HALF_WIDTH = 0.16  # m
ELLIPSE_HEIGHT = 0.10  # m
ELLIPSE_CENTER_Y = -0.44  # m
GAIT_FREQUENCY = 1.0  # Hz, cycles of the trajectory per second
REWARD_SCALE = 10.0  # reward = exp(-REWARD_SCALE * ||p_foot - p_des||)

# the body rests on the rail's lower stop with the hip this high above the floor: the stance line
# clears the floor by 5 mm, so a foot pushing below it hits the floor and lifts the body on the rail
FLOOR_CLEARANCE = 0.005
HIP_REST_HEIGHT = -ELLIPSE_CENTER_Y + FOOT_RADIUS + FLOOR_CLEARANCE
RAIL_TRAVEL = 0.3  # m

HIP_TARGET_RANGE = (-0.9, 1.3)  # rad, action -1 .. +1
KNEE_TARGET_RANGE = (-2.4, -0.2)  # rad
HOME_ACTION = (0.0, 0.0)  # the homing pose a reset drives to, in action units

OBS_DIM = 10
ACT_DIM = 2
Q_SLICE = slice(0, 2)
DQ_SLICE = slice(2, 4)
RAIL_SLICE = slice(4, 6)
PHASE_SLICE = slice(6, 8)
PREV_ACTION_SLICE = slice(8, 10)


@dataclass(frozen=True)
class LegParameters:
    """Physical parameters of one leg; the plant and the nominal model differ only through these.

    :param body_mass: kg, the carriage on the rail (with the hip motor)
    :param thigh_mass: kg (with the knee motor)
    :param shank_mass: kg
    :param joint_damping: N m s / rad, viscous friction of hip and knee
    :param joint_friction: N m, Coulomb friction (MuJoCo ``frictionloss``) of hip and knee
    :param rail_damping: N s / m
    :param rail_friction: N, Coulomb friction of the rail
    :param ground_friction: sliding friction coefficient of the foot on the floor
    :param kp: N m / rad, proportional gain of the motor drivers' position loops
    :param kd: N m s / rad, derivative gain
    :param max_torque: N m, torque limit of each motor
    :param timestep: s, physics step
    """

    body_mass: float = 1.2
    thigh_mass: float = 0.25
    shank_mass: float = 0.15
    joint_damping: float = 0.02
    joint_friction: float = 0.02
    rail_damping: float = 0.5
    rail_friction: float = 0.5
    ground_friction: float = 0.8
    kp: float = 40.0
    kd: float = 1.0
    max_torque: float = 6.0
    timestep: float = 0.001

    def with_mismatch(self, mass_scale: float = 1.0, friction_scale: float = 1.0) -> LegParameters:
        """The same leg with every mass scaled by ``mass_scale`` and every friction/damping by
        ``friction_scale`` (the plant's deviation from the nominal model)."""
        if not (mass_scale > 0 and math.isfinite(mass_scale)):
            raise ValueError(f"mass_scale must be a finite number > 0, got {mass_scale}")
        if not (friction_scale >= 0 and math.isfinite(friction_scale)):
            raise ValueError(f"friction_scale must be a finite number >= 0, got {friction_scale}")
        return LegParameters(
            body_mass=self.body_mass * mass_scale,
            thigh_mass=self.thigh_mass * mass_scale,
            shank_mass=self.shank_mass * mass_scale,
            joint_damping=self.joint_damping * friction_scale,
            joint_friction=self.joint_friction * friction_scale,
            rail_damping=self.rail_damping * friction_scale,
            rail_friction=self.rail_friction * friction_scale,
            ground_friction=self.ground_friction * friction_scale,
            kp=self.kp,
            kd=self.kd,
            max_torque=self.max_torque,
            timestep=self.timestep,
        )


def leg_mjcf(params: LegParameters) -> str:
    """MJCF of the leg (no external assets)."""
    p = params
    l1, l2 = THIGH_LENGTH, SHANK_LENGTH
    hip_lo, hip_hi = HIP_TARGET_RANGE
    knee_lo, knee_hi = KNEE_TARGET_RANGE
    return f"""
<mujoco model="leg2r">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{p.timestep}" integrator="implicitfast" gravity="0 0 -9.81"/>
  <default>
    <geom contype="0" conaffinity="0" rgba="0.7 0.7 0.75 1"/>
  </default>
  <worldbody>
    <geom name="floor" type="plane" size="1 1 0.05" contype="1" conaffinity="1"
          friction="{p.ground_friction} 0.005 0.0001" rgba="0.3 0.3 0.3 1"/>
    <body name="carriage" pos="0 0 {HIP_REST_HEIGHT}">
      <joint name="rail" type="slide" axis="0 0 1" range="0 {RAIL_TRAVEL}" limited="true"
             damping="{p.rail_damping}" frictionloss="{p.rail_friction}"/>
      <geom name="carriage" type="box" size="0.05 0.04 0.04" mass="{p.body_mass}"/>
      <body name="thigh">
        <joint name="hip" type="hinge" axis="0 -1 0" range="-1.6 2.0" limited="true"
               damping="{p.joint_damping}" frictionloss="{p.joint_friction}"/>
        <geom name="thigh" type="capsule" fromto="0 0 0 0 0 {-l1}" size="0.02" mass="{p.thigh_mass}"/>
        <body name="shank" pos="0 0 {-l1}">
          <joint name="knee" type="hinge" axis="0 -1 0" range="-2.8 0.0" limited="true"
                 damping="{p.joint_damping}" frictionloss="{p.joint_friction}"/>
          <geom name="shank" type="capsule" fromto="0 0 0 0 0 {-l2}" size="0.012" mass="{p.shank_mass}"/>
          <geom name="foot" type="sphere" pos="0 0 {-l2}" size="{FOOT_RADIUS}" mass="0.01"
                contype="1" conaffinity="1" condim="3" friction="{p.ground_friction} 0.005 0.0001"/>
          <site name="foot" pos="0 0 {-l2}" size="0.005"/>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position name="hip" joint="hip" kp="{p.kp}" kv="{p.kd}" ctrlrange="{hip_lo} {hip_hi}"
              forcerange="{-p.max_torque} {p.max_torque}"/>
    <position name="knee" joint="knee" kp="{p.kp}" kv="{p.kd}" ctrlrange="{knee_lo} {knee_hi}"
              forcerange="{-p.max_torque} {p.max_torque}"/>
  </actuator>
</mujoco>
"""


# ---------------------------------------------------------------------------------------------- mapping


def action_to_targets(action: np.ndarray) -> np.ndarray:
    """``[-1, 1]`` actions (..., 2) -> joint position targets (..., 2) in rad."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    lo = np.array([HIP_TARGET_RANGE[0], KNEE_TARGET_RANGE[0]])
    hi = np.array([HIP_TARGET_RANGE[1], KNEE_TARGET_RANGE[1]])
    return (lo + hi) / 2.0 + a * (hi - lo) / 2.0


def targets_to_action(targets: np.ndarray) -> np.ndarray:
    """Inverse of :func:`action_to_targets` (not clipped)."""
    lo = np.array([HIP_TARGET_RANGE[0], KNEE_TARGET_RANGE[0]])
    hi = np.array([HIP_TARGET_RANGE[1], KNEE_TARGET_RANGE[1]])
    return (np.asarray(targets, dtype=np.float64) - (lo + hi) / 2.0) / ((hi - lo) / 2.0)


# ---------------------------------------------------------------------------------------------- kinematics


def foot_position(q: np.ndarray) -> np.ndarray:
    """Forward kinematics: joint angles (..., 2) -> foot position (..., 2) in the hip frame."""
    q = np.asarray(q, dtype=np.float64)
    q1, q12 = q[..., 0], q[..., 0] + q[..., 1]
    x = THIGH_LENGTH * np.sin(q1) + SHANK_LENGTH * np.sin(q12)
    y = -THIGH_LENGTH * np.cos(q1) - SHANK_LENGTH * np.cos(q12)
    return np.stack([x, y], axis=-1)


def inverse_kinematics(p: np.ndarray) -> np.ndarray:
    """Foot positions (..., 2) in the hip frame -> joint angles (..., 2), knee bent forward (q_knee <= 0)."""
    p = np.asarray(p, dtype=np.float64)
    x, y = p[..., 0], p[..., 1]
    d2 = x**2 + y**2
    cos_knee = (d2 - THIGH_LENGTH**2 - SHANK_LENGTH**2) / (2 * THIGH_LENGTH * SHANK_LENGTH)
    knee = -np.arccos(np.clip(cos_knee, -1.0, 1.0))
    # angle of the hip->foot line from straight down, minus the thigh/shank triangle's angle at the hip
    hip = np.arctan2(x, -y) - np.arctan2(SHANK_LENGTH * np.sin(knee), THIGH_LENGTH + SHANK_LENGTH * np.cos(knee))
    return np.stack([hip, knee], axis=-1)


# ---------------------------------------------------------------------------------------------- the task


def desired_foot_position(phase: np.ndarray | float) -> np.ndarray:
    """The reference foot position (..., 2) at ``phase`` (rad, any real): a half-ellipse swing over
    ``phase`` in [0, pi) from back to front, then a straight stance line back along its chord."""
    phi = np.mod(np.asarray(phase, dtype=np.float64), 2 * np.pi)
    swing = phi < np.pi
    x_swing = -ELLIPSE_HALF_WIDTH * np.cos(phi)
    y_swing = ELLIPSE_CENTER_Y + ELLIPSE_HEIGHT * np.sin(phi)
    x_stance = ELLIPSE_HALF_WIDTH * (1.0 - 2.0 * (phi - np.pi) / np.pi)
    x = np.where(swing, x_swing, x_stance)
    y = np.where(swing, y_swing, ELLIPSE_CENTER_Y)
    return np.stack([x, y], axis=-1)


def tracking_reward(q: np.ndarray, phase: np.ndarray | float) -> np.ndarray:
    """``exp(-REWARD_SCALE * ||p_foot(q) - p_des(phase)||)``, in (0, 1]."""
    err = np.linalg.norm(foot_position(q) - desired_foot_position(phase), axis=-1)
    return np.exp(-REWARD_SCALE * err)


def tracking_reward_scalar(q_hip: float, q_knee: float, phase: float) -> float:
    """:func:`tracking_reward` of one configuration, in plain floats (the plant's per-step reward)."""
    q12 = q_hip + q_knee
    x = THIGH_LENGTH * math.sin(q_hip) + SHANK_LENGTH * math.sin(q12)
    y = -THIGH_LENGTH * math.cos(q_hip) - SHANK_LENGTH * math.cos(q12)
    phi = phase % (2 * math.pi)
    if phi < math.pi:
        xd, yd = -ELLIPSE_HALF_WIDTH * math.cos(phi), ELLIPSE_CENTER_Y + ELLIPSE_HEIGHT * math.sin(phi)
    else:
        xd, yd = ELLIPSE_HALF_WIDTH * (1.0 - 2.0 * (phi - math.pi) / math.pi), ELLIPSE_CENTER_Y
    return math.exp(-REWARD_SCALE * math.hypot(x - xd, y - yd))
