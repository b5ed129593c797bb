"""The record of the action that really ran: one info key, and one function that writes it into the
actions SB3 is about to store in the replay buffer.

Whatever replaces or limits the agent's action (the DeMo env wrappers' planner, the real-time safety
layer, a hardware env) reports the action that ran as ``info[EXECUTED_ACTION_KEY]`` in env units. SB3's
off-policy ``collect_rollouts`` calls its callbacks after ``env.step`` and before ``_store_transition``,
with ``buffer_actions`` among its locals; :func:`store_executed_actions` overwrites its rows in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EXECUTED_ACTION_KEY = "executed_action"  # info key: the action that ran, in env units
GUIDED_KEY = "demo_guided"  # info key of the DeMo env wrappers: True where the planner's action ran


def store_executed_actions(
    buffer_actions: np.ndarray, infos: Sequence[dict[str, Any]], policy: Any, guided_only: bool = False
) -> int:
    """Overwrite, in place, the rows of SB3's ``buffer_actions`` with ``info[EXECUTED_ACTION_KEY]`` scaled
    to the policy's ``[-1, 1]``.

    :param buffer_actions: (n_envs, A) the actions SB3 will store
    :param infos: the step's infos, one per env
    :param policy: the agent's policy (``scale_action``)
    :param guided_only: only the rows whose ``info[GUIDED_KEY]`` is true (elsewhere the agent's own action
        ran, and SB3's scaled action is exact)
    :return: the number of rows overwritten
    """
    replaced = 0
    for i, info in enumerate(infos):
        executed = info.get(EXECUTED_ACTION_KEY)
        if executed is None or (guided_only and not info.get(GUIDED_KEY)):
            continue
        buffer_actions[i] = policy.scale_action(
            np.asarray(executed, dtype=np.float32).reshape(buffer_actions.shape[1:])
        )
        replaced += 1
    return replaced
