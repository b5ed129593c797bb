"""Branched model rollouts (MBPO-style): model data generated from real replay states with the current actor.

Every ``rollout_freq`` env steps, :class:`ModelRolloutRunner` samples ``num_rollouts`` real observations from
the agent's replay buffer, rolls the actor through the dynamics model for ``rollout_length`` steps (a constant
or MBPO's linear schedule), stops the rows that terminate and stores the transitions as model data in the
:class:`~sb3_demo.buffers.AugmentedReplayBuffer`. One implementation serves DeMoSAC, DeMoTD3 (from
``collect_rollouts``) and stock SAC/TD3 with :class:`~sb3_demo.wrappers.DeMoCallback` (from
``on_rollout_end``); both run it once SB3's rollout collection ends, after a model fit that fell due, right
before the gradient steps, as MBPO does.

The three other MBPO knobs are settings of the buffer and of SB3, not of this module:

- share of model data in each batch (MBPO's ``1 - real_ratio``): the buffer's ``imagined_fraction``;
- retention of recent model data only (MBPO's ``model_retain_epochs``): the buffer's ``imagined_buffer_size``
  (a size cap, the oldest are overwritten) and ``imagined_max_age`` (an age cap in real transitions);
- update-to-data ratio: SB3's ``gradient_steps`` per ``train_freq`` env steps (MBPO: 20 to 40 per step).

The planner's imagined transitions (D_MPC) and the branched rollouts share that one store of model data.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_demo.checks import check_int, is_int
from sb3_demo.common.imagination import model_rollout
from sb3_demo.common.policy_fns import ObsTransform, policy_prior
from sb3_demo.common.schedule import started
from sb3_demo.common.seeding import MODEL_ROLLOUTS, stream_generator

RolloutLength = int | tuple[int, int, int, int]


@dataclass(frozen=True)
class BranchedRollouts:
    """Settings of the branched model rollouts; pass them as a dict (``branched_rollouts=dict(...)``).

    :param num_rollouts: rollouts branched from real replay states per round (MBPO: 400 per env step)
    :param rollout_freq: env steps (counting every env) between rounds; when several rounds fall due within
        one rollout collection (e.g. ``train_freq=(1, "episode")``) they run together
    :param rollout_length: model steps per rollout: an integer >= 1, or MBPO's schedule
        ``(start_step, end_step, min_length, max_length)``: ``min_length`` until ``start_step`` env steps,
        growing linearly to ``max_length`` at ``end_step`` (rounded down)
    :param deterministic: the actor's mean action (True) or a sample of its distribution (False, as MBPO);
        TD3's actor is deterministic either way
    :param rollouts_start: env steps before the first round (None: as soon as the model may be used: once a
        learned model has been fitted, from the agent's ``learning_starts`` for other models)
    """

    num_rollouts: int = 100
    rollout_freq: int = 1
    rollout_length: RolloutLength = 1
    deterministic: bool = False
    rollouts_start: int | None = None

    def __post_init__(self) -> None:
        check_int("branched_rollouts: num_rollouts", self.num_rollouts, 1)
        check_int("branched_rollouts: rollout_freq", self.rollout_freq, 1)
        length = self.rollout_length
        if isinstance(length, list):  # from a yml file
            object.__setattr__(self, "rollout_length", tuple(length))
            length = self.rollout_length
        if isinstance(length, tuple):
            ok = len(length) == 4 and all(is_int(x) for x in length)
            if ok:
                start, end, low, high = length
                ok = 0 <= start < end and 1 <= low <= high
            if not ok:
                raise ValueError(
                    "branched_rollouts: rollout_length must be an integer >= 1 or a tuple (start_step, end_step, "
                    f"min_length, max_length) with 0 <= start_step < end_step and 1 <= min_length <= max_length, "
                    f"got {length!r}"
                )
        elif not is_int(length) or length < 1:
            raise ValueError(
                "branched_rollouts: rollout_length must be an integer >= 1 or a tuple (start_step, end_step, "
                f"min_length, max_length), got {length!r}"
            )
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"branched_rollouts: deterministic must be True or False, got {self.deterministic!r}")
        check_int("branched_rollouts: rollouts_start", self.rollouts_start, 0, allow_none=True)

    def length_at(self, num_timesteps: int) -> int:
        """The rollout length after ``num_timesteps`` env steps."""
        if not isinstance(self.rollout_length, tuple):
            return int(self.rollout_length)
        start, end, low, high = self.rollout_length
        progress = min(max((num_timesteps - start) / (end - start), 0.0), 1.0)
        return int(low + progress * (high - low))

    def rounds_due(self, num_timesteps: int, last_round: int) -> int:
        """Rounds due after ``num_timesteps`` env steps, the last at ``last_round`` (-1: none yet, one is due)."""
        if last_round < 0:
            return 1
        return max(0, (num_timesteps - last_round) // self.rollout_freq)


ROLLOUT_SETTINGS = tuple(f.name for f in dataclasses.fields(BranchedRollouts))


def rollout_settings(value: Any) -> BranchedRollouts | None:
    """The branched-rollout settings from None (off), a dict or a :class:`BranchedRollouts`.

    :raises ValueError: an unknown key (the message lists the known ones) or a bad value
    """
    if value is None or isinstance(value, BranchedRollouts):
        return value
    if not isinstance(value, dict):
        raise ValueError(
            f"branched_rollouts must be None (off), a dict or a BranchedRollouts, got {type(value).__name__}"
        )
    unknown = sorted(set(value) - set(ROLLOUT_SETTINGS))
    if unknown:
        raise ValueError(f"branched_rollouts: unknown setting(s) {unknown}; allowed: {list(ROLLOUT_SETTINGS)}")
    return BranchedRollouts(**value)


def check_rollout_target(buffer: Any, model: Any, who: str) -> None:
    """Check that branched rollouts can run for an agent.

    :param buffer: the agent's replay buffer
    :param model: the agent's model choice (``"ensemble"``, ..., or a model object)
    :param who: the front end's name in the message
    :raises ValueError: the buffer does not sample model data, or the model's states are not observations
    """
    from sb3_demo.buffers import AugmentedReplayBuffer

    if not isinstance(buffer, AugmentedReplayBuffer) or buffer.imagined_fraction == 0.0:
        raise ValueError(
            f"{who}: branched_rollouts store model data in an AugmentedReplayBuffer with imagined_fraction > 0 (the "
            "share of model data in each batch), got "
            f"{type(buffer).__name__} with imagined_fraction={getattr(buffer, 'imagined_fraction', None)}: pass "
            "replay_buffer_class=AugmentedReplayBuffer, replay_buffer_kwargs=dict(imagined_fraction=...)"
        )
    if model == "mujoco" or hasattr(model, "state_from_env"):
        raise ValueError(
            f"{who}: branched_rollouts start from replay-buffer observations; model='mujoco' plans over simulator "
            "states. Use a model over observations ('ensemble', 'analytic' or your own)."
        )


def sample_start_observations(buffer: Any, n: int, generator: th.Generator | None = None) -> np.ndarray:
    """``n`` observations drawn uniformly (with replacement) from a replay buffer's stored transitions.

    :param buffer: an SB3 ``ReplayBuffer`` (flat observations; every env's rows)
    :param n: how many
    :param generator: the draw's generator (its device is used); None: torch's global one
    :return: (n, obs_dim) float32, in the buffer's (original, not VecNormalize-d) scale
    """
    rows = buffer.buffer_size if buffer.full else buffer.pos
    total = rows * buffer.n_envs
    if total == 0:
        raise ValueError("the replay buffer holds no transitions yet")
    device = generator.device if generator is not None else th.device("cpu")
    flat = th.randint(0, total, (n,), generator=generator, device=device).cpu().numpy()
    return np.asarray(buffer.observations[flat // buffer.n_envs, flat % buffer.n_envs], dtype=np.float32).reshape(n, -1)


def rollout_generator(seed: int | None, device: th.device | str = "cpu") -> th.Generator:
    """The branched rollouts' own generator on ``device``: the stream ``MODEL_ROLLOUTS`` of ``seed``.

    :param seed: the algorithm's seed (None: fresh entropy from the operating system)
    :param device: the device of the rollouts' tensors
    """
    return stream_generator(seed, MODEL_ROLLOUTS, device)


class ModelRolloutRunner:
    """Runs one agent's branched rollouts on their schedule (the front end owns one, saved with the agent).

    :param settings: the rollout settings
    :param generator: the rollouts' own generator (start states, the actor's samples, the model's noise); None:
        torch's global one
    """

    def __init__(self, settings: BranchedRollouts, generator: th.Generator | None = None) -> None:
        self.settings = settings
        self.generator = generator
        self.last_round = -1  # num_timesteps of the last round, -1 before the first
        self.num_stored = 0  # model transitions stored so far

    def fits(self, settings: BranchedRollouts, device: th.device | str) -> bool:
        """Whether this runner has ``settings`` and draws on ``device`` (else the front end builds a new one)."""
        generator_device = self.generator.device.type if self.generator is not None else "cpu"
        return self.settings == settings and generator_device == th.device(device).type

    def active(self, num_timesteps: int, learning_starts: int, learned_model: bool, model_fitted: bool) -> bool:
        """Whether rollouts may run now.

        :param num_timesteps: env steps so far
        :param learning_starts: the agent's ``learning_starts``
        :param learned_model: the model is learned (it must have been fitted)
        :param model_fitted: the learned model has been fitted at least once
        """
        return started(num_timesteps, self.settings.rollouts_start, learning_starts, learned_model, model_fitted)

    def maybe_run(
        self,
        num_timesteps: int,
        buffer: Any,
        dynamics: Any,
        policy: Any,
        action_space: spaces.Box,
        obs_transform: ObsTransform | None = None,
        logger: Any = None,
    ) -> int:
        """Run the rounds that are due now (call only while :meth:`active`) and store them in ``buffer``.

        :param num_timesteps: env steps so far
        :param buffer: the agent's :class:`~sb3_demo.buffers.AugmentedReplayBuffer`
        :param dynamics: the model (over observations)
        :param policy: the agent's SAC/TD3 policy (its actor is the rollout policy)
        :param action_space: the env's Box action space (the model's action units)
        :param obs_transform: maps the model's (original) observations to the policy's input (VecNormalize)
        :param logger: an SB3 logger: ``rollouts/`` keys are recorded (None: nothing)
        :return: transitions stored
        """
        rounds = self.settings.rounds_due(num_timesteps, self.last_round)
        if rounds == 0:
            return 0
        first = self.last_round < 0
        self.last_round = num_timesteps if first else self.last_round + rounds * self.settings.rollout_freq
        if buffer.size() == 0:
            return 0
        start = time.perf_counter()
        length = self.settings.length_at(num_timesteps)
        device = self.generator.device if self.generator is not None else th.device("cpu")
        obs = sample_start_observations(buffer, rounds * self.settings.num_rollouts, self.generator)
        low = th.as_tensor(np.asarray(action_space.low, dtype=np.float32), device=device)
        high = th.as_tensor(np.asarray(action_space.high, dtype=np.float32), device=device)
        act = policy_prior(policy, action_space, obs_transform, self.settings.deterministic, self.generator)
        transitions = model_rollout(
            dynamics,
            th.as_tensor(obs, device=device),
            lambda h, observations: act(observations),
            length,
            lambda a: low + (a + 1.0) * 0.5 * (high - low),
            self.generator,
        )
        stored = buffer.add_imagined(*transitions)
        self.num_stored += stored
        if logger is not None:
            logger.record("rollouts/length", length)
            logger.record("rollouts/stored", stored)
            logger.record("rollouts/total_stored", self.num_stored)
            rewards = transitions[3][np.isfinite(transitions[3])]
            if rewards.size > 0:
                logger.record("rollouts/mean_model_reward", float(rewards.mean()))
            logger.record("rollouts/terminated", int(transitions[4].sum()))
            logger.record("rollouts/model_data_size", buffer.imagined_size())
            logger.record("rollouts/time_s", time.perf_counter() - start)
        return stored

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.generator is not None:
            state["generator"] = (str(self.generator.device), self.generator.get_state())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop("generator")
        self.__dict__.update(state)
        self.generator = None
        if saved is not None:
            device, generator_state = saved
            self.generator = th.Generator(device=device)
            self.generator.set_state(generator_state)
