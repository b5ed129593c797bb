"""Planning off the critical path: plan step ``t + 1`` while step ``t``'s action executes.

:class:`PlanAheadController` turns the observation-to-action latency into a lookup. When it returns the
action of step ``t`` it hands the observation and that action to a worker thread, which predicts the next
observation with the planner's model (its mean prediction) and plans from the prediction, by the deadline
of step ``t + 1`` at the latest (a planner stops after its iterations, so the plan is normally ready before
the next observation arrives). At step ``t + 1`` the controller checks the plan against the observation
that arrived:

- the plan is used when it is ready by the step's deadline, completed at least one iteration, and the
  observation agrees with the prediction: ``|observation - prediction| <= tolerance * scale + atol`` in
  every dimension, with ``scale`` the root mean square of the past prediction residuals (the model's usual
  one-step error; a plan from the observation itself already relies on predictions that good) or a fixed
  ``state_scale``. Until ``warmup`` residuals are known no plan made ahead could be checked: the worker
  then only predicts (collecting the residuals), and each step is planned on the spot as below;
- otherwise the plan is not acted on, and the reason is counted (``stale_plans``: the observation
  contradicted the prediction; ``late_plans``: the plan was not ready by the
  deadline or completed no iteration). The step falls back to the actor's action for the observation, or,
  with ``on_stale="replan"``, a stale plan is replaced by a plan from the observation under the step's
  deadline (warm-started from the stale one).

Steps with no plan made ahead (the first step of an episode, after :meth:`reset`) are planned on the spot
under the deadline, as :class:`~sb3_demo.realtime.RealTimeController` does. Everything the action of step
``t`` depends on was known at step ``t``: the observations and actions up to ``t - 1`` (the prediction, the
plan and the residuals before ``t``) and the observation of ``t`` (the check, and the fallback).

The planner is only used by one thread at a time: the worker plans, and the controller's own synchronous
plans and :meth:`reset` first wait for the worker to be idle. The one exception is the actor's action for
a late plan, computed while the worker may still be planning: a stochastic actor that shares the
planner's generator then draws in an order that depends on timing. Call :meth:`wait_idle` before anything that
changes what the worker reads (a model fit, gradient steps on the actor or critic), or run those in the
same thread between steps, as SB3's off-policy algorithms do after a rollout.
"""

from __future__ import annotations

import inspect
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th

from sb3_demo.checks import check_int
from sb3_demo.planner.dmd_mpc import DMDMPCPlanner, PlanningDeadlineExceeded, PlanResult
from sb3_demo.realtime.controller import DeadlineGuard, RealTimeController

STALE_POLICIES = ("actor", "replan")
# a worker idle this long exits (a new one starts with the next plan), so that no thread outlives its use
WORKER_IDLE_EXIT = 1.0  # s


@dataclass
class _Job:
    """One plan made ahead: from ``observation`` and ``action`` of step ``t``, for step ``t + 1``."""

    observation: th.Tensor  # (B, S)
    action: th.Tensor  # (B, A) environment units
    deadline: float  # the worker plans until then at the latest (the deadline of step t + 1)
    deterministic: bool  # the planner's ``deterministic`` for this plan (the caller's, at step t)
    residual: th.Tensor | None = None  # (B, S) observation - prediction of step t, for the check's scale
    done: threading.Event = field(default_factory=threading.Event)
    predicted: th.Tensor | None = None  # (B, S) the model's prediction of the next observation
    result: PlanResult | None = None  # None: cancelled, or no plan fitted the deadline
    error: Exception | None = None  # raised by the model or the planner, re-raised in the control loop
    warming_up: bool = False  # only predicted: the check's scale is not known yet
    cancelled: bool = False  # the control loop no longer wants this plan
    predicted_ready: threading.Event = field(default_factory=threading.Event)  # ``predicted`` is set (or failed)


class _ResidualScale:
    """Root mean square of the prediction residuals per dimension: the mean over the first ``memory``
    residuals, then an exponential moving average with that memory (the model changes as it is fitted)."""

    def __init__(self, memory: int = 200) -> None:
        self.memory = memory
        self.count = 0
        self.mean_square: th.Tensor | None = None

    def update(self, residual: th.Tensor) -> None:
        for row in residual:
            self.count += 1
            square = row.square()
            if self.mean_square is None:
                self.mean_square = square
            else:
                self.mean_square = th.lerp(self.mean_square, square, max(1.0 / self.count, 1.0 / self.memory))

    def rms(self) -> th.Tensor | None:
        return None if self.mean_square is None else self.mean_square.sqrt()


class PlanAheadController(RealTimeController):
    """Plan the next step in a worker thread while the current action executes; acting is a lookup.

    Takes :class:`RealTimeController`'s arguments (the deadline of a step is ``budget`` after its start,
    the observation's arrival) and:

    :param tolerance: accepted residual ``|observation - prediction|`` in units of ``scale``, > 0
    :param state_scale: (S,) or scalar fixed scale of each observation dimension; None: the root mean
        square of the past prediction residuals
    :param atol: accepted residual on top of ``tolerance * scale``, >= 0 (rounding, dimensions that are
        predicted exactly)
    :param warmup: residuals needed before a plan made ahead can be checked (with ``state_scale=None``), >= 1
    :param on_stale: a stale plan gives way to the actor's action (``"actor"``) or to a plan from the
        observation under the step's deadline (``"replan"``)
    :param switch_interval: the interpreter's thread switch interval while the controller is in use
        (seconds; Python's default of 5 ms would let the worker hold the interpreter that long while the
        control loop waits for it); None leaves it unchanged
    """

    def __init__(
        self,
        planner: DMDMPCPlanner,
        control_period: float,
        *,
        tolerance: float = 4.0,
        state_scale: float | Any = None,
        atol: float = 1e-4,
        warmup: int = 10,
        on_stale: str = "actor",
        switch_interval: float | None = 2e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(planner, control_period, **kwargs)
        if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
        if not (isinstance(atol, int | float) and math.isfinite(atol) and atol >= 0):
            raise ValueError(f"atol must be a finite number >= 0, got {atol!r}")
        check_int("warmup", warmup, 1)
        if on_stale not in STALE_POLICIES:
            raise ValueError(f"on_stale must be one of {list(STALE_POLICIES)}, got {on_stale!r}")
        if switch_interval is not None and not (math.isfinite(switch_interval) and switch_interval > 0):
            raise ValueError(f"switch_interval must be a number of seconds > 0 or None, got {switch_interval!r}")
        self.tolerance = float(tolerance)
        self.atol = float(atol)
        self.warmup = warmup
        self.on_stale = on_stale
        self.state_scale: th.Tensor | None = None
        self._bound: th.Tensor | None = None  # largest accepted residual per dimension (None: no check yet)
        if state_scale is not None:
            scale = th.as_tensor(state_scale, dtype=planner.dtype, device=planner.device)
            if not bool((th.isfinite(scale) & (scale > 0)).all()):
                raise ValueError(f"state_scale must be finite and > 0, got {scale.tolist()}")
            self.state_scale = scale
            self._bound = self.tolerance * scale + self.atol
        self._residuals = _ResidualScale()
        self.switch_interval = switch_interval
        self._saved_switch_interval: float | None = None
        self._pending: _Job | None = None  # the plan made ahead for the next step
        self._queued: _Job | None = None  # waiting for the worker
        self._running: _Job | None = None  # being planned by the worker
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closing = False  # set by close(): the idle worker exits at once
        self._predict_kwargs = _deterministic_kwargs(planner.dynamics)

    # ------------------------------------------------------------------ the control step

    def act(self, states: th.Tensor | np.ndarray, step_start: float | None = None) -> PlanResult:
        """The action of one control step: the plan made ahead when it holds, else the actor's (or a plan
        made now, see ``on_stale``; with no plan made ahead, a plan made now); then the next step's plan is
        started.

        :param states: (B, S) or (S,) the observations of this step
        :param step_start: ``time.perf_counter()`` of the observation's arrival; default: now
        :return: the step's :class:`PlanResult` (``fallback`` True where the actor's action is used)
        """
        start = time.perf_counter()
        if step_start is None:
            step_start = start
        self._enter()
        x = self.as_states(states)
        deadline = self.deadline_for(step_start)
        job, self._pending = self._pending, None
        residual = None
        if job is None:  # nothing planned ahead: plan from the observation itself, under the deadline
            self.wait_idle()
            result = self.plan_until(x, deadline, start)
            stale = late = 0
        else:
            result, residual, stale, late = self._look_up(job, x, deadline, start)
        self._record(result, step_start, start, deadline, stale, late)
        # the next step's deadline: a plan that started late (after a replan) may still finish in time
        next_deadline = self.deadline_for(step_start + self.control_period)
        self._pending = self._submit(x, result.action, next_deadline, residual)
        return result

    def _look_up(
        self, job: _Job, x: th.Tensor, deadline: float, start: float
    ) -> tuple[PlanResult, th.Tensor | None, int, int]:
        """The plan made ahead, where it is ready, iterated and agrees with the observation; the actor's
        action (or a plan made now) elsewhere. The prediction is checked as soon as it is known: a plan
        that the observation contradicts everywhere is cut short, not waited for.

        :return: the step's result, the residuals of the rows whose prediction was made (None: none), and
            the environments whose plan was stale / late
        """
        b = x.shape[0]
        job.predicted_ready.wait(timeout=max(0.0, deadline - time.perf_counter()))
        if job.error is not None:
            raise job.error
        predicted = job.predicted
        if predicted is None or predicted.shape != x.shape:  # not even predicted by the deadline
            self._cut_short(job, deadline, wait=False)
            return self.fallback_result(x, start), None, 0, b
        residual = x - predicted
        if job.warming_up:
            self.wait_idle()
            return self.plan_until(x, deadline, start), residual, 0, 0
        assert self._bound is not None  # known whenever the worker planned
        stale_rows = (residual.abs() > self._bound).any(dim=1)
        if bool(stale_rows.all()):
            if self.on_stale == "replan" and self._cut_short(job, deadline, wait=True):
                return self.plan_until(x, deadline, start), residual, b, 0
            self._cut_short(job, deadline, wait=False)
            return self.fallback_result(x, start), residual, b, 0
        ready = job.done.wait(timeout=max(0.0, deadline - time.perf_counter()))
        if job.error is not None:
            raise job.error
        plan = job.result
        if not ready or plan is None or plan.iterations == 0:
            return self.fallback_result(x, start), residual, 0, b
        late_rows = plan.fallback
        stale_rows &= ~late_rows
        stale, late = int(stale_rows.sum()), int(late_rows.sum())
        if stale + late == 0:
            return replace_elapsed(plan, time.perf_counter() - start), residual, 0, 0
        if stale and self.on_stale == "replan":
            self.planner.ensure_batch(b).mean.copy_(plan.mean)  # warm start: the stale plan, for this step
            return self.plan_until(x, deadline, start), residual, stale, late
        if stale + late == b:
            return self.fallback_result(x, start), residual, stale, late
        use_actor = stale_rows | late_rows
        fallback = self.fallback_result(x, start)
        result = PlanResult(
            action=th.where(use_actor[:, None], fallback.action, plan.action),
            normalized_action=th.where(use_actor[:, None], fallback.normalized_action, plan.normalized_action),
            mean=plan.mean,
            expected_return=th.where(use_actor, math.nan, plan.expected_return),
            ess=th.where(use_actor, 0.0, plan.ess),
            iterations=plan.iterations,
            fallback=use_actor,
            all_invalid=plan.all_invalid & ~use_actor,
            elapsed=time.perf_counter() - start,
            deadline_hit=plan.deadline_hit,
        )
        return result, residual, stale, late

    def _cut_short(self, job: _Job, deadline: float, wait: bool) -> bool:
        """Stop the worker's plan for ``job`` at its next guarded model call (or before it starts).

        :param wait: wait (until ``deadline`` at most) for the worker to let go of the planner
        :return: whether the worker has let go of the planner
        """
        with self._condition:
            job.cancelled = True
            if self._running is job:
                self.set_guard_deadline(-math.inf)
        if not wait:
            return job.done.is_set()
        return job.done.wait(timeout=max(0.0, deadline - time.perf_counter()))

    def _record(
        self, result: PlanResult, step_start: float, start: float, deadline: float, stale: int, late: int
    ) -> None:
        finished = time.perf_counter()
        overrun = max(0.0, finished - deadline)
        planned = bool((~result.fallback).any())
        self.stats.record(
            finished - step_start,
            deadline_missed=overrun > 0,
            overrun=overrun,
            period_overrun=finished > step_start + self.control_period,
            fallbacks=int(result.fallback.sum().item()),
            iterations=result.iterations if planned else 0,
            start_delay=start - step_start,
            stale_plans=stale,
            late_plans=late,
        )

    # ------------------------------------------------------------------ the worker

    def _submit(self, observation: th.Tensor, action: th.Tensor, deadline: float, residual: th.Tensor | None) -> _Job:
        """Queue the plan for the next step (replacing a queued one that the worker has not started)."""
        job = _Job(
            observation=observation,
            action=action.detach().clone(),
            deadline=deadline,
            deterministic=self.deterministic,
            residual=residual,
        )
        with self._condition:
            if self._queued is not None:  # never started: its result stays None
                self._queued.cancelled = True
                self._queued.predicted_ready.set()
                self._queued.done.set()
            self._queued = job
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="plan-ahead", daemon=True)
                self._worker.start()
            self._condition.notify_all()
        return job

    def _work(self) -> None:
        while True:
            with self._condition:
                if self._queued is None and not self._closing:
                    self._condition.wait(timeout=WORKER_IDLE_EXIT)
                if self._queued is None:
                    self._worker = None
                    self._condition.notify_all()
                    return
                job, self._queued = self._queued, None
                self._running = job
            try:
                self._plan_ahead(job)
            except Exception as exc:  # surfaces at the step that looks the plan up
                job.error = exc
            finally:
                with self._condition:
                    self._running = None
                    job.done.set()
                    self._condition.notify_all()

    def _plan_ahead(self, job: _Job) -> None:
        """Predict the next observation, then plan from it until ``job.deadline`` (unless cut short)."""
        plan = False
        try:
            with th.no_grad():
                predicted, _, _ = self._model(job.observation, job.action, **self._predict_kwargs)
            job.predicted = predicted.to(dtype=self.planner.dtype)
            if job.residual is not None and self.state_scale is None:
                self._learn_scale(job.residual)
            with self._condition:  # a cut after this point finds the guards armed with the job's deadline
                job.warming_up = self._bound is None
                plan = not (job.warming_up or job.cancelled)
                if plan:
                    self.set_guard_deadline(job.deadline)
        finally:
            job.predicted_ready.set()
        if not plan:
            return
        try:
            job.result = self.planner.plan(job.predicted, deterministic=job.deterministic, deadline=job.deadline)
        except PlanningDeadlineExceeded:
            job.result = None
        finally:
            with self._condition:
                self.set_guard_deadline(None)

    @property
    def _model(self) -> Any:
        """The planner's model without the deadline guard (the prediction is part of every plan)."""
        dynamics = self.planner.dynamics
        return dynamics.fn if isinstance(dynamics, DeadlineGuard) else dynamics

    def _learn_scale(self, residual: th.Tensor) -> None:
        """The check's bound from the residuals so far (these are known before the next step); a residual
        enters at most at the bound, so that one surprise does not widen the check for long."""
        bound = self._bound
        self._residuals.update(residual if bound is None else residual.abs().minimum(bound))
        rms = self._residuals.rms()
        if rms is not None and self._residuals.count >= self.warmup:
            self._bound = self.tolerance * rms + self.atol

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the worker has no plan running or queued (the plan made ahead stays available).

        :return: True when idle, False on timeout
        """
        with self._condition:
            return self._condition.wait_for(lambda: self._running is None and self._queued is None, timeout)

    def _enter(self) -> None:
        """Shorten the interpreter's thread switch interval while the controller is in use."""
        if self.switch_interval is not None and self._saved_switch_interval is None:
            self._saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval)

    def close(self) -> None:
        """Drop the plan made ahead, stop the worker thread, restore the thread switch interval; the next
        step starts a new worker.

        The worker is joined rather than left idle: a daemon thread still alive when the interpreter
        exits can abort it."""
        self._cancel()
        with self._condition:
            worker, self._closing = self._worker, True
            self._condition.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        with self._condition:
            self._closing = False
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
            self._saved_switch_interval = None

    def _cancel(self) -> None:
        """Drop the plan made ahead and the queued one, cut the running one short, wait for the worker."""
        with self._condition:
            if self._queued is not None:
                self._queued.cancelled = True
                self._queued.predicted_ready.set()
                self._queued.done.set()
                self._queued = None
            if self._running is not None:
                self._running.cancelled = True
                self.set_guard_deadline(-math.inf)
        self._pending = None
        self.wait_idle()

    def reset(self, indices: Any = None) -> None:
        """Forget the plans of some environments (episode boundaries): the plan made ahead crossed the
        boundary, so it is dropped, and the next step plans on the spot."""
        self._cancel()
        self.planner.reset(indices)

    def __repr__(self) -> str:
        return (
            f"PlanAheadController(period={self.control_period * 1e3:.2f} ms, "
            f"budget={self.budget * 1e3:.2f} ms, tolerance={self.tolerance}, {self.planner!r})"
        )


def replace_elapsed(result: PlanResult, elapsed: float) -> PlanResult:
    """``result`` with ``elapsed`` replaced (the time of the lookup, not of the plan made ahead)."""
    return PlanResult(**{**result.__dict__, "elapsed": elapsed})


def _deterministic_kwargs(dynamics: Any) -> dict[str, Any]:
    """``{"deterministic": True}`` when the model takes it (its mean prediction), else nothing."""
    model = dynamics.fn if isinstance(dynamics, DeadlineGuard) else dynamics
    try:
        parameters = inspect.signature(model.forward if isinstance(model, th.nn.Module) else model).parameters
    except (TypeError, ValueError):
        return {}
    return {"deterministic": True} if "deterministic" in parameters else {}
