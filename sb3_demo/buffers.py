"""The replay-buffer augmentor: real transitions plus the planner's imagined ones (D_MPC).

:class:`AugmentedReplayBuffer` is an SB3 :class:`~stable_baselines3.common.buffers.ReplayBuffer` whose
real part is untouched (so SB3, the model trainer and ``save_replay_buffer`` see exactly what a plain
buffer holds) and which keeps the planner's imagined transitions in a separate, capped ring buffer.
``sample`` draws ``round(imagined_fraction * batch_size)`` of each batch from the imagined part.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


class AugmentedReplayBuffer(ReplayBuffer):
    """A replay buffer that also samples from the planner's imagined transitions.

    :param buffer_size: max number of real transitions (as in SB3)
    :param observation_space: observation space (a flat Box)
    :param action_space: action space (a Box)
    :param device: torch device of sampled batches
    :param n_envs: number of parallel environments
    :param optimize_memory_usage: as in SB3's ReplayBuffer
    :param handle_timeout_termination: as in SB3's ReplayBuffer
    :param imagined_fraction: fraction of every sampled batch drawn from imagined transitions, in [0, 1);
        0 turns augmentation off
    :param imagined_buffer_size: cap on stored imagined transitions (the oldest are overwritten)
    :param imagined_max_age: imagined transitions older than this many real transitions are never
        sampled (None: no age limit), so stale model data cannot dominate
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        imagined_fraction: float = 0.1,
        imagined_buffer_size: int = 50_000,
        imagined_max_age: int | None = 10_000,
    ) -> None:
        if not (0.0 <= imagined_fraction < 1.0) or not math.isfinite(imagined_fraction):
            raise ValueError(f"imagined_fraction must be in [0, 1), got {imagined_fraction}")
        if imagined_buffer_size < 1:
            raise ValueError(f"imagined_buffer_size must be >= 1, got {imagined_buffer_size}")
        if imagined_max_age is not None and imagined_max_age < 1:
            raise ValueError(f"imagined_max_age must be >= 1 or None, got {imagined_max_age}")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.imagined_fraction = float(imagined_fraction)
        self.imagined_buffer_size = int(imagined_buffer_size)
        self.imagined_max_age = imagined_max_age
        cap = self.imagined_buffer_size
        self.imagined_observations = np.zeros((cap, *self.obs_shape), dtype=np.float32)
        self.imagined_next_observations = np.zeros((cap, *self.obs_shape), dtype=np.float32)
        self.imagined_actions = np.zeros((cap, self.action_dim), dtype=np.float32)
        self.imagined_rewards = np.zeros(cap, dtype=np.float32)
        self.imagined_dones = np.zeros(cap, dtype=np.float32)
        # real transitions stored (counting every env) when each imagined transition was added
        self.imagined_stamps = np.zeros(cap, dtype=np.int64)
        self.imagined_pos = 0
        self.imagined_full = False
        self.real_added = 0
        self.imagined_added = 0
        self._forget_fresh_indices()

    # ------------------------------------------------------------------ adding

    def add(self, *args: Any, **kwargs: Any) -> None:
        super().add(*args, **kwargs)
        self.real_added += self.n_envs

    def imagined_size(self) -> int:
        """Number of imagined transitions stored."""
        return self.imagined_buffer_size if self.imagined_full else self.imagined_pos

    def add_imagined(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
    ) -> int:
        """Store a batch of imagined transitions (rows with a non-finite entry are dropped).

        :param obs: (N, obs_dim)
        :param next_obs: (N, obs_dim)
        :param action: (N, act_dim) in the buffer's (normalised) action space
        :param reward: (N,)
        :param done: (N,) true terminations only (no time limits in imagination)
        :return: transitions stored
        """
        n = obs.shape[0]
        expected = {"obs": (n, *self.obs_shape), "next_obs": (n, *self.obs_shape), "action": (n, self.action_dim)}
        for name, arr in (("obs", obs), ("next_obs", next_obs), ("action", action)):
            if tuple(arr.shape) != expected[name]:
                raise ValueError(f"add_imagined: {name} has shape {tuple(arr.shape)}, expected {expected[name]}")
        reward, done = np.asarray(reward).reshape(-1), np.asarray(done).reshape(-1)
        if reward.shape[0] != n or done.shape[0] != n:
            raise ValueError(f"add_imagined: reward/done must have {n} entries, got {reward.shape}, {done.shape}")
        finite = (
            np.isfinite(obs).all(axis=1)
            & np.isfinite(next_obs).all(axis=1)
            & np.isfinite(action).all(axis=1)
            & np.isfinite(reward)
        )
        if not finite.all():  # a model's NaNs never reach the critic
            obs, next_obs, action, reward, done = (x[finite] for x in (obs, next_obs, action, reward, done))
            n = obs.shape[0]
        if n == 0:
            return 0
        if n > self.imagined_buffer_size:
            obs, next_obs, action, reward, done = (
                x[-self.imagined_buffer_size :] for x in (obs, next_obs, action, reward, done)
            )
            n = self.imagined_buffer_size
        idx = (self.imagined_pos + np.arange(n)) % self.imagined_buffer_size
        self.imagined_observations[idx] = obs
        self.imagined_next_observations[idx] = next_obs
        self.imagined_actions[idx] = action
        self.imagined_rewards[idx] = reward
        self.imagined_dones[idx] = done
        self.imagined_stamps[idx] = self.real_added
        self.imagined_added += n
        if self.imagined_pos + n >= self.imagined_buffer_size:
            self.imagined_full = True
        self.imagined_pos = int((self.imagined_pos + n) % self.imagined_buffer_size)
        return n

    # ------------------------------------------------------------------ sampling

    def _forget_fresh_indices(self) -> None:
        self._fresh_key: tuple[Any, ...] | None = None
        self._fresh_indices = np.zeros(0, dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # the cache of fresh rows is rebuilt on demand, not saved
        del state["_fresh_key"], state["_fresh_indices"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("imagined_added", 0)  # a buffer saved without the count: the cache key starts from 0
        self.__dict__.update(state)
        self._forget_fresh_indices()

    def _fresh_imagined_indices(self) -> np.ndarray:
        # a scan of the whole imagined buffer (400k rows in MBPO's regime) costs about a millisecond, so it is
        # redone only when real or imagined transitions were added or the age cap changed: at 10 updates per
        # env step, once per 10 batches
        key = (self.real_added, self.imagined_added, self.imagined_max_age)
        if key != self._fresh_key:
            size = self.imagined_size()
            idx = np.arange(size)
            if self.imagined_max_age is not None and size > 0:
                idx = idx[self.real_added - self.imagined_stamps[:size] <= self.imagined_max_age]
            self._fresh_key, self._fresh_indices = key, idx
        return self._fresh_indices

    def num_imagined_in_batch(self, batch_size: int) -> int:
        """How many of ``batch_size`` samples come from imagination right now (0 when none is fresh)."""
        if self.imagined_fraction == 0.0 or len(self._fresh_imagined_indices()) == 0:
            return 0
        return min(batch_size - 1, round(self.imagined_fraction * batch_size))

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        n_imagined = self.num_imagined_in_batch(batch_size)
        real = super().sample(batch_size - n_imagined, env=env)
        if n_imagined == 0:
            return real
        fresh = self._fresh_imagined_indices()
        # the global numpy RNG, as SB3's own buffers use: set_random_seed(seed) makes sampling reproducible
        inds = fresh[np.random.randint(0, len(fresh), size=n_imagined)]  # noqa: NPY002
        imagined = (
            self._normalize_obs(self.imagined_observations[inds], env),
            self.imagined_actions[inds],
            self._normalize_obs(self.imagined_next_observations[inds], env),
            self.imagined_dones[inds].reshape(-1, 1),
            self._normalize_reward(self.imagined_rewards[inds].reshape(-1, 1), env),
        )
        parts = [self.to_torch(np.asarray(x, dtype=np.float32)) for x in imagined]
        real_parts = (real.observations, real.actions, real.next_observations, real.dones, real.rewards)
        return ReplayBufferSamples(*(th.cat([r, p.to(r.dtype)]) for r, p in zip(real_parts, parts, strict=True)))
