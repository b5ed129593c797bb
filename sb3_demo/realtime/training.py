"""Training off the control loop, and storing the action that really ran.

On a robot every env step costs wall-clock time, so gradient steps must not stall the control period.
Two ways with SB3 off-policy algorithms:

- ``train_freq=(1, "episode")``: SB3 collects a whole episode, then trains (between episodes, while the
  robot resets); nothing to add.
- :class:`ThreadedTrainCallback`: gradient steps run in a background thread on a *learner* copy of the
  model that shares the replay buffer; the acting model gets the learner's parameters at the end of each
  rollout (or every step). The control loop only pays for a flag check and, on sync, a parameter copy.

RL Zoo's ``rl_zoo3.callbacks.ParallelTrainCallback`` does the same job, but (checked against rl-zoo3 /
SB3 2.9.2) it only supports SAC/TQC (a subclass such as DeMoSAC is re-created as plain SAC, so whatever
its own ``train`` adds is lost), deep-copies the whole replay buffer at every rollout end, logs from the
training thread into the shared logger, and fails at the end of a run that never reached
``learning_starts`` (``self.process`` is never set). :class:`ThreadedTrainCallback` avoids these.

:class:`ExecutedActionCallback` makes the replay buffer store ``info["executed_action"]`` (what the
safety layer or an MPC wrapper really sent) instead of the policy's proposal.

:class:`RealTimeRolloutCallback` keeps the control loop on time while SB3 collects: a real-time
scheduling priority and no garbage-collector pauses during rollouts, normal again for training.
"""

from __future__ import annotations

import copy
import gc
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_demo.checks import check_int
from sb3_demo.common.executed_action import store_executed_actions

SYNC_MODES = ("rollout", "step")
# replay-buffer methods serialised between the control loop (writers) and the training thread (sampler)
LOCKED_BUFFER_METHODS = ("add", "sample", "add_imagined", "extend")


def _locked(method: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


class ThreadedTrainCallback(BaseCallback):
    """Run an off-policy algorithm's gradient steps in a background thread.

    The algorithm's ``train`` is replaced, for the duration of ``learn``, by a request to the worker
    thread (the number of gradient steps SB3 asked for accumulates); the worker trains a learner copy
    of the model (same class, sharing the replay buffer, with ``add``/``sample`` made thread-safe) and
    publishes its policy, which the acting model loads on the main thread. At the end of ``learn``
    the callback waits for the requested steps to finish and loads everything the learner trained
    (policy, optimizers, entropy coefficient).

    :param sync: when the acting model loads new parameters: ``"rollout"`` (end of each rollout, e.g.
        each episode with ``train_freq=(1, "episode")``) or ``"step"`` (the first step after they are ready)
    :param chunk_size: gradient steps per worker call (parameters are published after each chunk)
    :param max_lag: if set, the control loop waits when more than this many requested gradient steps are
        still pending (keeps data collection from running arbitrarily far ahead of learning)
    :param acting_owned: saved attributes the acting model trains itself and the learner must never
        overwrite (DeMoSAC fits its dynamics model in the control loop)
    """

    def __init__(
        self,
        sync: str = "rollout",
        chunk_size: int = 64,
        max_lag: int | None = None,
        acting_owned: tuple[str, ...] = ("dynamics",),
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {list(SYNC_MODES)}, got {sync!r}")
        check_int("chunk_size", chunk_size, 1)
        check_int("max_lag", max_lag, 1, allow_none=True)
        self.sync = sync
        self.chunk_size = chunk_size
        self.max_lag = max_lag
        self.acting_owned = tuple(acting_owned)
        self.learner: OffPolicyAlgorithm | None = None
        self.gradient_steps_requested = 0
        self.gradient_steps_done = 0
        self.syncs = 0
        self._cv = threading.Condition()
        self._pending = 0
        self._batch_size = 0
        self._stop = False
        self._busy = False
        self._published: dict[str, Any] | None = None
        self._published_updates = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._original_train: Callable[..., Any] | None = None
        self._instance_train: Callable[..., Any] | None = None
        self._buffer_lock = threading.Lock()

    # ------------------------------------------------------------------ setup

    def _init_callback(self) -> None:
        model = self.model
        if not isinstance(model, OffPolicyAlgorithm):
            raise TypeError(f"ThreadedTrainCallback needs an off-policy algorithm, got {type(model).__name__}")
        buffer = model.replay_buffer
        if buffer is None:
            raise ValueError("the model has no replay buffer yet; call learn() (setup_model) first")
        for name in LOCKED_BUFFER_METHODS:
            method = getattr(buffer, name, None)
            if method is not None and not hasattr(method, "__wrapped__"):
                setattr(buffer, name, _locked(method, self._buffer_lock))
        # the learner: a deep copy sharing the replay buffer, without the env (which may hold a robot)
        memo: dict[int, Any] = {id(buffer): buffer}
        for name in ("env", "_vec_normalize_env", "_logger", "_custom_logger"):
            value = model.__dict__.get(name)
            if value is not None and not isinstance(value, bool):
                memo[id(value)] = None
        learner = copy.deepcopy(model, memo)
        learner.set_logger(Logger(folder=None, output_formats=[]))
        self.learner = learner
        self._original_train = model.train
        self._instance_train = model.__dict__.get("train")  # someone else's patch, restored at the end
        model.__dict__["train"] = self._request_train
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="sb3_demo-train", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ main thread

    def _request_train(self, gradient_steps: int, batch_size: int = 64) -> None:
        assert self.learner is not None
        self._raise_worker_error()
        with self._cv:
            self._pending += int(gradient_steps)
            self._batch_size = int(batch_size)
            self.gradient_steps_requested += int(gradient_steps)
            self.learner.num_timesteps = self.model.num_timesteps
            self.learner._current_progress_remaining = self.model._current_progress_remaining
            self._cv.notify_all()
            if self.max_lag is not None:
                while self._pending > self.max_lag and self._error is None:
                    self._cv.wait(timeout=1.0)

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("the training thread failed") from error

    def sync_parameters(self) -> bool:
        """Load the learner's latest published policy into the acting model (main thread).

        :return: whether new parameters were loaded
        """
        self._raise_worker_error()
        with self._cv:
            params, self._published = self._published, None
            updates = self._published_updates
        if params is None or self.learner is None:
            return False
        self.model.set_parameters(params, exact_match=False, device=self.model.device)
        self._sync_learner_attributes(updates)
        return True

    def _sync_learner_attributes(self, updates: int) -> None:
        self.model._n_updates = updates
        assert self.learner is not None
        for key, value in self.learner.logger.name_to_value.copy().items():
            self.logger.record(key, value)
        self.syncs += 1

    def _final_sync(self) -> None:
        """At the end of ``learn``: everything the learner trained (policy, optimizers, entropy coefficient),
        but not what the acting side owns (``acting_owned``, e.g. DeMoSAC's model fitted in the loop)."""
        self.sync_parameters()
        learner = self.learner
        if learner is None:
            return
        state_dicts, variables = learner._get_torch_save_params()
        names = [n for n in state_dicts if n.split(".")[0] not in self.acting_owned]
        params: dict[str, Any] = {n: sd for n, sd in learner.get_parameters().items() if n in names}
        self.model.set_parameters(copy.deepcopy(params), exact_match=False, device=self.model.device)
        for name in variables:
            if name.split(".")[0] in self.acting_owned:
                continue
            source, target = learner, self.model
            for part in name.split("."):
                source, target = getattr(source, part), getattr(target, part)
            target.data.copy_(source.data)  # type: ignore[attr-defined]
        self.model._n_updates = learner._n_updates

    def _on_step(self) -> bool:
        if self.sync == "step" and self._published is not None:
            self.sync_parameters()
        else:
            self._raise_worker_error()
        return True

    def _on_rollout_end(self) -> None:
        self.sync_parameters()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested gradient step is done.

        :return: False if ``timeout`` passed first
        """
        with self._cv:
            done = self._cv.wait_for(
                lambda: (self._pending == 0 and not self._busy) or self._error is not None, timeout
            )
        self._raise_worker_error()
        return done

    def _on_training_end(self) -> None:
        try:
            self.wait()
            self._final_sync()
        finally:
            with self._cv:
                self._stop = True
                self._cv.notify_all()
            if self._thread is not None:
                self._thread.join(timeout=10.0)
            if self._original_train is not None:
                if self._instance_train is None:
                    self.model.__dict__.pop("train", None)  # back to the class's method
                else:
                    self.model.__dict__["train"] = self._instance_train
                self._original_train = None

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        assert self.learner is not None
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending > 0 or self._stop)
                if self._stop and self._pending == 0:
                    return
                steps = min(self._pending, self.chunk_size)
                batch_size = self._batch_size
                self._busy = True
            try:
                self.learner.train(gradient_steps=steps, batch_size=batch_size)
                params = {"policy": copy.deepcopy(self.learner.policy.state_dict())}
            except BaseException as exc:
                with self._cv:
                    self._error = exc
                    self._busy = False
                    self._pending = 0
                    self._cv.notify_all()
                return
            with self._cv:
                self._pending -= steps
                self.gradient_steps_done += steps
                self._published = params
                self._published_updates = self.learner._n_updates
                self._busy = False
                self._cv.notify_all()


class ExecutedActionCallback(BaseCallback):
    """Store the action that really ran: overwrite SB3's ``buffer_actions`` with ``info["executed_action"]``
    (scaled to the policy's ``[-1, 1]``) before the transition reaches the replay buffer (see
    :func:`~sb3_demo.common.executed_action.store_executed_actions`).
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.replaced = 0

    def _on_step(self) -> bool:
        buffer_actions = self.locals.get("buffer_actions")
        infos = self.locals.get("infos")
        if isinstance(buffer_actions, np.ndarray) and infos is not None:
            self.replaced += store_executed_actions(buffer_actions, infos, self.model.policy)
        return True


class RealTimeRolloutCallback(BaseCallback):
    """Keep the control loop on time while SB3 collects experience.

    During each rollout (an episode with ``train_freq=(1, "episode")``) the collecting thread runs at
    ``SCHED_FIFO`` priority and Python's garbage collector is paused (a full collection of a large
    torch/SB3 heap takes tens of milliseconds: several control periods); before the rollout the garbage
    is collected, after it both are restored, so training between episodes runs at normal priority.

    :param rt_priority: ``SCHED_FIFO`` priority (1-99) of the collecting thread during rollouts, or None
        to leave the scheduling alone; needs the privilege (``PermissionError`` when the run starts)
    :param disable_gc: collect garbage before each rollout and pause the collector during it
    :param extra_pids: processes kept at ``rt_priority`` for the whole run (e.g. a robot's driver process)
    """

    def __init__(
        self,
        rt_priority: int | None = None,
        disable_gc: bool = True,
        extra_pids: tuple[int, ...] = (),
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        check_int("rt_priority", rt_priority, 1, high=99, allow_none=True)
        if rt_priority is None and extra_pids:
            raise ValueError("extra_pids needs an rt_priority")
        self.rt_priority = rt_priority
        self.disable_gc = disable_gc
        self.extra_pids = tuple(extra_pids)
        self._normal: tuple[int, Any] | None = None
        self._extra_normal: list[tuple[int, int, Any]] = []
        self._gc_was_enabled = gc.isenabled()

    def _init_callback(self) -> None:
        if self.rt_priority is None:
            return
        self._normal = (os.sched_getscheduler(0), os.sched_getparam(0))
        try:
            for pid in self.extra_pids:
                self._extra_normal.append((pid, os.sched_getscheduler(pid), os.sched_getparam(pid)))
                os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(self.rt_priority))
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))  # check the privilege
            os.sched_setscheduler(0, *self._normal)
        except PermissionError as exc:
            self._restore_extra()
            raise PermissionError(
                "RealTimeRolloutCallback(rt_priority=...) needs the privilege to use SCHED_FIFO "
                "(root or CAP_SYS_NICE); pass rt_priority=None to only pause the garbage collector"
            ) from exc

    def _restore_extra(self) -> None:
        for pid, policy, param in self._extra_normal:
            try:
                os.sched_setscheduler(pid, policy, param)
            except (ProcessLookupError, PermissionError):
                pass
        self._extra_normal = []

    def _on_rollout_start(self) -> None:
        if self.disable_gc:
            self._gc_was_enabled = gc.isenabled()
            gc.collect()
            gc.disable()
        if self.rt_priority is not None:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self._normal is not None:
            os.sched_setscheduler(0, *self._normal)
        if self.disable_gc and self._gc_was_enabled:
            gc.enable()

    def _on_training_end(self) -> None:
        self._on_rollout_end()
        self._restore_extra()
