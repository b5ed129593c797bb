"""Bad input, invalid model output, bounds, determinism, batching, resets and the time budget."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_demo.dynamics import PendulumDynamics
from sb3_demo.planner import DMDMPCPlanner

F64 = th.float64


def _model(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    return states, -(actions**2).sum(1), th.zeros(states.shape[0], dtype=th.bool)


# ---------------------------------------------------------------- bad settings

BAD_SETTINGS = [
    ({"action_dim": 0}, "action_dim", ">= 1"),
    ({"horizon": 0}, "horizon", ">= 1"),
    ({"horizon": 2.5}, "horizon", ">= 1"),
    ({"num_samples": 0}, "num_samples", ">= 1"),
    ({"num_iterations": 0}, "num_iterations", ">= 1"),
    ({"num_particles": 0}, "num_particles", ">= 1"),
    ({"num_particles": True}, "num_particles", ">= 1"),
    ({"gamma_mean": 0.0}, "gamma_mean", "(0.0, 1.0]"),
    ({"gamma_mean": 1.5}, "gamma_mean", "(0.0, 1.0]"),
    ({"gamma_std": -0.1}, "gamma_std", "(0.0, 1.0]"),
    ({"gamma_std": float("nan")}, "gamma_std", "(0.0, 1.0]"),
    ({"elite_fraction": 0.0}, "elite_fraction", "(0.0, 1.0]"),
    ({"elite_fraction": 1.01}, "elite_fraction", "(0.0, 1.0]"),
    ({"temperature": 0.0}, "temperature", "> 0"),
    ({"temperature": -1.0}, "temperature", "> 0"),
    ({"temperature": float("inf")}, "temperature", "> 0"),
    ({"init_std": 0.0}, "init_std", "> 0"),
    ({"min_std": -0.1}, "min_std", "[0.0, 0.5]"),
    ({"min_std": 0.6}, "min_std", "[0.0, 0.5]"),
    ({"discount": 0.0}, "discount", "(0.0, 1.0]"),
    ({"discount": 1.1}, "discount", "(0.0, 1.0]"),
    ({"prior_fraction": -0.1}, "prior_fraction", "[0.0, 1.0]"),
    ({"std_growth": 0.5}, "std_growth", ">= 1"),
    ({"noise_beta": -1.0}, "noise_beta", ">= 0"),
    ({"time_budget": 0.0}, "time_budget", "> 0"),
    ({"time_budget": -1.0}, "time_budget", "> 0"),
    ({"utility": "softmax"}, "utility", "['exp', 'elite']"),
    ({"shift": "roll"}, "shift", "['repeat_last', 'zero', 'prior']"),
    ({"shift": "prior"}, "shift='prior' needs a prior", ""),
    ({"std_mode": "grow"}, "std_mode", "['reset', 'shift']"),
    ({"stochastic_mode": "greedy"}, "stochastic_mode", "['sample', 'noise']"),
    ({"normalize_returns": "yes"}, "normalize_returns", "True or False"),
    ({"action_low": [0.0, 0.0]}, "action_low", "shape (1,)"),
    ({"action_high": [[1.0]]}, "action_high", "shape (1,)"),
    ({"action_low": float("-inf")}, "action_low", "finite"),
    ({"action_low": 1.0, "action_high": 1.0}, "action_high > action_low", ""),
    ({"action_low": 2.0, "action_high": -2.0}, "action_high > action_low", ""),
    ({"action_low": "low"}, "action_low", "number"),
    ({"prior": 3}, "prior", "callable"),
    ({"terminal_value": "critic"}, "terminal_value", "callable"),
    ({"dtype": th.int64}, "dtype", "floating"),
]


@pytest.mark.parametrize("kwargs, setting, allowed", BAD_SETTINGS, ids=[str(c[0]) for c in BAD_SETTINGS])
def test_invalid_setting_raises_value_error_naming_it(kwargs: dict, setting: str, allowed: str) -> None:
    kwargs = {"action_dim": 1, **kwargs}
    with pytest.raises(ValueError) as info:
        DMDMPCPlanner(_model, **kwargs)
    assert setting in str(info.value)
    assert allowed in str(info.value)


def test_dynamics_whose_action_dim_disagrees() -> None:
    with pytest.raises(ValueError, match="action_dim=2 does not match the dynamics' action_dim=1"):
        DMDMPCPlanner(PendulumDynamics(), action_dim=2)


@pytest.mark.parametrize(
    "states, match",
    [
        (th.zeros(3), r"states must have shape \(B, state_dim\)"),
        (th.zeros(1, 2, 3), r"states must have shape \(B, state_dim\)"),
        (th.zeros(0, 3), r"at least one environment"),
        (th.zeros(2, 4), r"states must have shape \(B, 3\) for this dynamics model, got \(2, 4\)"),
        ("state", r"states must be a \(B, state_dim\) tensor"),
    ],
)
def test_wrong_state_shapes(states, match: str) -> None:
    planner = DMDMPCPlanner(PendulumDynamics(), action_dim=1, horizon=2, num_samples=4, num_iterations=1)
    with pytest.raises(ValueError, match=match):
        planner.plan(states)


def test_bad_plan_and_evaluate_arguments() -> None:
    planner = DMDMPCPlanner(_model, action_dim=2, horizon=2, num_samples=4, num_iterations=1)
    states = th.zeros(2, 1)
    with pytest.raises(ValueError, match="time_budget must be > 0"):
        planner.plan(states, time_budget=0.0)
    with pytest.raises(ValueError, match="deadline must be a finite"):
        planner.plan(states, deadline=float("nan"))
    with pytest.raises(ValueError, match=r"sequences must have shape \(B=2, M, H, A=2\)"):
        planner.evaluate(states, th.zeros(2, 3, 2, 1))
    with pytest.raises(ValueError, match=r"sequences must have shape \(B=2, M, H, A=2\)"):
        planner.evaluate(states, th.zeros(3, 3, 2, 2))


def test_prior_returning_the_wrong_shape() -> None:
    planner = DMDMPCPlanner(_model, action_dim=2, num_samples=10, prior=lambda obs: th.zeros(obs.shape[0], 3))
    with pytest.raises(ValueError, match=r"the prior must return \(\d+, 2\) actions"):
        planner.plan(th.zeros(2, 1))


def test_reset_only_resets_the_given_environments() -> None:
    planner = DMDMPCPlanner(_model, action_dim=1, horizon=3, num_samples=20, num_iterations=2, std_mode="shift", seed=0)
    planner.plan(th.zeros(4, 1))
    assert planner.mean is not None and planner.std is not None
    planner.mean.fill_(0.3)
    planner.std.fill_(0.1)
    planner.reset([1, 3])
    assert th.all(planner.mean[[1, 3]] == 0.0) and th.all(planner.std[[1, 3]] == planner.init_std)
    assert th.all(planner.mean[[0, 2]] == 0.3) and th.all(planner.std[[0, 2]] == 0.1)
    planner.reset(np.array([True, False, False, False]))  # SB3's `dones`
    assert th.all(planner.mean[0] == 0.0) and th.all(planner.mean[2] == 0.3)
    planner.reset(np.flatnonzero(np.array([False, False, True, False])))
    assert th.all(planner.mean[2] == 0.0)
    planner.reset([])
    with pytest.raises(ValueError, match=r"reset indices must be in \[0, 3\]"):
        planner.reset([4])
    with pytest.raises(ValueError, match=r"reset mask must have shape \(4,\)"):
        planner.reset(np.array([True, False]))
    with pytest.raises(ValueError, match="reset indices must be integers"):
        planner.reset([0.5])
    planner.reset()
    assert th.all(planner.mean == 0.0) and th.all(planner.std == planner.init_std)


# ---------------------------------------------------------------- invalid model output


def test_nan_and_inf_returns_get_zero_weight(step_target) -> None:
    """The unconstrained optimum (u = 0.8) lies where the model returns NaN (u > 0.2) or +inf (u < -0.5)."""
    base = step_target(0.8)

    def model(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        next_states, reward, done = base(states, actions)
        reward = th.where(actions[:, 0] > 0.2, th.nan, reward)
        reward = th.where(actions[:, 0] < -0.5, th.inf, reward)
        return next_states, reward, done

    for weighting in (
        {"utility": "exp", "normalize_returns": True, "temperature": 0.2},
        {"utility": "elite"},
    ):
        planner = DMDMPCPlanner(
            model, action_dim=1, horizon=2, num_samples=200, num_iterations=3, dtype=F64, seed=0, **weighting
        )
        result = planner.plan(th.zeros(3, 1, dtype=F64))
        assert th.isfinite(result.mean).all() and th.isfinite(result.action).all()
        assert float(result.mean.max()) <= 0.2 and float(result.mean.min()) >= -0.5
        assert float(result.action.min()) > 0.0  # pushed towards the valid end nearest the optimum
        assert th.isfinite(result.expected_return).all() and bool((result.expected_return < 0).all())
        assert not result.fallback.any() and not result.all_invalid.any()
        assert bool((result.ess >= 1.0).all())


@pytest.mark.parametrize("with_prior", [True, False])
def test_every_sequence_invalid_falls_back_to_the_prior(with_prior: bool) -> None:
    def broken(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        rows = states.shape[0]
        return th.full_like(states, th.nan), th.full((rows,), th.nan), th.zeros(rows, dtype=th.bool)

    prior_action = th.tensor([0.4, -0.6])
    planner = DMDMPCPlanner(
        broken,
        action_dim=2,
        horizon=3,
        num_samples=16,
        num_iterations=2,
        prior=(lambda obs: prior_action.expand(obs.shape[0], 2)) if with_prior else None,
        action_low=[0.0, -2.0],
        action_high=[2.0, 2.0],
        seed=0,
    )
    result = planner.plan(th.zeros(3, 4))
    assert result.all_invalid.all() and result.fallback.all()
    assert result.iterations == 2
    assert th.isnan(result.expected_return).all() and th.all(result.ess == 0)
    expected = prior_action if with_prior else th.zeros(2)  # without a prior: the warm start (a fresh plan)
    assert th.allclose(result.normalized_action, expected.expand(3, 2))
    assert th.allclose(result.action, planner.unscale_action(expected).expand(3, 2))
    assert planner.mean is not None and th.isfinite(planner.mean).all()
    again = planner.plan(th.zeros(3, 4), deterministic=False)
    assert th.isfinite(again.action).all() and again.fallback.all()


def test_some_environments_invalid_only_those_fall_back() -> None:
    def model(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        reward = th.where(states[:, 0] > 0, th.nan, -((actions[:, 0] - 0.5) ** 2))
        return states, reward, th.zeros(states.shape[0], dtype=th.bool)

    planner = DMDMPCPlanner(
        model,
        action_dim=1,
        num_samples=64,
        normalize_returns=True,
        temperature=0.1,
        prior=lambda obs: th.full((obs.shape[0], 1), -0.9),
        seed=0,
    )
    result = planner.plan(th.tensor([[0.0], [1.0], [0.0]]))
    assert result.fallback.tolist() == [False, True, False]
    assert result.all_invalid.tolist() == [False, True, False]
    assert float(result.action[1, 0]) == pytest.approx(-0.9)
    assert abs(float(result.action[0, 0]) - 0.5) < 0.1 and abs(float(result.action[2, 0]) - 0.5) < 0.1
    assert th.isnan(result.expected_return[1]) and th.isfinite(result.expected_return[[0, 2]]).all()


returns_entries = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([float("nan"), float("inf"), float("-inf")]))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(returns_entries, min_size=6, max_size=6), min_size=1, max_size=4),
    utility=st.sampled_from(["exp", "elite"]),
    normalize=st.booleans(),
    temperature=st.floats(1e-3, 1e3),
)
def test_weights_of_any_returns(rows, utility, normalize, temperature) -> None:
    """Whatever the returns, weights are finite, zero on NaN/inf, and sum to 1 on rows with a valid return."""
    planner = DMDMPCPlanner(
        _model,
        action_dim=1,
        num_samples=6,
        utility=utility,
        normalize_returns=normalize,
        temperature=temperature,
        elite_fraction=0.5,
        dtype=F64,
    )
    returns = th.tensor(rows, dtype=F64)
    weights, valid_rows = planner._weights(returns)
    valid = th.isfinite(returns)
    any_valid = valid.any(dim=1) if valid_rows is None else valid_rows
    assert th.isfinite(weights).all() and bool((weights >= 0).all())
    assert th.all(weights[~valid] == 0)
    sums = weights.sum(dim=1)
    assert th.allclose(sums[any_valid], th.ones_like(sums[any_valid]))
    assert th.all(sums[~any_valid] == 0)
    assert th.equal(any_valid, valid.any(dim=1))
    if utility == "elite":  # at most num_elites sequences, and the best valid one among them
        assert bool(((weights > 0).sum(dim=1) <= planner.num_elites).all())
        for row, w in zip(returns, weights):
            if th.isfinite(row).any():
                assert float(row[w > 0].max()) == float(row[th.isfinite(row)].max())


# ---------------------------------------------------------------- bounds and determinism


def test_asymmetric_bounds_respected(step_target) -> None:
    """Box [0, 2] with the optimum outside it on either side: actions stay inside, at the nearest bound."""
    for target, bound in ((5.0, 2.0), (-3.0, 0.0)):
        model = step_target(target)
        planner = DMDMPCPlanner(
            model,
            action_dim=1,
            horizon=3,
            num_samples=100,
            num_iterations=3,
            init_std=1.0,
            action_low=[0.0],
            action_high=[2.0],
            seed=0,
        )
        actions = []
        for deterministic in (True, False, True, False):
            actions.append(planner.plan(th.zeros(4, 1, dtype=th.float32), deterministic=deterministic).action)
        all_actions = th.cat(actions)
        assert float(all_actions.min()) >= 0.0 and float(all_actions.max()) <= 2.0
        assert float(model.seen_low.min()) >= 0.0 and float(model.seen_high.max()) <= 2.0
        assert th.allclose(actions[-2], th.full_like(actions[-2], bound), atol=0.1)


@settings(max_examples=25, deadline=None)
@given(
    low=st.lists(st.floats(-100, 100), min_size=1, max_size=3),
    width=st.lists(st.floats(1e-3, 100), min_size=3, max_size=3),
    target=st.floats(-300, 300),
    deterministic=st.booleans(),
    mode=st.sampled_from(["sample", "noise"]),
    seed=st.integers(0, 2**31),
)
def test_random_bounds_always_respected(low, width, target, deterministic, mode, seed) -> None:
    action_dim = len(low)
    high = [lo + w for lo, w in zip(low, width)]
    seen: list[th.Tensor] = []

    def model(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        seen.append(actions)
        return states, -((actions - target) ** 2).sum(1), th.zeros(states.shape[0], dtype=th.bool)

    planner = DMDMPCPlanner(
        model,
        action_dim=action_dim,
        horizon=2,
        num_samples=16,
        num_iterations=2,
        init_std=2.0,
        stochastic_mode=mode,
        action_low=low,
        action_high=high,
        dtype=F64,
        seed=seed,
    )
    low_t, high_t = th.tensor(low, dtype=F64), th.tensor(high, dtype=F64)
    for _ in range(2):
        result = planner.plan(th.zeros(2, 1, dtype=F64), deterministic=deterministic)
        assert bool(((result.action >= low_t) & (result.action <= high_t)).all())
        assert bool((result.normalized_action.abs() <= 1.0).all())
    model_actions = th.cat(seen)
    tolerance = 1e-9 * (1.0 + high_t.abs())
    assert bool((model_actions >= low_t - tolerance).all() and (model_actions <= high_t + tolerance).all())


def _pendulum_actions(seed: int, deterministic: bool) -> th.Tensor:
    planner = DMDMPCPlanner(
        PendulumDynamics(),
        1,
        horizon=5,
        num_samples=32,
        num_iterations=2,
        action_low=-2.0,
        action_high=2.0,
        seed=seed,
    )
    states = th.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    model = PendulumDynamics()
    actions = []
    for _ in range(5):
        action = planner.plan(states, deterministic=deterministic).action
        actions.append(action)
        states, _, _ = model(states, action)
    return th.stack(actions)


@pytest.mark.parametrize("deterministic", [True, False])
def test_same_seed_same_actions(deterministic: bool) -> None:
    first = _pendulum_actions(0, deterministic)
    assert th.equal(first, _pendulum_actions(0, deterministic))
    assert not th.equal(first, _pendulum_actions(1, deterministic))


# ---------------------------------------------------------------- batching


def test_batched_evaluate_equals_per_environment() -> None:
    planner = DMDMPCPlanner(PendulumDynamics(), 1, horizon=6, action_low=-2.0, action_high=2.0, dtype=F64)
    generator = th.Generator().manual_seed(0)
    states = th.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.6, -0.8, -3.0]], dtype=F64)
    sequences = th.rand((3, 7, 6, 1), generator=generator, dtype=F64) * 2 - 1
    batched = planner.evaluate(states, sequences)
    for i in range(3):
        assert th.allclose(batched[i], planner.evaluate(states[i : i + 1], sequences[i : i + 1])[0], atol=1e-12)


def test_batched_plan_equals_per_environment_plans(linear_quadratic) -> None:
    """B environments planned at once reach the same plans (the LQR optimum) as one at a time."""
    states = th.tensor([[1.0, 0.0], [-0.5, 1.0], [0.2, -2.0]], dtype=F64)

    def planner(seed: int) -> DMDMPCPlanner:
        return DMDMPCPlanner(
            linear_quadratic,
            action_dim=1,
            horizon=6,
            num_samples=300,
            num_iterations=15,
            utility="elite",
            gamma_std=0.5,
            terminal_value=linear_quadratic.terminal_value,
            action_low=-20.0,
            action_high=20.0,
            dtype=F64,
            seed=seed,
        )

    batched = planner(0).plan(states)
    assert batched.action.shape == (3, 1) and batched.mean.shape == (3, 6, 1)
    for i in range(3):
        single = planner(i + 1).plan(states[i : i + 1])
        optimum = linear_quadratic.lqr(states[i], 6)[0]
        # within 0.25% of the action range [-20, 20] of the optimum, and of each other
        assert float(batched.action[i, 0]) == pytest.approx(float(optimum[0, 0]), abs=0.1)
        assert float(single.action[0, 0]) == pytest.approx(float(optimum[0, 0]), abs=0.1)
        assert float(batched.expected_return[i]) == pytest.approx(float(single.expected_return[0]), rel=0.01)
        assert float(batched.ess[i]) == pytest.approx(float(single.ess[0]))  # elites: same count


# ---------------------------------------------------------------- time budget


def test_time_budget_stops_iterating(slow_model) -> None:
    model = slow_model(0.3, delay=0.004)  # ~12 ms per iteration at horizon 3
    planner = DMDMPCPlanner(model, action_dim=1, horizon=3, num_samples=8, num_iterations=50, seed=0)
    result = planner.plan(th.zeros(1, 1), time_budget=0.08)
    assert result.deadline_hit
    assert 1 <= result.iterations < 50
    assert result.elapsed < 0.4  # all 50 iterations would take 0.6 s (generous: the test machines are shared)
    assert not result.fallback.any()

    unlimited = DMDMPCPlanner(model, action_dim=1, horizon=3, num_samples=8, num_iterations=3, seed=0)
    full = unlimited.plan(th.zeros(1, 1))
    assert full.iterations == 3 and not full.deadline_hit


def test_time_budget_with_no_iteration_fitting_falls_back_to_the_prior(slow_model) -> None:
    model = slow_model(0.3, delay=0.01)
    planner = DMDMPCPlanner(
        model,
        action_dim=1,
        horizon=5,
        num_samples=8,
        num_iterations=5,
        prior=lambda obs: th.full((obs.shape[0], 1), -0.7),
        prior_fraction=0.0,
        action_low=[0.0],
        action_high=[2.0],
        time_budget=0.002,
        seed=0,
    )
    for _ in range(2):  # the first call learns how long an iteration takes
        result = planner.plan(th.zeros(2, 1))
        assert result.iterations == 0 and result.deadline_hit
        assert result.fallback.all() and not result.all_invalid.any()
        assert th.allclose(result.normalized_action, th.full((2, 1), -0.7))
        assert th.allclose(result.action, th.full((2, 1), 0.3))
        assert th.isnan(result.expected_return).all()
    deadline = time.perf_counter() - 1.0  # already passed
    assert planner.plan(th.zeros(2, 1), deadline=deadline).iterations == 0


def test_deadline_also_stops_the_prior_rollouts(slow_model) -> None:
    """No model call starts after the deadline, including the prior's rollouts before the first iteration."""
    model = slow_model(0.3, delay=0.01)
    planner = DMDMPCPlanner(
        model,
        action_dim=1,
        horizon=6,
        num_samples=10,
        prior=lambda obs: th.full((obs.shape[0], 1), 0.5),
        prior_fraction=0.2,
        seed=0,
    )
    result = planner.plan(th.zeros(2, 1), time_budget=0.005)
    assert model.calls == 1  # the first prior step ran past the deadline; nothing started after it
    assert result.deadline_hit and result.iterations == 0 and result.fallback.all()
    assert th.allclose(result.normalized_action, th.full((2, 1), 0.5))
    assert result.elapsed < 0.01 + 0.2
