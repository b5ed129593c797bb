"""Dynamic Mirror Descent MPC (Wagener et al., RSS 2019), batched over environments, in pure torch.

Notation used in the shapes below:

- ``B``: number of environments planned for at once,
- ``M``: sequences per iteration (``num_samples`` Gaussian samples + ``num_prior_samples`` prior rollouts),
- ``P``: particles per sequence (several rollouts of one sequence through a stochastic model),
- ``H``: horizon, ``A``: action dimension, ``S``: state dimension.

The planner keeps, for every environment, a diagonal Gaussian over an ``(H, A)`` action sequence in the
normalised action space ``[-1, 1]`` (the space SB3 policies act in). Each control step it

1. shifts the previous plan one step forward (``shift``),
2. takes ``num_iterations`` mirror-descent steps on ``-log E[u(R(U))]``: with KL as the Bregman
   divergence this is a convex combination in the Gaussian's expectation parameters::

       mean <- (1 - gamma_mean) * mean + gamma_mean * sum_i w_i U_i
       var  <- (1 - gamma_std)  * var  + gamma_std  * sum_i w_i (U_i - mean_new)^2

   with ``w_i = u(R_i) / sum_j u(R_j)`` and the utility ``u`` either ``exp(R / temperature)``
   (MPPI when ``gamma_mean = 1``) or the elite indicator (CEM when both gammas are 1),
3. returns the first action of the plan.

The return of a sequence from state ``s`` is ``R = sum_{h<H} discount^h r_h + discount^H V(s_H)`` with
``V`` an optional terminal value (the SB3 critic), rewards stop accumulating once a rollout terminates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch as th

from sb3_demo.dynamics.base import DynamicsModel, as_dynamics

ValueFn = Callable[[th.Tensor], th.Tensor]
PriorFn = Callable[[th.Tensor], th.Tensor]

UTILITIES = ("exp", "elite")
SHIFTS = ("repeat_last", "zero", "prior")
STD_MODES = ("reset", "shift")
STOCHASTIC_MODES = ("sample", "noise")


class PlanningDeadlineExceeded(RuntimeError):
    """Raised internally when an iteration would finish after the deadline."""


@dataclass
class PlanResult:
    """What :meth:`DMDMPCPlanner.plan` returns.

    :param action: (B, A) first action, in the environment's action units
    :param normalized_action: (B, A) the same action in ``[-1, 1]``
    :param mean: (B, H, A) the plan's mean sequence after the update (normalised units)
    :param expected_return: (B,) weighted mean return of the last iteration's sequences
        (``nan`` where no iteration ran or every sequence was invalid)
    :param ess: (B,) effective sample size ``1 / sum w_i^2`` of the last iteration
    :param iterations: iterations completed (all environments run the same number)
    :param fallback: (B,) bool, True where the action did not come from a plan: no iteration fitted the
        deadline, or every sequence's return was NaN/inf
    :param all_invalid: (B,) bool, True where every sequence's return was NaN/inf
    :param elapsed: seconds spent in :meth:`plan`
    :param deadline_hit: True if iterating stopped because of the time budget
    """

    action: th.Tensor
    normalized_action: th.Tensor
    mean: th.Tensor
    expected_return: th.Tensor
    ess: th.Tensor
    iterations: int
    fallback: th.Tensor
    all_invalid: th.Tensor
    elapsed: float
    deadline_hit: bool = False


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok or not math.isfinite(value):
        left = "(" if low_open else "["
        raise ValueError(f"{name} must be in {left}{low}, {high}], got {value}")


def _check_int(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


class DMDMPCPlanner:
    """Dynamic Mirror Descent MPC over a batched dynamics model.

    :param dynamics: ``dynamics(states (N, S), actions (N, A)) -> (next_states (N, S), rewards (N,),
        terminated (N,))`` with actions in environment units (see :class:`~sb3_demo.dynamics.DynamicsModel`).
        If it has ``observe(states) -> observations``, the prior and terminal value see observations.
    :param action_dim: A
    :param horizon: H >= 1
    :param num_samples: Gaussian sequences per iteration, >= 1
    :param num_iterations: mirror-descent steps per control step, >= 1
    :param num_particles: rollouts per sequence (their returns are averaged), >= 1
    :param utility: ``"exp"`` (exponential, MPPI-like) or ``"elite"`` (elite indicator, CEM-like)
    :param temperature: exp utility ``u = exp(R / temperature)``, > 0
    :param normalize_returns: standardise returns per environment before the exp utility, so that
        ``temperature`` is scale-free
    :param elite_fraction: fraction of sequences kept by the elite utility, in (0, 1]
    :param gamma_mean: mirror-descent step size of the mean, in (0, 1]
    :param gamma_std: mirror-descent step size of the variance, in (0, 1]
    :param init_std: std of a fresh plan in normalised units (0.5 = half the action range... of [-1, 1]), > 0
    :param min_std: floor on the std after an update, >= 0
    :param discount: per-step discount of model rewards, in (0, 1]
    :param terminal_value: ``V(obs (N, obs_dim)) -> (N,)`` added with weight ``discount^H``
    :param prior: ``pi(obs (N, obs_dim)) -> actions (N, A)`` in ``[-1, 1]`` (the SB3 actor); used for
        proposals, ``shift="prior"`` and fallbacks
    :param prior_fraction: prior rollouts added per iteration, as a fraction of ``num_samples`` (rounded up)
    :param shift: how the plan moves between control steps: ``"repeat_last"``, ``"zero"`` (new last
        action 0) or ``"prior"`` (re-seed the mean from the prior's rollout)
    :param std_mode: ``"reset"`` the std to ``init_std`` every step, or ``"shift"`` it like the mean and
        grow it by ``std_growth`` (capped at ``init_std``)
    :param std_growth: multiplicative growth of the shifted std, >= 1
    :param stochastic_mode: ``plan(deterministic=False)`` returns the first action of a sequence drawn by
        weight (``"sample"``) or the mean plus Gaussian noise of the plan's std (``"noise"``)
    :param action_low: (A,) lower bounds in environment units (default -1)
    :param action_high: (A,) upper bounds in environment units (default 1)
    :param time_budget: seconds allowed per :meth:`plan` call (anytime planning), None for no limit
    :param seed: seed of the planner's own random generator
    :param device: torch device of the planner's state
    :param dtype: floating dtype of the planner's state
    """

    def __init__(
        self,
        dynamics: DynamicsModel | Callable[..., tuple[th.Tensor, ...]],
        action_dim: int,
        horizon: int = 3,
        num_samples: int = 100,
        num_iterations: int = 5,
        num_particles: int = 1,
        utility: Literal["exp", "elite"] = "exp",
        temperature: float = 1.0,
        normalize_returns: bool = False,
        elite_fraction: float = 0.1,
        gamma_mean: float = 1.0,
        gamma_std: float = 0.9,
        init_std: float = 0.5,
        min_std: float = 0.0,
        discount: float = 1.0,
        terminal_value: ValueFn | None = None,
        prior: PriorFn | None = None,
        prior_fraction: float = 0.05,
        shift: Literal["repeat_last", "zero", "prior"] = "repeat_last",
        std_mode: Literal["reset", "shift"] = "reset",
        std_growth: float = 1.5,
        stochastic_mode: Literal["sample", "noise"] = "sample",
        action_low: Sequence[float] | th.Tensor | None = None,
        action_high: Sequence[float] | th.Tensor | None = None,
        time_budget: float | None = None,
        seed: int | None = None,
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
    ) -> None:
        _check_int("action_dim", action_dim, 1)
        _check_int("horizon", horizon, 1)
        _check_int("num_samples", num_samples, 1)
        _check_int("num_iterations", num_iterations, 1)
        _check_int("num_particles", num_particles, 1)
        _check_choice("utility", utility, UTILITIES)
        _check_range("temperature", temperature, 0.0, 1e12, low_open=True)
        _check_range("elite_fraction", elite_fraction, 0.0, 1.0, low_open=True)
        _check_range("gamma_mean", gamma_mean, 0.0, 1.0, low_open=True)
        _check_range("gamma_std", gamma_std, 0.0, 1.0, low_open=True)
        _check_range("init_std", init_std, 0.0, 1e6, low_open=True)
        _check_range("min_std", min_std, 0.0, init_std)
        _check_range("discount", discount, 0.0, 1.0, low_open=True)
        _check_range("prior_fraction", prior_fraction, 0.0, 1.0)
        _check_choice("shift", shift, SHIFTS)
        _check_choice("std_mode", std_mode, STD_MODES)
        _check_range("std_growth", std_growth, 1.0, 1e6)
        _check_choice("stochastic_mode", stochastic_mode, STOCHASTIC_MODES)
        if time_budget is not None:
            _check_range("time_budget", time_budget, 0.0, 1e6, low_open=True)
        if shift == "prior" and prior is None:
            raise ValueError("shift='prior' needs a prior callable (e.g. the SB3 actor)")

        self.dynamics = as_dynamics(dynamics)
        self.action_dim = action_dim
        self.horizon = horizon
        self.num_samples = num_samples
        self.num_iterations = num_iterations
        self.num_particles = num_particles
        self.utility = utility
        self.temperature = float(temperature)
        self.normalize_returns = normalize_returns
        self.elite_fraction = float(elite_fraction)
        self.gamma_mean = float(gamma_mean)
        self.gamma_std = float(gamma_std)
        self.init_std = float(init_std)
        self.min_std = float(min_std)
        self.discount = float(discount)
        self.terminal_value = terminal_value
        self.prior = prior
        self.prior_fraction = float(prior_fraction)
        self.shift = shift
        self.std_mode = std_mode
        self.std_growth = float(std_growth)
        self.stochastic_mode = stochastic_mode
        self.time_budget = time_budget
        self.device = th.device(device)
        self.dtype = dtype

        low = th.as_tensor(-1.0 if action_low is None else action_low, dtype=dtype, device=self.device)
        high = th.as_tensor(1.0 if action_high is None else action_high, dtype=dtype, device=self.device)
        low, high = low.expand(action_dim).clone(), high.expand(action_dim).clone()
        if not (th.isfinite(low).all() and th.isfinite(high).all() and (high > low).all()):
            raise ValueError(
                f"action bounds must be finite with high > low for every dimension, got low={low.tolist()}, "
                f"high={high.tolist()}"
            )
        self.action_low, self.action_high = low, high
        self._action_scale = (high - low) / 2.0
        self._action_offset = (high + low) / 2.0

        self.generator = th.Generator(device=self.device)
        self.seed(seed)

        self.mean: th.Tensor | None = None  # (B, H, A)
        self.std: th.Tensor | None = None  # (B, H, A)
        self._iteration_time: float | None = None  # moving average, seconds

    # ------------------------------------------------------------------ properties and state

    @property
    def num_prior_samples(self) -> int:
        """Prior rollouts per iteration: ``ceil(prior_fraction * num_samples)`` when a prior is set."""
        if self.prior is None or self.prior_fraction == 0.0:
            return 0
        return math.ceil(self.prior_fraction * self.num_samples)

    @property
    def num_elites(self) -> int:
        return max(1, math.ceil(self.elite_fraction * (self.num_samples + self.num_prior_samples)))

    def seed(self, seed: int | None = None) -> None:
        """(Re)seed the planner's generator; ``None`` draws a seed from torch's global generator."""
        if seed is None:
            seed = int(th.randint(0, 2**62, (1,)).item())
        self.generator.manual_seed(int(seed))

    def unscale_action(self, normalized: th.Tensor) -> th.Tensor:
        """Map ``[-1, 1]`` actions to environment units."""
        return self._action_offset + normalized * self._action_scale

    def scale_action(self, action: th.Tensor) -> th.Tensor:
        """Map environment actions to ``[-1, 1]``."""
        return (action - self._action_offset) / self._action_scale

    def reset(self, indices: Sequence[int] | th.Tensor | None = None) -> None:
        """Forget the plan of some environments (episode boundaries): mean 0, std ``init_std``.

        :param indices: environment indices, or None for all
        """
        if self.mean is None or self.std is None:
            return
        if indices is None:
            self.mean.zero_()
            self.std.fill_(self.init_std)
            return
        idx = th.as_tensor(indices, dtype=th.long, device=self.device).reshape(-1)
        if idx.numel() == 0:
            return
        if (idx < 0).any() or (idx >= self.mean.shape[0]).any():
            raise ValueError(f"reset indices must be in [0, {self.mean.shape[0] - 1}], got {idx.tolist()}")
        self.mean[idx] = 0.0
        self.std[idx] = self.init_std

    def _ensure_state(self, batch: int) -> None:
        if self.mean is None or self.std is None or self.mean.shape[0] != batch:
            shape = (batch, self.horizon, self.action_dim)
            self.mean = th.zeros(shape, dtype=self.dtype, device=self.device)
            self.std = th.full(shape, self.init_std, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ rollouts

    def _observe(self, states: th.Tensor) -> th.Tensor:
        observe = getattr(self.dynamics, "observe", None)
        return observe(states) if observe is not None else states

    def _prior_actions(self, states: th.Tensor) -> th.Tensor:
        """(N, S) -> (N, A) prior actions in [-1, 1], non-finite entries replaced by 0."""
        assert self.prior is not None
        with th.no_grad():
            actions = self.prior(self._observe(states)).to(self.dtype).reshape(states.shape[0], self.action_dim)
        return th.nan_to_num(actions, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)

    def _prior_sequences(self, states: th.Tensor, count: int) -> th.Tensor:
        """Roll the prior through the model: (B, S) -> (B, count, H, A) normalised actions."""
        b = states.shape[0]
        s = states.repeat_interleave(count, dim=0)
        seq = th.empty(b * count, self.horizon, self.action_dim, dtype=self.dtype, device=self.device)
        for h in range(self.horizon):
            a = self._prior_actions(s)
            seq[:, h] = a
            if h + 1 < self.horizon:
                s, _, _ = self.dynamics(s, self.unscale_action(a))
        return seq.reshape(b, count, self.horizon, self.action_dim)

    def evaluate(self, states: th.Tensor, sequences: th.Tensor, deadline: float | None = None) -> th.Tensor:
        """Returns of action sequences from given states.

        :param states: (B, S)
        :param sequences: (B, M, H, A) normalised actions
        :param deadline: absolute ``time.perf_counter()`` after which the rollout is abandoned
        :return: (B, M) returns averaged over ``num_particles``; NaN/inf where the model produced them
        """
        b, m, h_len, _ = sequences.shape
        p = self.num_particles
        n = b * m * p
        s = states.repeat_interleave(m * p, dim=0)  # (N, S), ordered (b, m, p)
        actions = self.unscale_action(sequences).reshape(b * m, h_len, self.action_dim)
        if p > 1:
            actions = actions.repeat_interleave(p, dim=0)  # (N, H, A), ordered (b, m, p)
        ret = th.zeros(n, dtype=self.dtype, device=self.device)
        alive = th.ones(n, dtype=self.dtype, device=self.device)
        weight = 1.0
        for h in range(h_len):
            s, r, done = self.dynamics(s, actions[:, h])
            ret += weight * alive * r.to(self.dtype).reshape(n)
            alive = alive * (~done.reshape(n).bool()).to(self.dtype)
            weight *= self.discount
            if deadline is not None and time.perf_counter() > deadline:
                raise PlanningDeadlineExceeded
        if self.terminal_value is not None:
            with th.no_grad():
                v = self.terminal_value(self._observe(s)).to(self.dtype).reshape(n)
            ret += weight * alive * v
        return ret.reshape(b, m, p).mean(dim=2)

    # ------------------------------------------------------------------ the update

    def _weights(self, returns: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Normalised utilities of returns.

        :param returns: (B, M), may hold NaN/inf
        :return: weights (B, M) summing to 1 per row (rows with no valid return are all zero), and the
            (B,) mask of rows with at least one valid return
        """
        valid = th.isfinite(returns)
        any_valid = valid.any(dim=1)
        safe = th.where(valid, returns, th.zeros_like(returns))
        if self.utility == "exp":
            if self.normalize_returns:
                count = valid.sum(dim=1, keepdim=True).clamp(min=1)
                mu = safe.sum(dim=1, keepdim=True) / count
                var = (th.where(valid, safe - mu, th.zeros_like(safe)) ** 2).sum(dim=1, keepdim=True) / count
                safe = (safe - mu) / (var.sqrt() + 1e-8)
            logits = th.where(valid, safe / self.temperature, th.full_like(safe, -math.inf))
            logits = th.where(any_valid[:, None], logits, th.zeros_like(logits))
            weights = th.softmax(logits, dim=1)
        else:
            k = min(self.num_elites, returns.shape[1])
            ranked = th.where(valid, safe, th.full_like(safe, -math.inf))
            top = th.topk(ranked, k, dim=1).indices
            elite = th.zeros_like(safe).scatter_(1, top, 1.0) * valid.to(safe.dtype)
            weights = elite / elite.sum(dim=1, keepdim=True).clamp(min=1.0)
        weights = weights * any_valid[:, None].to(weights.dtype)
        return weights, any_valid

    def _check_states(self, states: th.Tensor) -> th.Tensor:
        if not isinstance(states, th.Tensor):
            states = th.as_tensor(states)
        if states.dim() != 2:
            raise ValueError(
                f"states must have shape (B, state_dim) (one row per environment), got {tuple(states.shape)}"
            )
        if states.shape[0] < 1:
            raise ValueError("states must hold at least one environment (B >= 1)")
        return states.to(device=self.device, dtype=self.dtype)

    def plan(
        self,
        states: th.Tensor,
        deterministic: bool = True,
        time_budget: float | None = None,
        deadline: float | None = None,
    ) -> PlanResult:
        """Run one control step of DMD-MPC for B environments.

        :param states: (B, S) current states
        :param deterministic: first action of the weighted mean (True), or a stochastic action
            (see ``stochastic_mode``)
        :param time_budget: seconds for this call, overrides the planner's ``time_budget``
        :param deadline: absolute ``time.perf_counter()`` deadline, overrides any budget
        :return: a :class:`PlanResult`
        """
        start = time.perf_counter()
        states = self._check_states(states)
        b = states.shape[0]
        self._ensure_state(b)
        assert self.mean is not None and self.std is not None
        budget = self.time_budget if time_budget is None else time_budget
        if deadline is None and budget is not None:
            deadline = start + budget

        k = self.num_prior_samples
        n = self.num_samples
        hz, ad = self.horizon, self.action_dim
        with th.no_grad():
            prior_seq = self._prior_sequences(states, k) if k > 0 else None
            if self.shift == "prior" and prior_seq is not None:
                self.mean.copy_(prior_seq[:, 0])
            elif self.shift == "prior":
                self.mean.copy_(self._prior_sequences(states, 1)[:, 0])

            mean, std = self.mean, self.std
            expected_return = th.full((b,), math.nan, dtype=self.dtype, device=self.device)
            ess = th.zeros(b, dtype=self.dtype, device=self.device)
            any_valid = th.ones(b, dtype=th.bool, device=self.device)
            samples: th.Tensor | None = None
            weights: th.Tensor | None = None
            iterations = 0
            deadline_hit = False
            for _ in range(self.num_iterations):
                it_start = time.perf_counter()
                if deadline is not None and self._iteration_time is not None:
                    if it_start + self._iteration_time > deadline:
                        deadline_hit = True
                        break
                noise = th.randn((b, n, hz, ad), generator=self.generator, dtype=self.dtype, device=self.device)
                cand = (mean[:, None] + std[:, None] * noise).clamp_(-1.0, 1.0)
                if prior_seq is not None:
                    cand = th.cat([cand, prior_seq], dim=1)
                try:
                    returns = self.evaluate(states, cand, deadline=deadline)
                except PlanningDeadlineExceeded:
                    deadline_hit = True
                    break
                w, valid_rows = self._weights(returns)
                wv = w[:, :, None, None]
                new_mean = (wv * cand).sum(dim=1)
                new_var = (wv * (cand - new_mean[:, None]) ** 2).sum(dim=1)
                keep = valid_rows[:, None, None]
                mean = th.where(keep, (1.0 - self.gamma_mean) * mean + self.gamma_mean * new_mean, mean)
                var = (1.0 - self.gamma_std) * std**2 + self.gamma_std * new_var
                std = th.where(keep, var.sqrt().clamp(min=self.min_std), std)
                safe_r = th.where(th.isfinite(returns), returns, th.zeros_like(returns))
                expected_return = th.where(valid_rows, (w * safe_r).sum(dim=1), th.full_like(expected_return, math.nan))
                ess = 1.0 / (w**2).sum(dim=1).clamp(min=1e-12) * valid_rows.to(self.dtype)
                any_valid = valid_rows
                samples, weights = cand, w
                iterations += 1
                dt = time.perf_counter() - it_start
                self._iteration_time = dt if self._iteration_time is None else 0.8 * self._iteration_time + 0.2 * dt

            mean = mean.clamp(-1.0, 1.0)
            if deterministic or samples is None or weights is None:
                first = mean[:, 0].clone()
            elif self.stochastic_mode == "sample":
                idx = th.multinomial(
                    th.where(any_valid[:, None], weights, th.ones_like(weights)), 1, generator=self.generator
                ).squeeze(1)
                first = samples[th.arange(b, device=self.device), idx, 0]
            else:
                eps = th.randn((b, ad), generator=self.generator, dtype=self.dtype, device=self.device)
                first = (mean[:, 0] + std[:, 0] * eps).clamp(-1.0, 1.0)

            no_plan = iterations == 0
            fallback = (~any_valid) | th.full((b,), no_plan, dtype=th.bool, device=self.device)
            if fallback.any():
                fb = self._prior_actions(states) if self.prior is not None else mean[:, 0]
                first = th.where(fallback[:, None], fb, first)
            first = th.nan_to_num(first, nan=0.0).clamp(-1.0, 1.0)

            result_mean = mean.clone()
            self.mean, self.std = self._shifted(mean), self._shifted_std(std)

        return PlanResult(
            action=self.unscale_action(first),
            normalized_action=first,
            mean=result_mean,
            expected_return=expected_return,
            ess=ess,
            iterations=iterations,
            fallback=fallback,
            all_invalid=~any_valid,
            elapsed=time.perf_counter() - start,
            deadline_hit=deadline_hit,
        )

    def _shifted(self, mean: th.Tensor) -> th.Tensor:
        out = th.empty_like(mean)
        out[:, :-1] = mean[:, 1:]
        if self.shift == "zero":
            out[:, -1] = 0.0
        else:  # repeat_last; "prior" overwrites the mean at the next plan() call
            out[:, -1] = mean[:, -1]
        return out

    def _shifted_std(self, std: th.Tensor) -> th.Tensor:
        if self.std_mode == "reset":
            return th.full_like(std, self.init_std)
        out = th.empty_like(std)
        out[:, :-1] = (std[:, 1:] * self.std_growth).clamp(max=self.init_std)
        out[:, -1] = self.init_std
        return out

    def __repr__(self) -> str:
        return (
            f"DMDMPCPlanner(horizon={self.horizon}, num_samples={self.num_samples}, "
            f"num_prior_samples={self.num_prior_samples}, num_iterations={self.num_iterations}, "
            f"num_particles={self.num_particles}, utility={self.utility!r}, gamma_mean={self.gamma_mean}, "
            f"gamma_std={self.gamma_std})"
        )
