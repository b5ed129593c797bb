"""``predict`` as a function of its inputs: the planner's warm start travels in SB3's recurrent ``state``.

As sb3-contrib's ``RecurrentPPO`` carries its LSTM state, a planning ``predict(observation, state,
episode_start, deterministic)`` takes and returns the shifted plan (the planner's
:class:`~sb3_demo.planner.PlanState`) of every environment::

    state = (mean, std)  # two float numpy arrays of shape (n_envs, horizon, action_dim), normalised units

``state=None`` starts from a fresh plan and ``episode_start`` forgets the plans of new episodes, so
``evaluate_policy`` and ``EvalCallback`` (which pass both along) warm-start every step as training does.
With ``deterministic=True`` the planner's noise is drawn as if its generator were freshly seeded for the
call: the same (observation, state) gives the same action, in this process and after ``save``/``load``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

from sb3_demo.common.policy_planner import PlanStep, plan_step
from sb3_demo.common.seeding import deterministic_seed
from sb3_demo.planner import DMDMPCPlanner, PlanState

PredictState = tuple[np.ndarray, np.ndarray]


def start_plan(planner: DMDMPCPlanner, state: Any, episode_start: Any, batch: int) -> None:
    """Set ``planner``'s warm start from a predict ``state`` (None: a fresh plan), forgetting new episodes'.

    :param planner: the predict planner
    :param state: a :data:`PredictState` returned by an earlier predict, or None
    :param episode_start: (B,) bools (True: a new episode, whose plan starts fresh), or None
    :param batch: B, the number of observations
    :raises ValueError: a state that is not a finite (mean, std) pair of shape (B, horizon, action_dim)
    """
    planner.state = None
    warm = planner.ensure_batch(batch)
    if state is not None:
        if not (isinstance(state, tuple | list) and len(state) == 2):
            raise ValueError(
                "state must be None or the (mean, std) plan state returned by the previous predict, got "
                f"{type(state).__name__}"
            )
        shape = tuple(warm.mean.shape)
        for name, value, target in (("mean", state[0], warm.mean), ("std", state[1], warm.std)):
            given = th.as_tensor(np.asarray(value))
            if tuple(given.shape) != shape:
                raise ValueError(
                    f"state does not fit {batch} observation(s): the plan's {name} must have shape {shape} "
                    f"(envs, horizon, action_dim), got {tuple(given.shape)}"
                )
            if not bool(th.isfinite(given).all()):
                raise ValueError(f"state: the plan's {name} must be finite")
            target.copy_(given.to(device=target.device, dtype=target.dtype))
    if episode_start is not None:
        starts = np.asarray(episode_start, dtype=bool).reshape(-1)
        if starts.any():
            planner.reset(np.flatnonzero(starts))


def predict_state(warm: PlanState) -> PredictState:
    """A planner's warm start as a predict state (copies, on the CPU)."""
    return warm.mean.detach().cpu().numpy().copy(), warm.std.detach().cpu().numpy().copy()


def plan_predict(
    planner: DMDMPCPlanner,
    states: th.Tensor,
    state: Any,
    episode_start: Any,
    deterministic: bool,
    seed: int | None,
) -> tuple[PlanStep, PredictState]:
    """One planning ``predict``: warm start from ``state``, plan, return the step and the next state.

    :param planner: the predict planner (a stream of its own: nothing here moves a training stream)
    :param states: (B, S) planner states
    :param state: the previous predict's :data:`PredictState`, or None for a fresh plan
    :param episode_start: (B,) bools, or None
    :param deterministic: the plan's mean action, with the noise of every deterministic call drawn as if
        freshly seeded (:func:`~sb3_demo.common.seeding.deterministic_seed`); False: a stochastic action
        from the planner's stream
    :param seed: the algorithm's (or the layer's) seed
    """
    start_plan(planner, state, episode_start, int(states.shape[0]))
    step = plan_step(planner, states, deterministic, reseed=deterministic_seed(seed) if deterministic else None)
    assert planner.state is not None
    return step, predict_state(planner.state)
