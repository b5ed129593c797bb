"""Env wrappers that run the DMD-MPC planner's action in place of a stock SB3 agent's.

- :class:`DeMoVecEnvWrapper` wraps a VecEnv in the main process (where the agent's networks are), so it
  works with ``DummyVecEnv`` and ``SubprocVecEnv`` alike and plans for every env in one batch. Put it
  *inside* ``VecNormalize``: ``VecNormalize(DeMoVecEnvWrapper(venv))``, so that it sees the original
  observations, the scale the replay buffer and the learned model use. RL Zoo: ``vec_env_wrapper:``.
- :class:`DeMoWrapper` wraps one gymnasium env (single-env training with a DummyVecEnv, or evaluation).

Both report the action that really ran in ``info["executed_action"]`` (env units) and whether the planner
chose it in ``info["demo_guided"]``; :class:`~sb3_demo.wrappers.DeMoCallback` writes that action into the
replay buffer, attaches the agent's actor/critic, fits a learned model and stores imagined transitions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize, is_vecenv_wrapped
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from sb3_demo.common.executed_action import EXECUTED_ACTION_KEY, GUIDED_KEY
from sb3_demo.common.model_factory import env_id_of
from sb3_demo.wrappers.guide import DeMoGuide


class _GuideMixin:
    """``attach`` / ``detach`` and the guide's objects, shared by both wrappers."""

    guide: DeMoGuide

    def _init_guide(self, env: Any, agent: Any, who: str, settings: dict[str, Any]) -> None:
        """The wrapper's :class:`DeMoGuide` for ``env``'s spaces, attached to ``agent`` if one is given."""
        self.guide = DeMoGuide(env.observation_space, env.action_space, env_id=env_id_of(env), who=who, **settings)
        self._obs: np.ndarray | None = None
        if agent is not None:
            self.attach(agent)

    def attach(self, agent: Any, dynamics: Any = None, vec_normalize: VecNormalize | None = None) -> Any:
        """Plan with ``agent``'s actor and critic from now on (evaluation, or training without the callback's
        schedule). See :meth:`DeMoGuide.attach`. Returns the wrapper."""
        self.guide.attach(agent, dynamics=dynamics, vec_normalize=vec_normalize, active=True)
        return self

    def detach(self) -> None:
        """Forget the agent."""
        self.guide.detach()

    @property
    def dynamics(self) -> Any:
        """The model the planner rolls through (None until attached)."""
        return self.guide.dynamics

    @property
    def planner(self) -> Any:
        """The :class:`~sb3_demo.DMDMPCPlanner` (None until attached)."""
        return self.guide.planner


class DeMoWrapper(_GuideMixin, gym.Wrapper):
    """Run the planner's action instead of the agent's in one gymnasium env.

    Reports ``info["executed_action"]`` (the action that ran, env units) and ``info["demo_guided"]``.
    Training: wrap each env (``make_vec_env(..., wrapper_class=DeMoWrapper)``, DummyVecEnv only: in a
    SubprocVecEnv the planner cannot reach the agent's networks, use :class:`DeMoVecEnvWrapper`) and pass
    :class:`~sb3_demo.wrappers.DeMoCallback` to ``learn``. Evaluation: ``DeMoWrapper(env, agent=model,
    model=..., deterministic=True)``.

    :param env: the env (flat Box observations, bounded Box actions)
    :param agent: an SB3 SAC/TD3/TQC/CrossQ model to attach now (evaluation); None: the callback attaches it
    :param settings: the planning settings of :class:`~sb3_demo.wrappers.DeMoGuide` (``model``,
        ``model_kwargs``, ``planner_kwargs``, ``guide_prob``, ``critic_reduce``, ``use_terminal_value``,
        ``terminal_value_starts``, ``deterministic``, ``on_unattached``, ``seed``)
    """

    def __init__(self, env: gym.Env, agent: Any = None, **settings: Any) -> None:
        super().__init__(env)
        self._init_guide(env, agent, "DeMoWrapper", settings)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._obs = np.asarray(obs, dtype=np.float32)
        self.guide.reset()
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("DeMoWrapper: call reset() before step()")
        executed, guided = self.guide.choose(self._obs[None], np.asarray(action)[None])
        run = executed[0].reshape(np.shape(action)) if np.ndim(action) > 0 else executed[0]
        obs, reward, terminated, truncated, info = self.env.step(run)
        info = dict(info)
        info[EXECUTED_ACTION_KEY] = np.array(run, dtype=np.float32)
        info[GUIDED_KEY] = bool(guided[0])
        self._obs = np.asarray(obs, dtype=np.float32)
        return obs, reward, terminated, truncated, info


class DeMoVecEnvWrapper(_GuideMixin, VecEnvWrapper):
    """Run the planner's actions instead of the agent's for every env of a VecEnv, planned in one batch.

    Lives in the main process, so the planner sees the agent's networks with any VecEnv (DummyVecEnv,
    SubprocVecEnv). Must sit inside VecNormalize (``VecNormalize(DeMoVecEnvWrapper(venv))``). Reports
    ``info["executed_action"]`` and ``info["demo_guided"]`` per env. RL Zoo: a ``vec_env_wrapper:`` entry.

    :param venv: the VecEnv (flat Box observations, bounded Box actions), not normalised
    :param agent: an SB3 model to attach now (evaluation); None: :class:`~sb3_demo.wrappers.DeMoCallback`
        attaches it at the start of training
    :param settings: the planning settings of :class:`~sb3_demo.wrappers.DeMoGuide` (as for
        :class:`DeMoWrapper`)
    """

    def __init__(self, venv: VecEnv, agent: Any = None, **settings: Any) -> None:
        if not isinstance(venv, VecEnv):
            raise TypeError(
                f"DeMoVecEnvWrapper wraps a stable_baselines3 VecEnv, got {type(venv).__name__}; "
                "use DeMoWrapper for a single gymnasium env"
            )
        if is_vecenv_wrapped(venv, VecNormalize):
            raise ValueError(
                "DeMoVecEnvWrapper must sit inside VecNormalize, so that the planner sees original observations "
                "(the scale of the replay buffer and the learned model): use "
                "VecNormalize(DeMoVecEnvWrapper(venv)), not DeMoVecEnvWrapper(VecNormalize(venv))"
            )
        super().__init__(venv)
        self._executed: np.ndarray | None = None
        self._guided: np.ndarray | None = None
        self._init_guide(venv, agent, "DeMoVecEnvWrapper", settings)

    def reset(self) -> Any:
        obs = self.venv.reset()
        self._obs = np.asarray(obs, dtype=np.float32)
        self.guide.reset()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        if self._obs is None:
            raise RuntimeError("DeMoVecEnvWrapper: call reset() before step()")
        executed, guided = self.guide.choose(self._obs, actions)
        self._executed, self._guided = executed, guided
        self.venv.step_async(executed.reshape(np.shape(actions)))

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        assert self._executed is not None and self._guided is not None
        for i, info in enumerate(infos):
            info[EXECUTED_ACTION_KEY] = self._executed[i].copy()
            info[GUIDED_KEY] = bool(self._guided[i])
        self._obs = np.asarray(obs, dtype=np.float32)
        if np.any(dones):
            self.guide.reset(np.flatnonzero(dones))
        return obs, rewards, dones, infos


def find_guides(env: Any) -> tuple[list[DeMoGuide], bool]:
    """The guides of the DeMo wrappers in a (vectorised) env that live in this process.

    :return: the guides, and whether some DeMoWrapper lives in another process (SubprocVecEnv)
    """
    guides: list[DeMoGuide] = []
    venv: Any = env
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, DeMoVecEnvWrapper):
            guides.append(venv.guide)
        venv = venv.venv
    if not isinstance(venv, VecEnv):  # a single gymnasium env
        return guides + _gym_guides(venv), False
    envs = getattr(venv, "envs", None)
    if envs is not None:
        for single in envs:
            guides.extend(_gym_guides(single))
        return guides, False
    remote = bool(np.any(venv.env_is_wrapped(DeMoWrapper)))
    return guides, remote


def _gym_guides(env: Any) -> list[DeMoGuide]:
    found = []
    while env is not None:
        if isinstance(env, DeMoWrapper):
            found.append(env.guide)
        env = getattr(env, "env", None)
    return found
