"""Anytime DMD-MPC under a per-step deadline: the planning side of the real-time contract.

:class:`RealTimeController` gives the planner a deadline derived from the env's control period
(``budget_fraction`` of it, counted from the step's start, i.e. the moment the observation arrived),
lets it iterate until then (warm-started from the previous step's plan), and falls back to the actor's
action when not even one iteration fits. Every step is recorded in a :class:`LatencyStats`.

Contract: no model evaluation starts after the deadline, nor one predicted (from its past durations) to
end after it, so a step overruns its deadline by at most one model evaluation (one whose cost was not
known yet), plus the actor's forward pass for the fallback action. The planner itself stops iterating at
the deadline; the controller additionally guards the planner's model and terminal value
(:class:`DeadlineGuard`) so that evaluations the planner does outside its own deadline checks (the
actor's rollouts through the model before the first iteration) obey the deadline too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from sb3_demo.common.hardware import check_model_allowed, control_period_of
from sb3_demo.planner.dmd_mpc import DMDMPCPlanner, PlanningDeadlineExceeded, PlanResult
from sb3_demo.realtime.latency import LatencyStats


class DeadlineGuard:
    """Wrap a model (or value function) so that an evaluation that would end after ``deadline`` is not
    started: the call raises :class:`~sb3_demo.planner.dmd_mpc.PlanningDeadlineExceeded` instead.

    "Would end" is predicted from a moving average of the wrapped callable's past durations for the same
    batch size (``predictive``); an evaluation with no history yet is refused only once the deadline has
    passed. So at most one evaluation, one whose cost was not known yet, runs past the deadline.

    Other attributes (``observe``, ``can_terminate``, ...) are forwarded to the wrapped object.

    :param fn: the callable to guard
    :param predictive: also refuse calls predicted to end after the deadline
    """

    def __init__(self, fn: Callable[..., Any], predictive: bool = True) -> None:
        self.fn = fn
        self.predictive = predictive
        self.deadline: float | None = None
        self.calls = 0
        self.refused = 0
        self._durations: dict[int, float] = {}  # batch rows -> moving average of the call's duration

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rows = int(getattr(args[0], "shape", (0,))[0]) if args else 0
        start = time.perf_counter()
        if self.deadline is not None:
            expected = self._durations.get(rows, 0.0) if self.predictive else 0.0
            if start + expected > self.deadline:
                self.refused += 1
                raise PlanningDeadlineExceeded
        self.calls += 1
        out = self.fn(*args, **kwargs)
        duration = time.perf_counter() - start
        previous = self._durations.get(rows)
        self._durations[rows] = duration if previous is None else 0.8 * previous + 0.2 * duration
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "fn":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.fn, name)


class RealTimeController:
    """Plan each control step within a deadline derived from the control period.

    :param planner: the DMD-MPC planner (its ``prior`` is the actor used for fallbacks)
    :param control_period: seconds per control step
    :param budget_fraction: share of the period given to planning, counted from the step's start;
        the rest is left for the actor's fallback, the env round trip and timing jitter
    :param budget: seconds of planning per step (overrides ``budget_fraction``)
    :param deterministic: passed to :meth:`DMDMPCPlanner.plan`
    :param stats: where the steps are recorded (a new :class:`LatencyStats` by default)
    :param guard_model: guard the planner's model and terminal value with :class:`DeadlineGuard`
        (recommended; see the module docstring)
    :param step_start_fn: ``() -> time.perf_counter()`` of the current step's start (e.g. the arrival of
        the latest observation), used by :meth:`plan`; default: the time of the call
    """

    def __init__(
        self,
        planner: DMDMPCPlanner,
        control_period: float,
        budget_fraction: float = 0.75,
        budget: float | None = None,
        deterministic: bool = True,
        stats: LatencyStats | None = None,
        guard_model: bool = True,
        step_start_fn: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(planner, DMDMPCPlanner):
            raise TypeError(f"planner must be a DMDMPCPlanner, got {type(planner).__name__}")
        if not (isinstance(control_period, int | float) and math.isfinite(control_period) and control_period > 0):
            raise ValueError(f"control_period must be a finite number of seconds > 0, got {control_period!r}")
        if not (0.0 < budget_fraction <= 1.0):
            raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction}")
        if budget is not None and not (math.isfinite(budget) and 0.0 < budget):
            raise ValueError(f"budget must be a finite number of seconds > 0 or None, got {budget}")
        self.planner = planner
        self.control_period = float(control_period)
        self.budget = float(budget) if budget is not None else budget_fraction * self.control_period
        self.deterministic = deterministic
        self.step_start_fn = step_start_fn
        self.stats = stats if stats is not None else LatencyStats()
        self.guards: list[DeadlineGuard] = []  # the guarded model and terminal value
        if guard_model:
            if not isinstance(planner.dynamics, DeadlineGuard):
                planner.dynamics = DeadlineGuard(planner.dynamics)
            self.guards.append(planner.dynamics)
            if planner.terminal_value is not None:
                if not isinstance(planner.terminal_value, DeadlineGuard):
                    planner.terminal_value = DeadlineGuard(planner.terminal_value)
                self.guards.append(planner.terminal_value)

    @classmethod
    def for_env(cls, planner: DMDMPCPlanner, env: Any, **kwargs: Any) -> RealTimeController:
        """A controller for ``env``: the period comes from the env, and a hardware env's own simulator may
        not be the planner's model (:func:`~sb3_demo.realtime.check_model_allowed`)."""
        check_model_allowed(env, planner.dynamics)
        if planner.terminal_value is not None:
            check_model_allowed(env, planner.terminal_value)
        return cls(planner, control_period_of(env), **kwargs)

    def deadline_for(self, step_start: float) -> float:
        """Absolute ``time.perf_counter()`` planning deadline of a step that started at ``step_start``."""
        return step_start + self.budget

    def fallback_result(self, states: th.Tensor, start: float) -> PlanResult:
        """The actor's action (or the shifted plan's first action without an actor) when the planner gave up
        before its first iteration."""
        planner = self.planner
        b = states.shape[0]
        with th.no_grad():
            if planner.prior is not None:
                normalized = planner.prior_actions(states)
            elif planner.mean is not None and planner.mean.shape[0] == b:
                normalized = planner.mean[:, 0].clone()
            else:
                normalized = th.zeros(b, planner.action_dim, dtype=planner.dtype, device=planner.device)
        normalized = th.nan_to_num(normalized, nan=0.0).clamp(-1.0, 1.0)
        mean = planner.mean.clone() if planner.mean is not None and planner.mean.shape[0] == b else None
        return PlanResult(
            action=planner.unscale_action(normalized),
            normalized_action=normalized,
            mean=mean if mean is not None else normalized[:, None].expand(b, planner.horizon, -1).clone(),
            expected_return=th.full((b,), math.nan, dtype=planner.dtype, device=planner.device),
            ess=th.zeros(b, dtype=planner.dtype, device=planner.device),
            iterations=0,
            fallback=th.ones(b, dtype=th.bool, device=planner.device),
            all_invalid=th.zeros(b, dtype=th.bool, device=planner.device),
            elapsed=time.perf_counter() - start,
            deadline_hit=True,
        )

    def as_states(self, states: th.Tensor | np.ndarray) -> th.Tensor:
        """(B, S) or (S,) observations -> a (B, S) tensor of the planner's dtype and device."""
        x = th.as_tensor(np.asarray(states) if not isinstance(states, th.Tensor) else states)
        if x.dim() == 1:
            x = x[None]
        return x.to(device=self.planner.device, dtype=self.planner.dtype)

    def set_guard_deadline(self, deadline: float | None) -> None:
        """Refuse the guarded model's and value's evaluations that would end after ``deadline`` (None: none)."""
        for guard in self.guards:
            guard.deadline = deadline

    def plan_until(self, states: th.Tensor, deadline: float, start: float) -> PlanResult:
        """The planner's plan for ``states`` (B, S) under ``deadline``, or :meth:`fallback_result` when the
        guard stopped a model call outside the planner's own deadline checks."""
        self.set_guard_deadline(deadline)
        try:
            return self.planner.plan(states, deterministic=self.deterministic, deadline=deadline)
        except PlanningDeadlineExceeded:
            return self.fallback_result(states, start)
        finally:
            self.set_guard_deadline(None)

    def act(self, states: th.Tensor | np.ndarray, step_start: float | None = None) -> PlanResult:
        """Plan one control step.

        :param states: (B, S) or (S,) current states (observations)
        :param step_start: ``time.perf_counter()`` when the step started (the observation's arrival);
            default: now
        :return: the planner's :class:`PlanResult` (``fallback`` True where the actor's action is used)
        """
        start = time.perf_counter()
        if step_start is None:
            step_start = start
        x = self.as_states(states)
        deadline = self.deadline_for(step_start)
        result = self.plan_until(x, deadline, start)
        finished = time.perf_counter()
        overrun = max(0.0, finished - deadline)
        self.stats.record(
            finished - step_start,
            deadline_missed=overrun > 0,
            overrun=overrun,
            period_overrun=finished > step_start + self.control_period,
            fallbacks=int(result.fallback.sum().item()),
            iterations=result.iterations,
            start_delay=start - step_start,
        )
        return result

    def plan(
        self,
        states: th.Tensor,
        deterministic: bool | None = None,
        time_budget: float | None = None,
        deadline: float | None = None,
    ) -> PlanResult:
        """Drop-in for :meth:`DMDMPCPlanner.plan`, so that code holding a planner (e.g. DeMoSAC's
        ``self.planner``) can be given the controller instead: the step starts now (or at
        ``step_start_fn()`` when set), ``time_budget``/``deadline`` are ignored in favour of the
        controller's budget, and every call is recorded in :attr:`stats`.

        :param states: (B, S)
        :param deterministic: overrides the controller's ``deterministic`` for this call
        """
        if deterministic is not None and deterministic != self.deterministic:
            saved, self.deterministic = self.deterministic, deterministic
            try:
                return self.act(states, self.step_start_fn() if self.step_start_fn else None)
            finally:
                self.deterministic = saved
        return self.act(states, self.step_start_fn() if self.step_start_fn else None)

    def __getattr__(self, name: str) -> Any:
        # everything else (reset, mean, horizon, unscale_action, ...) is the planner's
        if name == "planner":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.planner, name)

    def reset(self, indices: Any = None) -> None:
        """Forget the plans of some environments (episode boundaries)."""
        self.planner.reset(indices)

    def __repr__(self) -> str:
        return (
            f"RealTimeController(period={self.control_period * 1e3:.2f} ms, "
            f"budget={self.budget * 1e3:.2f} ms, {self.planner!r})"
        )
