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
       var  <- (1 - gamma_std)  * var  + gamma_std  * sum_i w_i (U_i - sum_j w_j U_j)^2

   with ``w_i = u(R_i) / sum_j u(R_j)`` and the utility ``u`` either ``exp(R / temperature)``
   (MPPI when ``gamma_mean = 1``) or the elite indicator (CEM when both gammas are 1),
3. returns the first action of the plan.

The Gaussian samples of one iteration are ``clamp(mean + std * eps, -1, 1)`` with ``eps`` one standard
normal tensor of shape ``(B, num_samples, H, A)`` drawn from the planner's generator; the prior's
sequences (if any) follow them along the ``M`` axis. With ``noise_beta > 0`` the noise is coloured along
the horizon (power spectral density ``~ 1 / f^beta``, unit variance per entry, as in iCEM, Pinneri et al.
2020): slowly varying sequences that explore further than white noise, e.g. to find a distant reward.

The return of a sequence from state ``s`` is ``R = sum_{h<H} discount^h r_h + discount^H V(s_H)`` with
``V`` an optional terminal value (the SB3 critic); once a rollout terminates, neither later rewards nor the
terminal value count.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import torch as th

from sb3_demo.checks import check_int
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
    :param ess: (B,) effective sample size ``1 / sum w_i^2`` of the last iteration (0 where none ran)
    :param iterations: iterations completed (all environments run the same number)
    :param fallback: (B,) bool, True where the action did not come from a plan: no iteration fitted the
        deadline, or every sequence's return was NaN/inf. The action is then the prior's (or, without a
        prior, the first action of the warm-started plan)
    :param all_invalid: (B,) bool, True where every sequence's return was NaN/inf in the last iteration
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


@dataclass
class PlanState:
    """The planner's warm start between control steps: a diagonal Gaussian per environment.

    :param mean: (B, H, A) mean action sequence in ``[-1, 1]``
    :param std: (B, H, A) its std in ``[-1, 1]`` units
    """

    mean: th.Tensor
    std: th.Tensor


@dataclass
class _Search:
    """What the iterations of one :meth:`DMDMPCPlanner.plan` call leave: the updated plan and the last
    iteration's candidates (B, M, H, A), returns and weights (B, M) and valid rows (B,) (None: all valid)."""

    mean: th.Tensor
    std: th.Tensor
    deadline_hit: bool
    samples: th.Tensor | None = None
    returns: th.Tensor | None = None
    weights: th.Tensor | None = None
    valid_rows: th.Tensor | None = None
    iterations: int = 0


@dataclass
class _Diagnostics:
    """The last iteration's expected return, effective sample size, invalid and fallback rows, all (B,)."""

    expected_return: th.Tensor
    ess: th.Tensor
    all_invalid: th.Tensor
    fallback: th.Tensor
    any_fallback: bool


def _check_float(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check ``value`` lies in the interval and return it as a float; the message states the interval."""
    if math.isinf(high):
        allowed = f"> {low}" if low_open else f">= {low}"
        allowed += " and finite"
    else:
        allowed = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return v


def _all_finite(x: th.Tensor) -> bool:
    """True if every entry is finite; one reduction instead of ``isfinite(x).all()``.

    A NaN or inf entry makes the sum non-finite; a sum that overflows only sends the caller to its
    (correct, slower) path for non-finite values.
    """
    return math.isfinite(float(x.sum()))


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def colored_noise(
    shape: tuple[int, int, int, int],
    beta: float,
    generator: th.Generator,
    dtype: th.dtype = th.float32,
    device: th.device | str = "cpu",
) -> th.Tensor:
    """Gaussian noise coloured along the horizon: power spectral density ``~ 1 / f^beta``, unit variance.

    Random Fourier coefficients scaled by ``f^(-beta / 2)`` (the zero frequency clamped to ``1 / H``, as
    in the ``colorednoise`` package used by iCEM) and transformed back, divided by the exact standard
    deviation of the result. ``beta = 0`` gives white noise (a different random stream from ``th.randn``);
    larger ``beta`` gives smoother sequences.

    :param shape: (B, N, H, A); the noise is coloured along H, independent across B, N and A
    :param beta: exponent of the spectrum, >= 0
    :param generator: torch generator the coefficients are drawn from
    :param dtype: floating dtype of the result
    :param device: device of the result
    :return: (B, N, H, A) noise, each entry with mean 0 and variance 1
    """
    b, n, h, a = shape
    freqs = th.fft.rfftfreq(h, dtype=th.float64).clamp_min(1.0 / h)  # (F,)
    scale = freqs.pow(-beta / 2.0)
    # The DC coefficient (and the Nyquist one for even H) is real: it gets both parts' variance (2 scale^2),
    # as in a white series' spectrum; every other one is complex and counts twice in the inverse transform.
    # Var(x_t) = (sum over the real ones of 2 scale^2 + sum over the rest of 4 scale^2) / H^2.
    real_only = th.zeros(freqs.numel(), dtype=th.bool)
    real_only[0] = True
    if h % 2 == 0:
        real_only[-1] = True
    sigma = th.sqrt(th.where(real_only, 2.0, 4.0).mul(scale.square()).sum()) / h
    coeffs = th.randn((b, n, a, freqs.numel(), 2), generator=generator, dtype=th.float64, device=generator.device)
    scale, real_only = scale.to(coeffs.device), real_only.to(coeffs.device)
    real = coeffs[..., 0] * th.where(real_only, math.sqrt(2.0), 1.0) * scale
    imag = th.where(real_only, 0.0, coeffs[..., 1] * scale)
    series = th.fft.irfft(th.complex(real, imag), n=h) / sigma.to(coeffs.device)  # (B, N, A, H)
    return series.transpose(-1, -2).to(dtype=dtype, device=device).contiguous()


@dataclass
class PlannerConfig:
    """The settings of :class:`DMDMPCPlanner` (everything but its model, prior, value, bounds, seed and device).

    Validated on construction; :meth:`from_kwargs` builds one from a dict (RL Zoo yml, ``planner_kwargs``)
    and names an unknown key together with the allowed ones.

    :param horizon: H >= 1
    :param num_samples: Gaussian sequences per iteration, >= 1
    :param num_iterations: mirror-descent steps per control step, >= 1
    :param num_particles: rollouts per sequence (their returns are averaged), >= 1
    :param utility: ``"exp"`` (exponential, MPPI-like) or ``"elite"`` (elite indicator, CEM-like)
    :param temperature: exp utility ``u = exp(R / temperature)``, > 0
    :param normalize_returns: standardise returns per environment before the exp utility, so that
        ``temperature`` is scale-free
    :param elite_fraction: fraction of the ``M`` sequences kept by the elite utility (at least one), in (0, 1]
    :param gamma_mean: mirror-descent step size of the mean, in (0, 1]
    :param gamma_std: mirror-descent step size of the variance, in (0, 1]
    :param noise_beta: colour of the sampling noise along the horizon, >= 0: 0 white (independent steps),
        1 pink, 2 brown (slowly varying sequences); see :func:`colored_noise`
    :param init_std: std of a fresh plan in normalised units (0.5 = a quarter of the action range), > 0
    :param min_std: floor on the std after an update, in [0, init_std]
    :param discount: per-step discount of model rewards, in (0, 1]
    :param prior_fraction: prior rollouts added per iteration, as a fraction of ``num_samples`` (rounded up),
        in [0, 1]
    :param shift: how the plan moves between control steps: ``"repeat_last"``, ``"zero"`` (new last
        action 0) or ``"prior"`` (re-seed the mean from the prior's rollout)
    :param std_mode: ``"reset"`` the std to ``init_std`` every step, or ``"shift"`` it like the mean and
        grow it by ``std_growth`` (capped at ``init_std``)
    :param std_growth: multiplicative growth of the shifted std, >= 1
    :param stochastic_mode: ``plan(deterministic=False)`` returns the first action of a sequence drawn by
        weight (``"sample"``) or the mean plus Gaussian noise of the plan's std (``"noise"``)
    :param time_budget: seconds allowed per :meth:`plan` call (anytime planning), None for no limit
    :param dtype: floating dtype of the planner's state
    """

    horizon: int = 3
    num_samples: int = 100
    num_iterations: int = 5
    num_particles: int = 1
    utility: Literal["exp", "elite"] = "exp"
    temperature: float = 1.0
    normalize_returns: bool = False
    elite_fraction: float = 0.1
    gamma_mean: float = 1.0
    gamma_std: float = 0.9
    noise_beta: float = 0.0
    init_std: float = 0.5
    min_std: float = 0.0
    discount: float = 1.0
    prior_fraction: float = 0.05
    shift: Literal["repeat_last", "zero", "prior"] = "repeat_last"
    std_mode: Literal["reset", "shift"] = "reset"
    std_growth: float = 1.5
    stochastic_mode: Literal["sample", "noise"] = "sample"
    time_budget: float | None = None
    dtype: th.dtype = field(default=th.float32)

    def __post_init__(self) -> None:
        self.horizon = check_int("horizon", self.horizon, 1)
        self.num_samples = check_int("num_samples", self.num_samples, 1)
        self.num_iterations = check_int("num_iterations", self.num_iterations, 1)
        self.num_particles = check_int("num_particles", self.num_particles, 1)
        _check_choice("utility", self.utility, UTILITIES)
        self.temperature = _check_float("temperature", self.temperature, 0.0, low_open=True)
        self.elite_fraction = _check_float("elite_fraction", self.elite_fraction, 0.0, 1.0, low_open=True)
        self.gamma_mean = _check_float("gamma_mean", self.gamma_mean, 0.0, 1.0, low_open=True)
        self.gamma_std = _check_float("gamma_std", self.gamma_std, 0.0, 1.0, low_open=True)
        self.noise_beta = _check_float("noise_beta", self.noise_beta, 0.0)
        self.init_std = _check_float("init_std", self.init_std, 0.0, low_open=True)
        self.min_std = _check_float("min_std", self.min_std, 0.0, self.init_std)
        self.discount = _check_float("discount", self.discount, 0.0, 1.0, low_open=True)
        self.prior_fraction = _check_float("prior_fraction", self.prior_fraction, 0.0, 1.0)
        _check_choice("shift", self.shift, SHIFTS)
        _check_choice("std_mode", self.std_mode, STD_MODES)
        self.std_growth = _check_float("std_growth", self.std_growth, 1.0)
        _check_choice("stochastic_mode", self.stochastic_mode, STOCHASTIC_MODES)
        if not isinstance(self.normalize_returns, bool):
            raise ValueError(f"normalize_returns must be True or False, got {self.normalize_returns!r}")
        self.time_budget = check_time_budget(self.time_budget)
        if not (isinstance(self.dtype, th.dtype) and self.dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype, got {self.dtype!r}")

    @classmethod
    def from_kwargs(cls, settings: Mapping[str, Any] | None, base: PlannerConfig | None = None) -> PlannerConfig:
        """``base`` (default: the defaults) with ``settings`` applied, validated.

        :raises ValueError: a key that is not a setting (the message names it and the allowed keys), or a
            value outside its range
        """
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(PLANNER_SETTINGS))
        if unknown:
            raise ValueError(f"unknown planner setting(s) {unknown}; the settings are {list(PLANNER_SETTINGS)}")
        if base is None:
            return cls(**settings)
        return replace(base, **settings) if settings else base

    def to_kwargs(self) -> dict[str, Any]:
        """The settings as a plain dict (``PlannerConfig(**config.to_kwargs()) == config``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


PLANNER_SETTINGS = tuple(f.name for f in fields(PlannerConfig))


def check_time_budget(time_budget: Any) -> float | None:
    """None, or a number of seconds > 0 (as a float)."""
    if time_budget is None:
        return None
    return _check_float("time_budget", time_budget, 0.0, low_open=True)


class DMDMPCPlanner:
    """Dynamic Mirror Descent MPC over a batched dynamics model.

    :param dynamics: ``dynamics(states (N, S), actions (N, A)) -> (next_states (N, S), rewards (N,),
        terminated (N,))`` with actions in environment units (see :class:`~sb3_demo.dynamics.DynamicsModel`).
        If it has ``observe(states) -> observations``, the prior and terminal value see observations.
        Optional attributes the planner uses: ``state_dim`` / ``action_dim`` (checked against the input),
        ``can_terminate = False`` (skips the termination bookkeeping of the rollouts), ``takes_generator =
        True`` (the model samples its noise from the planner's generator, passed as ``generator=``).
    :param action_dim: A
    :param terminal_value: ``V(obs (N, obs_dim)) -> (N,)`` added with weight ``discount^H``
    :param prior: ``pi(obs (N, obs_dim)) -> actions (N, A)`` in ``[-1, 1]`` (the SB3 actor); used for
        proposals, ``shift="prior"`` and fallbacks
    :param config: the planner's settings (:class:`PlannerConfig`; default: its defaults)
    :param action_low: scalar or (A,) lower bounds in environment units (default -1)
    :param action_high: scalar or (A,) upper bounds in environment units (default 1)
    :param seed: seed of the planner's own random generator (None: drawn from torch's global generator)
    :param device: torch device of the planner's state
    :param generator: the random generator of the planner's sampling (and of a model with
        ``takes_generator = True``), on ``device`` (default: a new one, seeded with ``seed``)
    :param settings: single settings by keyword (``horizon=5``), applied over ``config``
    """

    def __init__(
        self,
        dynamics: DynamicsModel | Callable[..., tuple[th.Tensor, ...]],
        action_dim: int,
        config: PlannerConfig | None = None,
        *,
        terminal_value: ValueFn | None = None,
        prior: PriorFn | None = None,
        action_low: Sequence[float] | th.Tensor | float | None = None,
        action_high: Sequence[float] | th.Tensor | float | None = None,
        seed: int | None = None,
        device: th.device | str = "cpu",
        generator: th.Generator | None = None,
        **settings: Any,
    ) -> None:
        config = PlannerConfig.from_kwargs(settings, base=config)
        self.config = config
        self.action_dim = check_int("action_dim", action_dim, 1)
        self.horizon = config.horizon
        self.num_samples = config.num_samples
        self.num_iterations = config.num_iterations
        self.num_particles = config.num_particles
        self.temperature = config.temperature
        self.elite_fraction = config.elite_fraction
        self.gamma_mean = config.gamma_mean
        self.gamma_std = config.gamma_std
        self.noise_beta = config.noise_beta
        self.init_std = config.init_std
        self.min_std = config.min_std
        self.discount = config.discount
        self.prior_fraction = config.prior_fraction
        self.std_growth = config.std_growth
        self.time_budget = config.time_budget
        if terminal_value is not None and not callable(terminal_value):
            raise ValueError(f"terminal_value must be a callable V(obs) -> (N,) or None, got {terminal_value!r}")
        if prior is not None and not callable(prior):
            raise ValueError(f"prior must be a callable pi(obs) -> (N, A) actions or None, got {prior!r}")
        if config.shift == "prior" and prior is None:
            raise ValueError("shift='prior' needs a prior callable (e.g. the SB3 actor)")

        self.dynamics = as_dynamics(dynamics)
        model_action_dim = getattr(self.dynamics, "action_dim", None)
        if isinstance(model_action_dim, int) and model_action_dim != self.action_dim:
            raise ValueError(f"action_dim={self.action_dim} does not match the dynamics' action_dim={model_action_dim}")
        state_dim = getattr(self.dynamics, "state_dim", None)
        self._state_dim: int | None = state_dim if isinstance(state_dim, int) else None
        self._can_terminate = getattr(self.dynamics, "can_terminate", True) is not False
        self._model_takes_generator = getattr(self.dynamics, "takes_generator", False) is True
        self.utility = config.utility
        self.normalize_returns = config.normalize_returns
        self.terminal_value = terminal_value
        self.prior = prior
        self.shift = config.shift
        self.std_mode = config.std_mode
        self.stochastic_mode = config.stochastic_mode
        self.device = th.device(device)
        self.dtype = config.dtype

        self.action_low = self._check_bound("action_low", action_low, -1.0)
        self.action_high = self._check_bound("action_high", action_high, 1.0)
        if not bool((self.action_high > self.action_low).all()):
            raise ValueError(
                "action bounds need action_high > action_low in every dimension, got "
                f"action_low={self.action_low.tolist()}, action_high={self.action_high.tolist()}"
            )
        self._action_scale = (self.action_high - self.action_low) / 2.0
        self._action_offset = (self.action_high + self.action_low) / 2.0
        # fast paths: bounds already [-1, 1] (no rescaling), and the same bounds in every dimension
        self._identity_scale = bool((self.action_low == -1.0).all() and (self.action_high == 1.0).all())
        uniform = bool(
            (self.action_low == self.action_low[0]).all() and (self.action_high == self.action_high[0]).all()
        )
        self._uniform_bounds = (float(self.action_low[0]), float(self.action_high[0])) if uniform else None
        # std of a fresh plan in environment units, (A,): broadcast wherever std_mode="reset" needs it
        self._init_std_env = self.init_std * self._action_scale
        # gathers the shifted plan: steps 1, ..., H-1, H-1
        self._shift_index = th.tensor([*range(1, self.horizon), self.horizon - 1], device=self.device)

        if generator is None:
            self.generator = th.Generator(device=self.device)
            self.seed(seed)
        else:  # the caller owns the random stream (seeded by it, or by ``seed`` here)
            self.generator = generator
            if seed is not None:
                self.seed(seed)

        self.state: PlanState | None = None  # the warm start, allocated by the first plan() / ensure_batch()
        self._iteration_time: float | None = None  # moving average, seconds

    # ------------------------------------------------------------------ validation helpers

    def _check_bound(self, name: str, value: Any, default: float) -> th.Tensor:
        """Scalar or (A,) bound -> finite (A,) tensor of the planner's dtype/device."""
        try:
            bound = th.as_tensor(default if value is None else value, dtype=self.dtype, device=self.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a number or a sequence of {self.action_dim} numbers: {exc}") from None
        if bound.dim() > 1 or (bound.dim() == 1 and bound.shape[0] not in (1, self.action_dim)):
            raise ValueError(
                f"{name} must be a scalar or have shape ({self.action_dim},) (one bound per action "
                "dimension), "
                f"got shape {tuple(bound.shape)}"
            )
        if not bool(th.isfinite(bound).all()):
            raise ValueError(f"{name} must be finite, got {bound.tolist()}")
        return bound.expand(self.action_dim).clone()

    # ------------------------------------------------------------------ properties and state

    @property
    def num_prior_samples(self) -> int:
        """Prior rollouts per iteration: ``ceil(prior_fraction * num_samples)`` when a prior is set."""
        if self.prior is None or self.prior_fraction == 0.0:
            return 0
        return math.ceil(self.prior_fraction * self.num_samples)

    @property
    def num_elites(self) -> int:
        """Sequences kept by the elite utility: ``ceil(elite_fraction * M)``, at least 1."""
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

    def reset(self, indices: Sequence[int] | th.Tensor | Any | None = None) -> None:
        """Forget the plan of some environments (episode boundaries): mean 0, std ``init_std``.

        :param indices: environment indices, a (B,) bool mask, or None for all
        """
        if self.state is None:
            return
        if indices is None:
            self.state.mean.zero_()
            self.state.std.fill_(self.init_std)
            return
        idx = th.as_tensor(indices, device=self.device)
        b = self.state.mean.shape[0]
        if idx.numel() == 0:
            return
        if idx.dtype == th.bool:
            if idx.shape != (b,):
                raise ValueError(
                    f"a reset mask must have shape ({b},) (one flag per environment), got {tuple(idx.shape)}"
                )
            idx = idx.nonzero().reshape(-1)
        elif idx.is_floating_point() or idx.is_complex():
            raise ValueError(f"reset indices must be integers in [0, {b - 1}] or a bool mask, got {idx.tolist()}")
        idx = idx.to(th.long).reshape(-1)
        if bool((idx < 0).any()) or bool((idx >= b).any()):
            raise ValueError(f"reset indices must be in [0, {b - 1}], got {idx.tolist()}")
        self.state.mean[idx] = 0.0
        self.state.std[idx] = self.init_std

    def ensure_batch(self, batch: int) -> PlanState:
        """The warm start for ``batch`` environments: the current one, or a fresh plan if its size differs."""
        if self.state is None or self.state.mean.shape[0] != batch:
            shape = (batch, self.horizon, self.action_dim)
            self.state = PlanState(
                mean=th.zeros(shape, dtype=self.dtype, device=self.device),
                std=th.full(shape, self.init_std, dtype=self.dtype, device=self.device),
            )
        return self.state

    @property
    def mean(self) -> th.Tensor | None:
        """(B, H, A) the warm-started plan's mean in ``[-1, 1]`` (None before the first plan)."""
        return None if self.state is None else self.state.mean

    @property
    def std(self) -> th.Tensor | None:
        """(B, H, A) the warm-started plan's std in ``[-1, 1]`` units (None before the first plan)."""
        return None if self.state is None else self.state.std

    # ------------------------------------------------------------------ rollouts

    def _observe(self, states: th.Tensor) -> th.Tensor:
        observe = getattr(self.dynamics, "observe", None)
        return observe(states) if observe is not None else states

    def prior_actions(self, states: th.Tensor) -> th.Tensor:
        """(N, S) -> (N, A) prior actions in [-1, 1], non-finite entries replaced by 0."""
        assert self.prior is not None
        with th.no_grad():
            actions = th.as_tensor(self.prior(self._observe(states)))
        n = states.shape[0]
        if actions.numel() != n * self.action_dim:
            raise ValueError(
                f"the prior must return ({n}, {self.action_dim}) actions for {n} observations, "
                f"got shape {tuple(actions.shape)}"
            )
        actions = actions.to(device=self.device, dtype=self.dtype).reshape(n, self.action_dim)
        return th.nan_to_num(actions, nan=0.0, posinf=1.0, neginf=-1.0).clamp_(-1.0, 1.0)

    def _prior_sequences(self, states: th.Tensor, count: int, deadline: float | None = None) -> th.Tensor:
        """Roll the prior through the model: (B, S) -> (B, count, H, A) normalised actions.

        :raises PlanningDeadlineExceeded: when ``deadline`` passes (checked after every model call)
        """
        b = states.shape[0]
        s = states.repeat_interleave(count, dim=0)
        seq = th.empty(b * count, self.horizon, self.action_dim, dtype=self.dtype, device=self.device)
        for h in range(self.horizon):
            a = self.prior_actions(s)
            seq[:, h] = a
            if h + 1 < self.horizon:
                s, _, _ = self._model_step(s, self.unscale_action(a))
                if deadline is not None and time.perf_counter() > deadline:
                    raise PlanningDeadlineExceeded
        return seq.reshape(b, count, self.horizon, self.action_dim)

    def _model_step(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """One model step; a stochastic model that takes a generator samples from the planner's."""
        if self._model_takes_generator:
            return self.dynamics(states, actions, generator=self.generator)  # type: ignore[call-arg]
        return self.dynamics(states, actions)

    def _to_env(self, normalized: th.Tensor) -> th.Tensor:
        """``[-1, 1]`` -> environment units (no copy when the bounds are already [-1, 1])."""
        return normalized if self._identity_scale else th.addcmul(self._action_offset, normalized, self._action_scale)

    def _from_env(self, action: th.Tensor) -> th.Tensor:
        """Environment units -> ``[-1, 1]`` (no copy when the bounds are already [-1, 1])."""
        return action if self._identity_scale else (action - self._action_offset).div_(self._action_scale)

    def _clamp_env_(self, actions: th.Tensor) -> th.Tensor:
        """Clamp environment-unit actions to the bounds, in place."""
        if self._uniform_bounds is not None:
            return actions.clamp_(*self._uniform_bounds)
        return actions.clamp_(min=self.action_low, max=self.action_high)

    def _rollout_returns(
        self, states: th.Tensor, actions: th.Tensor, num_sequences: int, deadline: float | None
    ) -> th.Tensor:
        """Discounted returns of action sequences.

        :param states: (B, S)
        :param actions: (B*M, H, A) environment units, rows ordered (b, m); step ``h`` goes to the model as
            the (possibly strided) view ``actions[:, h]``
        :param num_sequences: M
        :param deadline: absolute ``time.perf_counter()`` after which the rollout is abandoned
        :return: (B, M) returns averaged over the particles (NaN/inf where the model produced them)
        """
        b, m, p = states.shape[0], num_sequences, self.num_particles
        n = b * m * p
        if p > 1:
            actions = actions.repeat_interleave(p, dim=0)  # (N, H, A), ordered (b, m, p)
        if b == 1:
            s = states.expand(n, states.shape[1])  # no copy; models must not write into their inputs
        else:
            s = states[:, None, :].expand(b, m * p, states.shape[1]).reshape(n, states.shape[1])
        ret: th.Tensor | None = None  # accumulated out of place: the model's reward tensors are never modified
        alive: th.Tensor | None = None  # None while no rollout has terminated
        weight = 1.0
        for h in range(actions.shape[1]):
            s, r, done = self._model_step(s, actions[:, h])
            if r.dim() != 1:
                r = r.reshape(n)
            if r.dtype != self.dtype:
                r = r.to(self.dtype)
            if alive is not None:
                r = th.where(alive, r, 0.0)
            if ret is None:  # h = 0, weight 1
                ret = r
            elif weight == 1.0:
                ret = ret + r
            else:
                ret = th.add(ret, r, alpha=weight)
            if self._can_terminate:
                done = done.reshape(n)
                if done.dtype != th.bool:
                    done = done.bool()
                if alive is not None:
                    alive &= ~done
                elif bool(done.any()):
                    alive = ~done
            weight *= self.discount
            if deadline is not None and time.perf_counter() > deadline:
                raise PlanningDeadlineExceeded
        if self.terminal_value is not None:
            with th.no_grad():
                v = th.as_tensor(self.terminal_value(self._observe(s))).to(self.dtype).reshape(n)
            if alive is not None:
                v = th.where(alive, v, 0.0)
            ret = v * weight if ret is None else th.add(ret, v, alpha=weight)
        if ret is None:  # unreachable: horizon >= 1
            raise RuntimeError("empty rollout")
        return ret.reshape(b, m) if p == 1 else ret.reshape(b, m, p).mean(dim=2)

    def evaluate(self, states: th.Tensor, sequences: th.Tensor, deadline: float | None = None) -> th.Tensor:
        """Returns of action sequences from given states.

        :param states: (B, S)
        :param sequences: (B, M, H, A) normalised actions
        :param deadline: absolute ``time.perf_counter()`` after which the rollout is abandoned
        :return: (B, M) returns averaged over ``num_particles``; NaN/inf where the model produced them
        """
        states = self._check_states(states)
        if sequences.dim() != 4 or sequences.shape[0] != states.shape[0] or sequences.shape[3] != self.action_dim:
            raise ValueError(
                f"sequences must have shape (B={states.shape[0]}, M, H, A={self.action_dim}), "
                f"got {tuple(sequences.shape)}"
            )
        b, m, h_len, a = sequences.shape
        sequences = sequences.to(device=self.device, dtype=self.dtype)
        with th.no_grad():
            actions = self._to_env(sequences).reshape(b * m, h_len, a)
            return self._rollout_returns(states, actions, m, deadline)

    # ------------------------------------------------------------------ the update

    def _weights(self, returns: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """Normalised utilities of returns.

        :param returns: (B, M), may hold NaN/inf
        :return: weights (B, M) summing to 1 per row (rows with no valid return are all zero), and None
            when every return is valid, else the (B,) mask of rows with at least one valid return
        """
        if self.utility == "exp":
            if self.normalize_returns:
                std, mu = th.std_mean(returns, dim=1, correction=0, keepdim=True)
                logits = (returns - mu).div_(std.add_(1e-8).mul_(self.temperature))
            else:
                logits = returns if self.temperature == 1.0 else returns / self.temperature
            if _all_finite(logits):
                return th.softmax(logits, dim=1), None
            return self._weights_with_invalid(returns)
        if _all_finite(returns):
            k = min(self.num_elites, returns.shape[1])
            top = th.topk(returns, k, dim=1, sorted=False).indices
            return th.zeros_like(returns).scatter_(1, top, 1.0 / k), None
        return self._weights_with_invalid(returns)

    def _weights_with_invalid(self, returns: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """The slow path of :meth:`_weights`: NaN/inf returns get zero weight."""
        valid = th.isfinite(returns)
        any_valid = valid.any(dim=1)
        safe = th.where(valid, returns, 0.0)
        if self.utility == "exp":
            if self.normalize_returns:
                count = valid.sum(dim=1, keepdim=True).clamp(min=1)
                mu = safe.sum(dim=1, keepdim=True) / count
                var = (th.where(valid, safe - mu, 0.0) ** 2).sum(dim=1, keepdim=True) / count
                safe = (safe - mu) / (var.sqrt() + 1e-8)
            logits = safe / self.temperature
            valid &= th.isfinite(logits)
            any_valid = valid.any(dim=1)
            logits = th.where(valid, logits, -math.inf)
            logits = th.where(any_valid[:, None], logits, 0.0)
            weights = th.softmax(logits, dim=1)
        else:
            k = min(self.num_elites, returns.shape[1])
            ranked = th.where(valid, safe, -math.inf)
            top = th.topk(ranked, k, dim=1).indices
            elite = th.zeros_like(safe).scatter_(1, top, 1.0) * valid.to(safe.dtype)
            weights = elite / elite.sum(dim=1, keepdim=True).clamp(min=1.0)
        weights = weights * any_valid[:, None].to(weights.dtype)
        return weights, any_valid

    def _check_states(self, states: Any) -> th.Tensor:
        if not isinstance(states, th.Tensor):
            try:
                states = th.as_tensor(states)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f"states must be a (B, state_dim) tensor or array: {exc}") from None
        if states.dim() != 2:
            raise ValueError(
                f"states must have shape (B, state_dim) (one row per environment), got {tuple(states.shape)}"
            )
        if states.shape[0] < 1:
            raise ValueError(f"states must hold at least one environment (B >= 1), got shape {tuple(states.shape)}")
        if self._state_dim is not None and states.shape[1] != self._state_dim:
            raise ValueError(
                f"states must have shape (B, {self._state_dim}) for this dynamics model, got {tuple(states.shape)}"
            )
        if states.dtype != self.dtype or states.device != self.device:
            states = states.to(device=self.device, dtype=self.dtype)
        return states

    def plan(
        self,
        states: th.Tensor,
        deterministic: bool = True,
        time_budget: float | None = None,
        deadline: float | None = None,
    ) -> PlanResult:
        """Run one control step of DMD-MPC for B environments.

        The steps, in order: the deadline (:meth:`_deadline`), the prior's rollouts
        (:meth:`_prior_rollouts`), the mirror-descent iterations, each sampling candidates and updating
        the plan (:meth:`_iterate`), the diagnostics of the last iteration (:meth:`_diagnostics`), the
        action (:meth:`_choose_action`), the fallback where planning failed (:meth:`_fallback`) and the
        shift of the plan to the next control step (:meth:`_shift`).

        :param states: (B, S) current states
        :param deterministic: first action of the weighted mean (True), or a stochastic action
            (see ``stochastic_mode``)
        :param time_budget: seconds for this call (> 0), overrides the planner's ``time_budget``
        :param deadline: absolute ``time.perf_counter()`` deadline, overrides any budget
        :return: a :class:`PlanResult`
        """
        start = time.perf_counter()
        states = self._check_states(states)
        deadline = self._deadline(start, time_budget, deadline)
        warm = self.ensure_batch(states.shape[0])
        # the std after the last iteration is only used by std_mode="shift" and stochastic_mode="noise"
        keep_last_std = self.std_mode == "shift" or (not deterministic and self.stochastic_mode == "noise")
        with th.no_grad():
            prior_env, deadline_hit = self._prior_rollouts(states, warm, deadline)
            search = self._iterate(states, warm, prior_env, deadline, deadline_hit, keep_last_std)
            diagnostics = self._diagnostics(search, states.shape[0])
            first = self._choose_action(search, deterministic)
            first, action = self._fallback(states, search, diagnostics, first)
            self.state = self._shift(search)
        return PlanResult(
            action=action,
            normalized_action=first,
            mean=search.mean,
            expected_return=diagnostics.expected_return,
            ess=diagnostics.ess,
            iterations=search.iterations,
            fallback=diagnostics.fallback,
            all_invalid=diagnostics.all_invalid,
            elapsed=time.perf_counter() - start,
            deadline_hit=search.deadline_hit,
        )

    def _deadline(self, start: float, time_budget: float | None, deadline: float | None) -> float | None:
        """The absolute deadline of this call: ``deadline``, else ``start`` plus the budget, else None."""
        budget = self.time_budget if time_budget is None else check_time_budget(time_budget)
        if deadline is not None:
            if isinstance(deadline, bool) or not isinstance(deadline, numbers.Real) or not math.isfinite(deadline):
                raise ValueError(f"deadline must be a finite time.perf_counter() value, got {deadline!r}")
            return deadline
        return start + budget if budget is not None else None

    def _prior_rollouts(
        self, states: th.Tensor, warm: PlanState, deadline: float | None
    ) -> tuple[th.Tensor | None, bool]:
        """The prior's sequences in environment units (B, K, H, A), or None; re-seeds the plan's mean with
        ``shift="prior"``. No model call starts after the deadline: at most one evaluation runs past it.

        :return: the sequences, and whether the deadline passed (no time left to iterate: the prior's action)
        """
        k = self.num_prior_samples
        try:
            prior_seq = self._prior_sequences(states, k, deadline) if k > 0 else None
            if self.shift == "prior":
                reseed = prior_seq if prior_seq is not None else self._prior_sequences(states, 1, deadline)
                warm.mean.copy_(reseed[:, 0])
        except PlanningDeadlineExceeded:
            return None, True
        return (self._to_env(prior_seq) if prior_seq is not None else None), False

    def _sample(self, mean: th.Tensor, std: th.Tensor, prior_env: th.Tensor | None) -> th.Tensor:
        """(B, M, H, A) candidates in environment units: Gaussian samples first, then the prior's sequences
        (fixed within a step)."""
        b, n, hz, ad = mean.shape[0], self.num_samples, self.horizon, self.action_dim
        if self.noise_beta == 0.0:
            noise = th.randn((b, n, hz, ad), generator=self.generator, dtype=self.dtype, device=self.device)
        else:
            noise = colored_noise((b, n, hz, ad), self.noise_beta, self.generator, self.dtype, self.device)
        std_b = std[:, None] if std.dim() == 3 else std  # (B, 1, H, A) or the (A,) fresh std
        cand = self._clamp_env_(th.addcmul(mean[:, None], std_b, noise))
        return th.cat([cand, prior_env], dim=1) if prior_env is not None else cand

    def _iterate(
        self,
        states: th.Tensor,
        warm: PlanState,
        prior_env: th.Tensor | None,
        deadline: float | None,
        deadline_hit: bool,
        keep_last_std: bool,
    ) -> _Search:
        """The mirror-descent iterations (sample, evaluate, weigh, update) until done or out of time.

        The iterations work in environment units: the update is affine-equivariant, so sampling, rollouts
        and the update all use one (B, M, H, A) tensor of candidates. The returned mean and std are in
        ``[-1, 1]`` units again.
        """
        b, hz, ad = states.shape[0], self.horizon, self.action_dim
        m = self.num_samples + self.num_prior_samples
        search = _Search(mean=self._to_env(warm.mean), std=self._env_std(warm.std), deadline_hit=deadline_hit)
        for _ in range(0 if deadline_hit else self.num_iterations):
            it_start = time.perf_counter()
            if deadline is not None and (
                it_start > deadline or (self._iteration_time is not None and it_start + self._iteration_time > deadline)
            ):
                search.deadline_hit = True
                break
            cand = self._sample(search.mean, search.std, prior_env)
            try:
                it_returns = self._rollout_returns(states, cand.view(b * m, hz, ad), m, deadline)
            except PlanningDeadlineExceeded:
                search.deadline_hit = True
                break
            w, it_valid = self._weights(it_returns)
            last = search.iterations + 1 == self.num_iterations
            search.mean, search.std = self._update(
                cand, w, search.mean, search.std, it_valid, with_std=not last or keep_last_std
            )
            search.samples, search.returns, search.weights, search.valid_rows = cand, it_returns, w, it_valid
            search.iterations += 1
            dt = time.perf_counter() - it_start
            self._iteration_time = dt if self._iteration_time is None else 0.8 * self._iteration_time + 0.2 * dt
        # back to [-1, 1]
        if search.iterations > 0:
            search.mean = self._from_env(search.mean)
            if keep_last_std and not self._identity_scale:
                search.std = search.std / self._action_scale
        else:
            search.mean, search.std = warm.mean, warm.std
        return search

    def _env_std(self, std: th.Tensor) -> th.Tensor:
        """The plan's std in environment units: the (A,) fresh std with ``std_mode="reset"`` (``std`` then
        holds init_std everywhere), else (B, H, A)."""
        if self.std_mode == "reset":
            return self._init_std_env
        return std if self._identity_scale else std * self._action_scale

    def _diagnostics(self, search: _Search, b: int) -> _Diagnostics:
        """Expected return, effective sample size and invalid rows of the last iteration."""
        samples, returns, weights, valid_rows = search.samples, search.returns, search.weights, search.valid_rows
        if samples is None or returns is None or weights is None:
            return _Diagnostics(
                expected_return=th.full((b,), math.nan, dtype=self.dtype, device=self.device),
                ess=th.zeros(b, dtype=self.dtype, device=self.device),
                all_invalid=th.zeros(b, dtype=th.bool, device=self.device),
                fallback=th.ones(b, dtype=th.bool, device=self.device),
                any_fallback=True,
            )
        if valid_rows is None:
            m = weights.shape[1]
            w_row = weights.reshape(b, 1, m)
            return _Diagnostics(
                expected_return=th.bmm(w_row, returns.reshape(b, m, 1)).view(b),
                ess=th.bmm(w_row, weights.reshape(b, m, 1)).view(b).reciprocal_(),
                all_invalid=th.zeros(b, dtype=th.bool, device=self.device),
                fallback=th.zeros(b, dtype=th.bool, device=self.device),
                any_fallback=False,
            )
        safe = th.where(weights > 0, returns, 0.0)
        all_invalid = ~valid_rows
        return _Diagnostics(
            expected_return=th.where(valid_rows, (weights * safe).sum(dim=1), math.nan),
            ess=th.where(valid_rows, weights.square().sum(dim=1).reciprocal(), 0.0),
            all_invalid=all_invalid,
            fallback=all_invalid.clone(),
            any_fallback=bool(all_invalid.any()),
        )

    def _choose_action(self, search: _Search, deterministic: bool) -> th.Tensor:
        """(B, A) first action in ``[-1, 1]``: the mean's, a sequence drawn by weight, or the mean plus noise."""
        mean, samples, weights = search.mean, search.samples, search.weights
        if deterministic or samples is None or weights is None:
            return mean[:, 0]
        b = mean.shape[0]
        if self.stochastic_mode == "sample":
            draw = weights if search.valid_rows is None else th.where(search.valid_rows[:, None], weights, 1.0)
            idx = th.multinomial(draw, 1, generator=self.generator).squeeze(1)
            return self._from_env(samples[th.arange(b, device=self.device), idx, 0])
        eps = th.randn((b, self.action_dim), generator=self.generator, dtype=self.dtype, device=self.device)
        return th.addcmul(mean[:, 0], search.std[:, 0], eps)

    def _fallback(
        self, states: th.Tensor, search: _Search, diagnostics: _Diagnostics, first: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """Where planning failed, the prior's action (else the warm-started plan's); then the bounds.

        :return: the action in ``[-1, 1]`` and in environment units (new tensors, never views of the plan)
        """
        if diagnostics.any_fallback:
            fb = self.prior_actions(states) if self.prior is not None else search.mean[:, 0]
            first = th.nan_to_num(th.where(diagnostics.fallback[:, None], fb, first), nan=0.0)
        first = first.clamp(-1.0, 1.0)
        # clamp again in environment units: offset - scale can round past the bound
        action = first.clone() if self._identity_scale else self._clamp_env_(self._to_env(first))
        return first, action

    def _shift(self, search: _Search) -> PlanState:
        """The warm start of the next control step: the plan moved one step forward."""
        return PlanState(mean=self._shifted(search.mean), std=self._shifted_std(search.std))

    def _update(
        self,
        cand: th.Tensor,
        weights: th.Tensor,
        mean: th.Tensor,
        std: th.Tensor,
        valid_rows: th.Tensor | None,
        with_std: bool = True,
    ) -> tuple[th.Tensor, th.Tensor]:
        """One mirror-descent step (in whatever units ``cand``, ``mean`` and ``std`` share).

        :param cand: (B, M, H, A) sequences
        :param weights: (B, M) normalised utilities
        :param mean: (B, H, A) current mean
        :param std: (B, H, A) current std
        :param valid_rows: (B,) rows to update (None: all)
        :param with_std: update the std too (False returns ``std`` unchanged: its update would be discarded)
        :return: the new mean and std (new tensors; the inputs are not modified)
        """
        b, m, hz, ad = cand.shape
        flat = cand.view(b, m, hz * ad)
        w = weights[:, None, :]  # (B, 1, M)
        new_mean = th.bmm(w, flat).view(b, hz, ad)  # sum_i w_i U_i
        new_std = std
        if with_std:
            new_var = th.bmm(w, (flat - new_mean.view(b, 1, hz * ad)).square_()).view(b, hz, ad)
            new_std = self._mixed_std(std, new_var)
        if self.gamma_mean != 1.0:
            new_mean = th.lerp(mean, new_mean, self.gamma_mean)
        if valid_rows is not None:
            keep = valid_rows[:, None, None]
            new_mean = th.where(keep, new_mean, mean)
            new_std = th.where(keep, new_std, std)
        return new_mean, new_std

    def _mixed_std(self, std: th.Tensor, new_var: th.Tensor) -> th.Tensor:
        """``sqrt((1 - gamma_std) std^2 + gamma_std new_var)``, floored at ``min_std`` (in normalised units)."""
        if self.gamma_std != 1.0:
            new_var = th.lerp(std.square(), new_var, self.gamma_std)
        new_std = new_var.sqrt_()
        if self.min_std > 0.0:
            floor = self.min_std if self._identity_scale else self.min_std * self._action_scale
            new_std = new_std.clamp_(min=floor)
        return new_std

    def _shifted(self, mean: th.Tensor) -> th.Tensor:
        """Move the plan one step forward: (B, H, A) -> (B, H, A)."""
        shifted = mean.index_select(1, self._shift_index)  # repeat_last
        if self.shift == "zero":
            shifted[:, -1] = 0.0
        # "prior" overwrites the mean at the next plan() call
        return shifted

    def _shifted_std(self, std: th.Tensor) -> th.Tensor:
        """(B, H, A) -> (B, H, A) std of the next control step."""
        if self.std_mode == "reset":
            # in this mode the warm start's std always holds init_std (only reset() writes to it, with init_std)
            assert self.state is not None
            return self.state.std
        grown = (std[:, 1:] * self.std_growth).clamp_(max=self.init_std)
        return th.cat([grown, th.full_like(std[:, -1:], self.init_std)], dim=1)

    def __repr__(self) -> str:
        return (
            f"DMDMPCPlanner(horizon={self.horizon}, num_samples={self.num_samples}, "
            f"num_prior_samples={self.num_prior_samples}, num_iterations={self.num_iterations}, "
            f"num_particles={self.num_particles}, utility={self.utility!r}, gamma_mean={self.gamma_mean}, "
            f"gamma_std={self.gamma_std})"
        )
