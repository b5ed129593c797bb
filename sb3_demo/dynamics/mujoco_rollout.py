"""Plan through the true simulator of a MuJoCo Gymnasium env (simulation only).

:class:`MuJoCoRolloutDynamics` steps a batch of full physics states (``mjSTATE_FULLPHYSICS``: time,
qpos, qvel, actuator activations, ...) with ``mujoco.rollout`` on a persistent thread pool: one model
step is ``frame_skip`` physics steps with the action held, exactly as the env's ``do_simulation``. The
rewards and terminations are the env's own formulas (with the env's settings: weights, healthy ranges,
...), computed from the states before and after the step; :meth:`MuJoCoRolloutDynamics.observe` turns
states into the env's observations so that the planner can query the SB3 actor and critic.

Supported out of the box: the Gymnasium v5 tasks InvertedPendulum, InvertedDoublePendulum, Reacher,
Swimmer, HalfCheetah, Hopper, Walker2d and Ant. Other MuJoCo envs work when you pass
``observation_fn``, ``reward_fn`` and ``termination_fn`` (functions of full physics states; use
:meth:`~MuJoCoRolloutDynamics.qpos` / :meth:`~MuJoCoRolloutDynamics.qvel` to read them).

How close to ``env.step``: states agree to ~1e-7 (the rollout starts each step's constraint solver
without the env's warm start). Quantities the env reads from MuJoCo's derived data after ``mj_step`` (the
Reacher fingertip, the double pendulum's tip site and constraint force, Ant's contact forces and torso
position) hold the kinematics of the integrator's last internal stage in the env; here they are
computed at the final state, which agrees to ~1e-4 (see the tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np
import torch as th
from mujoco import rollout as mj_rollout

from sb3_demo.checks import check_int

StateFn = Callable[[th.Tensor], th.Tensor]
TransitionFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]

FULLPHYSICS = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
_CTRL = int(mujoco.mjtState.mjSTATE_CTRL)


def _unwrap_mujoco_env(env: Any) -> Any:
    """The underlying ``MujocoEnv`` of a (wrapped) gymnasium env, or a clear error."""
    if hasattr(env, "envs") and hasattr(env, "num_envs"):
        raise TypeError("MuJoCoRolloutDynamics needs a single gymnasium env, got a VecEnv; pass e.g. vec_env.envs[0]")
    base = getattr(env, "unwrapped", env)
    model = getattr(base, "model", None)
    data = getattr(base, "data", None)
    if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
        raise TypeError(
            f"MuJoCoRolloutDynamics needs a MuJoCo gymnasium env (with .unwrapped.model / .data of mujoco "
            f"types), got {type(base).__name__}, which has no MuJoCo state; use an analytic model "
            "(sb3_demo.dynamics.analytic_model_for) or EnsembleDynamics instead"
        )
    return base


class _Task:
    """Observation, reward and termination of one env, as functions of full physics states."""

    #: size of the MuJoCo derived data (kinematics, constraint/contact forces) the task reads per state
    derived_size = 0
    #: the reward needs that derived data (else only the observation does)
    reward_needs_derived = False
    needs_rne_post_constraint = False
    can_terminate = True

    def __init__(self, dyn: MuJoCoRolloutDynamics, env: Any) -> None:
        self.dyn = dyn
        self.env = env

    def derived(self, data: mujoco.MjData) -> np.ndarray:
        """Derived quantities of one state (after ``mj_forward``), shape (derived_size,)."""
        raise NotImplementedError

    def derived_rows(self, states: th.Tensor) -> th.Tensor:
        """Which rows need :meth:`derived` (default: all)."""
        return th.ones(states.shape[0], dtype=th.bool)

    def observe(self, states: th.Tensor, extra: th.Tensor | None) -> th.Tensor:
        raise NotImplementedError

    def reward_termination(
        self, states: th.Tensor, actions: th.Tensor, next_states: th.Tensor, extra: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor]:
        raise NotImplementedError

    def ctrl_cost(self, actions: th.Tensor, default: float) -> th.Tensor:
        weight = float(getattr(self.env, "_ctrl_cost_weight", default))
        return weight * (actions**2).sum(dim=1)


class _InvertedPendulum(_Task):
    def observe(self, states: th.Tensor, extra: th.Tensor | None) -> th.Tensor:
        return th.cat([self.dyn.qpos(states), self.dyn.qvel(states)], dim=1)

    def reward_termination(
        self, states: th.Tensor, actions: th.Tensor, next_states: th.Tensor, extra: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor]:
        obs = self.observe(next_states, None)
        terminated = ~th.isfinite(obs).all(dim=1) | (obs[:, 1].abs() > 0.2)
        return (~terminated).to(obs.dtype), terminated


class _InvertedDoublePendulum(_Task):
    derived_size = 1  # qfrc_constraint[0]: the cart's rail-limit force

    def __init__(self, dyn: MuJoCoRolloutDynamics, env: Any) -> None:
        super().__init__(dyn, env)
        model = dyn.model
        self.site = 0
        self.rail_limit = float(np.abs(model.jnt_range[0]).min()) - float(model.jnt_margin[0]) - 0.02
        self.healthy_reward = float(getattr(env, "_healthy_reward", 10.0))

    def derived(self, data: mujoco.MjData) -> np.ndarray:
        return data.qfrc_constraint[:1]

    def derived_rows(self, states: th.Tensor) -> th.Tensor:
        # the rail limit is the only constraint: its force is 0 unless the cart is at the end of the rail
        return (self.dyn.qpos(states)[:, 0].abs() >= self.rail_limit).cpu()

    def observe(self, states: th.Tensor, extra: th.Tensor | None) -> th.Tensor:
        qpos, qvel = self.dyn.qpos(states), self.dyn.qvel(states)
        assert extra is not None
        return th.cat(
            [qpos[:, :1], th.sin(qpos[:, 1:]), th.cos(qpos[:, 1:]), qvel.clamp(-10, 10), extra.clamp(-10, 10)],
            dim=1,
        )

    def reward_termination(
        self, states: th.Tensor, actions: th.Tensor, next_states: th.Tensor, extra: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor]:
        qpos, qvel = self.dyn.qpos(next_states), self.dyn.qvel(next_states)
        # tip site: cart + two 0.6 m poles hinged about y
        length = 0.6
        x = qpos[:, 0] + length * (th.sin(qpos[:, 1]) + th.sin(qpos[:, 1] + qpos[:, 2]))
        y = length * (th.cos(qpos[:, 1]) + th.cos(qpos[:, 1] + qpos[:, 2]))
        terminated = ~(y > 1.0)
        alive = self.healthy_reward * (~terminated).to(qpos.dtype)
        reward = alive - (0.01 * x**2 + (y - 2) ** 2) - (1e-3 * qvel[:, 1] ** 2 + 5e-3 * qvel[:, 2] ** 2)
        return reward, terminated


class _Reacher(_Task):
    can_terminate = False

    def __init__(self, dyn: MuJoCoRolloutDynamics, env: Any) -> None:
        super().__init__(dyn, env)
        model = dyn.model

        def body_xy(name: str) -> th.Tensor:
            return th.as_tensor(model.body(name).pos[:2].copy(), dtype=th.float64)

        self.base = body_xy("body0")
        self.link1 = body_xy("body1")
        self.link2 = body_xy("fingertip")
        self.target = body_xy("target") - th.as_tensor(model.qpos0[2:4].copy(), dtype=th.float64)
        self.dist_weight = float(getattr(env, "_reward_dist_weight", 1.0))
        self.ctrl_weight = float(getattr(env, "_reward_control_weight", 1.0))

    @staticmethod
    def _rotate(v: th.Tensor, angle: th.Tensor) -> th.Tensor:
        c, s = th.cos(angle), th.sin(angle)
        return th.stack([c * v[0] - s * v[1], s * v[0] + c * v[1]], dim=1)

    def fingertip_minus_target(self, states: th.Tensor) -> th.Tensor:
        qpos = self.dyn.qpos(states)
        dev = qpos.device
        q0, q01 = qpos[:, 0], qpos[:, 0] + qpos[:, 1]
        tip = self.base.to(dev) + self._rotate(self.link1.to(dev), q0) + self._rotate(self.link2.to(dev), q01)
        return tip - (self.target.to(dev) + qpos[:, 2:4])

    def observe(self, states: th.Tensor, extra: th.Tensor | None) -> th.Tensor:
        qpos, qvel = self.dyn.qpos(states), self.dyn.qvel(states)
        theta = qpos[:, :2]
        return th.cat(
            [th.cos(theta), th.sin(theta), qpos[:, 2:], qvel[:, :2], self.fingertip_minus_target(states)], dim=1
        )

    def reward_termination(
        self, states: th.Tensor, actions: th.Tensor, next_states: th.Tensor, extra: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor]:
        dist = th.linalg.vector_norm(self.fingertip_minus_target(next_states), dim=1)
        reward = -self.dist_weight * dist - self.ctrl_weight * (actions**2).sum(dim=1)
        return reward, th.zeros_like(reward, dtype=th.bool)


class _Locomotion(_Task):
    """Forward reward ``(x_after - x_before) / dt`` of ``qpos[0]``, minus a control cost."""

    skipped_qpos = 1
    clip_qvel = False
    default_ctrl_cost = 0.1

    def __init__(self, dyn: MuJoCoRolloutDynamics, env: Any) -> None:
        super().__init__(dyn, env)
        exclude = bool(getattr(env, "_exclude_current_positions_from_observation", True))
        self.skip = self.skipped_qpos if exclude else 0
        self.forward_weight = float(getattr(env, "_forward_reward_weight", 1.0))
        self.dt = float(env.dt)

    def observe(self, states: th.Tensor, extra: th.Tensor | None) -> th.Tensor:
        qvel = self.dyn.qvel(states)
        if self.clip_qvel:
            qvel = qvel.clamp(-10.0, 10.0)
        return th.cat([self.dyn.qpos(states)[:, self.skip :], qvel], dim=1)

    def forward_reward(self, states: th.Tensor, next_states: th.Tensor) -> th.Tensor:
        x0, x1 = self.dyn.qpos(states)[:, 0], self.dyn.qpos(next_states)[:, 0]
        return self.forward_weight * (x1 - x0) / self.dt

    def healthy(self, next_states: th.Tensor) -> th.Tensor | None:
        return None

    def reward_termination(
        self, states: th.Tensor, actions: th.Tensor, next_states: th.Tensor, extra: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor]:
        reward = self.forward_reward(states, next_states) - self.ctrl_cost(actions, self.default_ctrl_cost)
        healthy = self.healthy(next_states)
        if healthy is None:
            return reward, th.zeros_like(reward, dtype=th.bool)
        reward = reward + float(getattr(self.env, "_healthy_reward", 1.0)) * healthy.to(reward.dtype)
        terminated = ~healthy & bool(getattr(self.env, "_terminate_when_unhealthy", True))
        return reward, terminated


class _Swimmer(_Locomotion):
    can_terminate = False
    skipped_qpos = 2
    default_ctrl_cost = 1e-4


class _HalfCheetah(_Locomotion):
    can_terminate = False
    default_ctrl_cost = 0.1


class _Hopper(_Locomotion):
    clip_qvel = True
    default_ctrl_cost = 1e-3

    def healthy(self, next_states: th.Tensor) -> th.Tensor:
        qpos, qvel = self.dyn.qpos(next_states), self.dyn.qvel(next_states)
        state = th.cat([qpos, qvel], dim=1)[:, 2:]
        lo_s, hi_s = getattr(self.env, "_healthy_state_range", (-100.0, 100.0))
        lo_z, hi_z = getattr(self.env, "_healthy_z_range", (0.7, float("inf")))
        lo_a, hi_a = getattr(self.env, "_healthy_angle_range", (-0.2, 0.2))
        z, angle = qpos[:, 1], qpos[:, 2]
        healthy_state = ((state > lo_s) & (state < hi_s)).all(dim=1)
        return healthy_state & (z > lo_z) & (z < hi_z) & (angle > lo_a) & (angle < hi_a)


class _Walker2d(_Locomotion):
    clip_qvel = True
    default_ctrl_cost = 1e-3

    def healthy(self, next_states: th.Tensor) -> th.Tensor:
        qpos = self.dyn.qpos(next_states)
        lo_z, hi_z = getattr(self.env, "_healthy_z_range", (0.8, 2.0))
        lo_a, hi_a = getattr(self.env, "_healthy_angle_range", (-1.0, 1.0))
        z, angle = qpos[:, 1], qpos[:, 2]
        return (z > lo_z) & (z < hi_z) & (angle > lo_a) & (angle < hi_a)


class _Ant(_Locomotion):
    skipped_qpos = 2
    default_ctrl_cost = 0.5
    needs_rne_post_constraint = True

    def __init__(self, dyn: MuJoCoRolloutDynamics, env: Any) -> None:
        super().__init__(dyn, env)
        self.include_cfrc = bool(getattr(env, "_include_cfrc_ext_in_observation", True))
        self.contact_weight = float(getattr(env, "_contact_cost_weight", 5e-4))
        self.force_range = tuple(getattr(env, "_contact_force_range", (-1.0, 1.0)))
        self.nbody = dyn.model.nbody
        self.derived_size = 6 * self.nbody if (self.include_cfrc or self.contact_weight != 0.0) else 0
        self.reward_needs_derived = self.contact_weight != 0.0
        main_body = getattr(env, "_main_body", 1)
        body_id = dyn.model.body(main_body).id
        # the forward reward tracks the main body; x = qpos[0] holds when it is the root of a free joint
        if body_id != 1 or dyn.model.jnt_type[0] != mujoco.mjtJoint.mjJNT_FREE:
            raise ValueError("MuJoCoRolloutDynamics supports Ant-v5 with its torso (body 1) as main_body")

    def derived(self, data: mujoco.MjData) -> np.ndarray:
        return data.cfrc_ext.reshape(-1)

    def contact_forces(self, extra: th.Tensor) -> th.Tensor:
        return extra.reshape(-1, self.nbody, 6).clamp(*self.force_range)

    def observe(self, states: th.Tensor, extra: th.Tensor | None) -> th.Tensor:
        obs = super().observe(states, extra)
        if not self.include_cfrc:
            return obs
        assert extra is not None
        return th.cat([obs, self.contact_forces(extra)[:, 1:].reshape(states.shape[0], -1)], dim=1)

    def healthy(self, next_states: th.Tensor) -> th.Tensor:
        qpos, qvel = self.dyn.qpos(next_states), self.dyn.qvel(next_states)
        lo_z, hi_z = getattr(self.env, "_healthy_z_range", (0.2, 1.0))
        finite = th.isfinite(qpos).all(dim=1) & th.isfinite(qvel).all(dim=1)
        return finite & (qpos[:, 2] >= lo_z) & (qpos[:, 2] <= hi_z)

    def reward_termination(
        self, states: th.Tensor, actions: th.Tensor, next_states: th.Tensor, extra: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor]:
        reward, terminated = super().reward_termination(states, actions, next_states, extra)
        if self.contact_weight != 0.0:
            assert extra is not None
            reward = reward - self.contact_weight * (self.contact_forces(extra) ** 2).sum(dim=(1, 2))
        return reward, terminated


class _Custom(_Task):
    def __init__(
        self,
        dyn: MuJoCoRolloutDynamics,
        env: Any,
        observation_fn: StateFn | None,
        reward_fn: TransitionFn | None,
        termination_fn: TransitionFn | None,
        fallback: _Task | None,
    ) -> None:
        super().__init__(dyn, env)
        self.observation_fn = observation_fn
        self.reward_fn = reward_fn
        self.termination_fn = termination_fn
        self.fallback = fallback
        if fallback is not None:
            self.derived_size = fallback.derived_size
            self.needs_rne_post_constraint = fallback.needs_rne_post_constraint
            self.reward_needs_derived = fallback.reward_needs_derived and (reward_fn is None or termination_fn is None)

    def derived(self, data: mujoco.MjData) -> np.ndarray:
        assert self.fallback is not None
        return self.fallback.derived(data)

    def derived_rows(self, states: th.Tensor) -> th.Tensor:
        assert self.fallback is not None
        return self.fallback.derived_rows(states)

    def observe(self, states: th.Tensor, extra: th.Tensor | None) -> th.Tensor:
        if self.observation_fn is not None:
            return self.observation_fn(states)
        assert self.fallback is not None
        return self.fallback.observe(states, extra)

    def reward_termination(
        self, states: th.Tensor, actions: th.Tensor, next_states: th.Tensor, extra: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor]:
        if self.fallback is not None and (self.reward_fn is None or self.termination_fn is None):
            reward, terminated = self.fallback.reward_termination(states, actions, next_states, extra)
        if self.reward_fn is not None:
            reward = self.reward_fn(states, actions, next_states).reshape(-1)
        if self.termination_fn is not None:
            terminated = self.termination_fn(states, actions, next_states).reshape(-1).bool()
        return reward, terminated


def _task_classes() -> dict[type, type[_Task]]:
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.inverted_double_pendulum_v5 import InvertedDoublePendulumEnv
    from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv
    from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv
    from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    return {
        InvertedPendulumEnv: _InvertedPendulum,
        InvertedDoublePendulumEnv: _InvertedDoublePendulum,
        ReacherEnv: _Reacher,
        SwimmerEnv: _Swimmer,
        HalfCheetahEnv: _HalfCheetah,
        HopperEnv: _Hopper,
        Walker2dEnv: _Walker2d,
        AntEnv: _Ant,
    }


SUPPORTED_ENVS = (
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "Reacher-v5",
    "Swimmer-v5",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
)


class MuJoCoRolloutDynamics:
    """The true simulator of a MuJoCo gymnasium env as a batched dynamics model.

    States are full physics state vectors (``mjSTATE_FULLPHYSICS``, S = ``state_dim``); read the env's
    current one with :meth:`state_from_env`. ``model(states (N, S), actions (N, A))`` runs the N steps in
    parallel on a persistent ``mujoco.rollout.Rollout`` thread pool and returns the next states, the env's
    rewards and terminations. Computation is in float64; outputs have the dtype and device of ``states``
    (plan with ``dtype=th.float64`` to keep the simulator's precision).

    The env itself is never stepped or modified: the model works on a copy-free view of its ``MjModel``
    and on its own ``MjData`` instances.

    :param env: a MuJoCo gymnasium env (wrappers are fine); it refuses envs without a MuJoCo state
    :param nthread: rollout threads (default: the number of CPUs; 0 runs on the calling thread)
    :param observation_fn: ``observation_fn(states (N, S)) -> (N, obs_dim)`` for envs not supported out of
        the box (overrides the built-in one otherwise)
    :param reward_fn: ``reward_fn(states, actions, next_states) -> (N,)``, likewise
    :param termination_fn: ``termination_fn(states, actions, next_states) -> (N,) bool``, likewise
    """

    def __init__(
        self,
        env: Any,
        nthread: int | None = None,
        observation_fn: StateFn | None = None,
        reward_fn: TransitionFn | None = None,
        termination_fn: TransitionFn | None = None,
    ) -> None:
        base = _unwrap_mujoco_env(env)
        if nthread is None:
            nthread = os.cpu_count() or 1
        nthread = check_int("nthread", nthread, 0)
        self.env = base
        self.model: mujoco.MjModel = base.model
        self.frame_skip = int(base.frame_skip)
        self.nthread = nthread
        self.state_dim = mujoco.mj_stateSize(self.model, FULLPHYSICS)
        self.action_dim = int(self.model.nu)
        self.nq, self.nv = int(self.model.nq), int(self.model.nv)
        self._qpos_start = mujoco.mj_stateSize(self.model, int(mujoco.mjtState.mjSTATE_TIME))
        self._qvel_start = self._qpos_start + self.nq

        builtin: _Task | None = None
        for env_class, task_class in _task_classes().items():
            if type(base) is env_class:
                builtin = task_class(self, base)
        custom = (observation_fn, reward_fn, termination_fn)
        if builtin is None and any(fn is None for fn in custom):
            raise ValueError(
                f"MuJoCoRolloutDynamics has no built-in observation/reward/termination for "
                f"{type(base).__name__}; supported: {list(SUPPORTED_ENVS)}. For other MuJoCo envs pass "
                "observation_fn, reward_fn and termination_fn (functions of full physics states)."
            )
        self.task: _Task = (
            builtin
            if builtin is not None and all(fn is None for fn in custom)
            else _Custom(self, base, observation_fn, reward_fn, termination_fn, builtin)
        )

        #: False when the task never terminates (the planner then skips termination bookkeeping)
        self.can_terminate = self.task.can_terminate or termination_fn is not None
        self._rollout = mj_rollout.Rollout(nthread=nthread)
        self._datas = [mujoco.MjData(self.model) for _ in range(max(nthread, 1))]
        self._scratch = mujoco.MjData(self.model)
        self.observation_dim = int(self.observe(self.state_from_env()[None]).shape[1])

    # ------------------------------------------------------------------ state access

    def state_from_env(self, env: Any | None = None) -> th.Tensor:
        """The env's current full physics state, (S,) float64."""
        base = self.env if env is None else _unwrap_mujoco_env(env)
        if base.model.nq != self.nq or mujoco.mj_stateSize(base.model, FULLPHYSICS) != self.state_dim:
            raise ValueError("state_from_env: the env's model differs from the one this dynamics model rolls out")
        state = np.empty(self.state_dim, dtype=np.float64)
        mujoco.mj_getState(base.model, base.data, state, FULLPHYSICS)
        return th.from_numpy(state)

    def qpos(self, states: th.Tensor) -> th.Tensor:
        """(N, S) -> (N, nq) joint positions."""
        return states[:, self._qpos_start : self._qpos_start + self.nq]

    def qvel(self, states: th.Tensor) -> th.Tensor:
        """(N, S) -> (N, nv) joint velocities."""
        return states[:, self._qvel_start : self._qvel_start + self.nv]

    # ------------------------------------------------------------------ model interface

    def _check(self, name: str, value: Any, dim: int) -> None:
        if not isinstance(value, th.Tensor):
            raise TypeError(f"{name} must be a torch tensor of shape (N, {dim}), got {type(value).__name__}")
        if value.dim() != 2 or value.shape[1] != dim:
            raise ValueError(
                f"{name} must have shape (N, {dim}) (full physics states for states), got {tuple(value.shape)}"
            )

    def _derived(self, states: th.Tensor) -> th.Tensor | None:
        """MuJoCo's derived quantities of each state the task needs, (N, derived_size) float64."""
        size = self.task.derived_size
        if size == 0:
            return None
        n = states.shape[0]
        out = np.zeros((n, size), dtype=np.float64)
        rows = np.flatnonzero(self.task.derived_rows(states).numpy())
        if rows.size:
            values = states.detach().cpu().numpy()
            model, data = self.model, self._scratch
            rne = self.task.needs_rne_post_constraint
            for i in rows:
                mujoco.mj_setState(model, data, values[i], FULLPHYSICS)
                mujoco.mj_forward(model, data)
                if rne:
                    mujoco.mj_rnePostConstraint(model, data)
                out[i] = self.task.derived(data)
        return th.from_numpy(out)

    def observe(self, states: th.Tensor) -> th.Tensor:
        """The env's observations of full physics states: (N, S) -> (N, obs_dim), dtype of ``states``."""
        self._check("states", states, self.state_dim)
        s = states.detach().to(device="cpu", dtype=th.float64)
        obs = self.task.observe(s, self._derived(s))
        return obs.to(device=states.device, dtype=states.dtype if states.is_floating_point() else th.float64)

    def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Step N states with N actions (env units) through ``frame_skip`` physics steps each.

        :param states: (N, S) full physics states
        :param actions: (N, A) controls in environment units (MuJoCo clamps them to ``ctrlrange`` exactly
            as in the env; the control cost uses them as given, like the env)
        :return: next_states (N, S), rewards (N,), terminated (N,) bool
        """
        self._check("states", states, self.state_dim)
        self._check("actions", actions, self.action_dim)
        n = states.shape[0]
        if actions.shape[0] != n:
            raise ValueError(f"states and actions must have the same batch size, got {n} and {actions.shape[0]}")
        s = states.detach().to(device="cpu", dtype=th.float64)
        a = actions.detach().to(device="cpu", dtype=th.float64)
        initial = np.ascontiguousarray(s.numpy())
        control = np.ascontiguousarray(np.repeat(a.numpy()[:, None, :], self.frame_skip, axis=1))
        trajectory = np.empty((n, self.frame_skip, self.state_dim), dtype=np.float64)
        sensordata = np.empty((n, self.frame_skip, self.model.nsensordata), dtype=np.float64)
        self._rollout.rollout(
            [self.model] * n,
            self._datas,
            initial,
            control,
            control_spec=_CTRL,
            skip_checks=True,
            nstep=self.frame_skip,
            state=trajectory,
            sensordata=sensordata,
        )
        next_s = th.from_numpy(trajectory[:, -1].copy())
        extra = self._derived(next_s) if self.task.reward_needs_derived else None
        reward, terminated = self.task.reward_termination(s, a, next_s, extra)
        out_dtype = states.dtype if states.is_floating_point() else th.float64
        device = states.device
        return (
            next_s.to(device=device, dtype=out_dtype),
            reward.reshape(n).to(device=device, dtype=out_dtype),
            terminated.reshape(n).to(device=device),
        )

    def close(self) -> None:
        """Shut the thread pool down (also done when the object is garbage-collected)."""
        if getattr(self, "_rollout", None) is not None:
            self._rollout.close()
            self._rollout = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"MuJoCoRolloutDynamics({type(self.env).__name__}, state_dim={self.state_dim}, "
            f"observation_dim={self.observation_dim}, frame_skip={self.frame_skip}, nthread={self.nthread})"
        )
