"""The DMD-MPC update: it optimises (LQR), and its special cases are MPPI and CEM, computed here by hand."""

from __future__ import annotations

import itertools

import pytest
import torch as th

from sb3_demo.dynamics import PendulumDynamics
from sb3_demo.planner import DMDMPCPlanner

F64 = th.float64


# ---------------------------------------------------------------- linear-quadratic problem


@pytest.mark.parametrize(
    "utility, settings",
    [
        ("elite", {"elite_fraction": 0.1, "gamma_std": 0.5}),
        ("exp", {"normalize_returns": True, "temperature": 0.1, "gamma_std": 0.5}),
    ],
)
def test_lqr_cost_decreases_and_first_action_matches_riccati(linear_quadratic, utility, settings) -> None:
    horizon = 8
    x0 = th.tensor([[1.0, 0.0]], dtype=F64)
    optimal_actions, optimal_cost = linear_quadratic.lqr(x0[0], horizon)
    assert -10.0 < float(optimal_actions.min()) and float(optimal_actions.max()) < 10.0  # inside the box

    def planner(iterations: int) -> DMDMPCPlanner:
        return DMDMPCPlanner(
            linear_quadratic,
            action_dim=1,
            horizon=horizon,
            num_samples=500,
            num_iterations=iterations,
            utility=utility,
            terminal_value=linear_quadratic.terminal_value,
            action_low=-20.0,
            action_high=20.0,
            dtype=F64,
            seed=0,
            **settings,
        )

    # the same seed: a run with k iterations is the first k iterations of a longer run
    initial_cost = -float(planner(1).evaluate(x0, th.zeros(1, 1, horizon, 1, dtype=F64)))
    costs = []
    for iterations in (1, 2, 5, 10, 20):
        p = planner(iterations)
        result = p.plan(x0)
        assert result.iterations == iterations
        costs.append(-float(p.evaluate(x0, result.mean[:, None])))
    assert initial_cost > costs[0]
    assert all(later < earlier for earlier, later in itertools.pairwise(costs)), costs
    assert costs[-1] == pytest.approx(optimal_cost, rel=1e-3)

    first_action = float(result.action[0, 0])
    assert first_action == pytest.approx(float(optimal_actions[0, 0]), rel=0.05)
    # the whole plan, not only its first action, is close to the LQR sequence
    plan = p.unscale_action(result.mean[0])
    assert th.allclose(plan, optimal_actions, atol=0.1 * float(optimal_actions.abs().max()))


# ---------------------------------------------------------------- MPPI / CEM / DMD by hand

B, N, H = 2, 64, 5
STATES = th.tensor([[-1.0, 0.0, 0.5], [0.6, 0.8, -2.0]], dtype=F64)  # Pendulum observations


def _hand_candidates(generator: th.Generator, mean: th.Tensor, std: th.Tensor) -> th.Tensor:
    """The planner's documented sampling: clamp(mean + std * eps), eps ~ N(0, 1) of shape (B, N, H, A)."""
    eps = th.randn((B, N, H, 1), generator=generator, dtype=F64)
    return (mean[:, None] + std[:, None] * eps).clamp(-1.0, 1.0)


def _hand_returns(model: PendulumDynamics, sequences: th.Tensor) -> th.Tensor:
    """Undiscounted returns of (B, N, H, 1) normalised sequences, one model call per step."""
    states = STATES.repeat_interleave(N, dim=0)
    torques = 2.0 * sequences.reshape(B * N, H, 1)  # [-1, 1] -> [-2, 2]
    total = th.zeros(B * N, dtype=F64)
    for h in range(H):
        states, reward, _ = model(states, torques[:, h])
        total += reward
    return total.reshape(B, N)


def _hand_weights(returns: th.Tensor, utility: str, temperature: float, normalize: bool, elites: int) -> th.Tensor:
    if utility == "exp":
        if normalize:
            returns = (returns - returns.mean(1, keepdim=True)) / (returns.std(1, correction=0, keepdim=True) + 1e-8)
        return th.softmax(returns / temperature, dim=1)  # MPPI: w_i = exp(R_i / lambda) / sum_j exp(R_j / lambda)
    weights = th.zeros_like(returns)
    top = returns.argsort(dim=1, descending=True)[:, :elites]
    return weights.scatter_(1, top, 1.0 / elites)  # CEM: the elite set, equally weighted


CASES = {
    # name: (utility, gamma_mean, gamma_std, normalize_returns, temperature)
    "mppi": ("exp", 1.0, 1.0, False, 2.0),
    "mppi_normalized": ("exp", 1.0, 1.0, True, 0.5),
    "cem": ("elite", 1.0, 1.0, False, 1.0),
    "dmd_exp": ("exp", 0.3, 0.6, False, 2.0),
    "dmd_elite": ("elite", 0.5, 0.2, False, 1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_update_equals_hand_computation(case: str) -> None:
    """gamma = 1 with exp is MPPI, gamma = 1 with elite is CEM, and gamma < 1 is the convex combination."""
    utility, gamma_mean, gamma_std, normalize, temperature = CASES[case]
    model, init_std, elites = PendulumDynamics(), 1.0, 8
    planner = DMDMPCPlanner(
        model,
        action_dim=1,
        horizon=H,
        num_samples=N,
        num_iterations=1,
        utility=utility,
        temperature=temperature,
        normalize_returns=normalize,
        elite_fraction=elites / N,
        gamma_mean=gamma_mean,
        gamma_std=gamma_std,
        init_std=init_std,
        std_mode="shift",
        std_growth=1.0,
        action_low=-2.0,
        action_high=2.0,
        dtype=F64,
        seed=123,
    )
    assert planner.num_elites == elites
    generator = th.Generator().manual_seed(123)
    mean = th.zeros(B, H, 1, dtype=F64)
    std = th.full((B, H, 1), init_std, dtype=F64)
    for _ in range(2):  # the second control step starts from the shifted plan
        candidates = _hand_candidates(generator, mean, std)
        returns = _hand_returns(model, candidates)
        w = _hand_weights(returns, utility, temperature, normalize, elites)
        weighted_mean = (w[:, :, None, None] * candidates).sum(1)
        weighted_var = (w[:, :, None, None] * (candidates - weighted_mean[:, None]) ** 2).sum(1)
        new_mean = (1 - gamma_mean) * mean + gamma_mean * weighted_mean
        new_std = ((1 - gamma_std) * std**2 + gamma_std * weighted_var).sqrt()

        result = planner.plan(STATES)

        assert th.allclose(result.mean, new_mean, rtol=0, atol=1e-10)
        assert th.allclose(result.normalized_action, new_mean[:, 0], rtol=0, atol=1e-10)
        assert th.allclose(result.action, 2.0 * new_mean[:, 0], rtol=0, atol=1e-10)
        assert th.allclose(result.expected_return, (w * returns).sum(1), rtol=0, atol=1e-10)
        assert th.allclose(result.ess, 1.0 / (w**2).sum(1), rtol=0, atol=1e-8)
        if utility == "elite":
            assert th.allclose(result.ess, th.full((B,), float(elites), dtype=F64))
        assert not result.fallback.any() and not result.all_invalid.any()
        # std_mode="shift" with growth 1: the next std is the updated std moved one step, capped at init_std
        assert planner.std is not None and planner.mean is not None
        assert th.allclose(planner.std[:, :-1], new_std[:, 1:].clamp(max=init_std), rtol=0, atol=1e-10)
        assert th.all(planner.std[:, -1] == init_std)
        assert th.allclose(planner.mean[:, :-1], new_mean[:, 1:], rtol=0, atol=1e-10)
        assert th.allclose(planner.mean[:, -1], new_mean[:, -1], rtol=0, atol=1e-10)  # repeat_last
        mean, std = planner.mean.clone(), planner.std.clone()
    assert float(new_std.max()) < init_std  # the update really moved the std


def test_std_growth_and_reset_modes() -> None:
    def run(std_mode: str, growth: float) -> tuple[th.Tensor, th.Tensor]:
        planner = DMDMPCPlanner(
            PendulumDynamics(),
            1,
            horizon=H,
            num_samples=N,
            num_iterations=2,
            utility="elite",
            gamma_std=1.0,
            init_std=0.8,
            std_mode=std_mode,
            std_growth=growth,
            action_low=-2.0,
            action_high=2.0,
            dtype=F64,
            seed=5,
        )
        result = planner.plan(STATES)
        assert planner.std is not None
        return planner.std.clone(), result.mean

    shifted, mean = run("shift", 1.0)
    grown, grown_mean = run("shift", 2.0)
    reset, reset_mean = run("reset", 1.0)
    assert th.equal(mean, grown_mean) and th.equal(mean, reset_mean)  # the std mode only acts after the step
    assert float(shifted[:, :-1].max()) < 0.8
    assert th.allclose(grown[:, :-1], (2.0 * shifted[:, :-1]).clamp(max=0.8))
    assert th.all(reset == 0.8)


# ---------------------------------------------------------------- stochastic actions


def _cem_planner(mode: str, seed: int) -> DMDMPCPlanner:
    return DMDMPCPlanner(
        PendulumDynamics(),
        action_dim=1,
        horizon=H,
        num_samples=N,
        num_iterations=1,
        utility="elite",
        elite_fraction=8 / N,
        gamma_std=1.0,
        init_std=1.0,
        stochastic_mode=mode,
        action_low=-2.0,
        action_high=2.0,
        dtype=F64,
        seed=seed,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stochastic_sample_mode_draws_a_sequence_by_weight(seed: int) -> None:
    generator = th.Generator().manual_seed(seed)
    candidates = _hand_candidates(generator, th.zeros(B, H, 1, dtype=F64), th.ones(B, H, 1, dtype=F64))
    w = _hand_weights(_hand_returns(PendulumDynamics(), candidates), "elite", 1.0, False, 8)
    index = th.multinomial(w, 1, generator=generator)[:, 0]
    expected = candidates[th.arange(B), index, 0]

    result = _cem_planner("sample", seed).plan(STATES, deterministic=False)
    assert th.allclose(result.normalized_action, expected, rtol=0, atol=1e-12)
    assert bool((w[th.arange(B), index] > 0).all())  # an elite's first action
    deterministic = _cem_planner("sample", seed).plan(STATES, deterministic=True)
    assert not th.allclose(result.normalized_action, deterministic.normalized_action)


def test_stochastic_noise_mode_adds_the_plans_std() -> None:
    generator = th.Generator().manual_seed(7)
    candidates = _hand_candidates(generator, th.zeros(B, H, 1, dtype=F64), th.ones(B, H, 1, dtype=F64))
    w = _hand_weights(_hand_returns(PendulumDynamics(), candidates), "elite", 1.0, False, 8)
    mean = (w[:, :, None, None] * candidates).sum(1)
    std = (w[:, :, None, None] * (candidates - mean[:, None]) ** 2).sum(1).sqrt()
    eps = th.randn((B, 1), generator=generator, dtype=F64)
    expected = (mean[:, 0] + std[:, 0] * eps).clamp(-1.0, 1.0)

    result = _cem_planner("noise", 7).plan(STATES, deterministic=False)
    assert th.allclose(result.normalized_action, expected, rtol=0, atol=1e-12)
    assert th.allclose(result.mean, mean, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- prior proposals, shift, terminal value


def test_prior_that_knows_the_optimum_converges_in_one_iteration(step_target) -> None:
    target = 0.35
    model = step_target(target)

    def prior(obs: th.Tensor) -> th.Tensor:
        return th.full((obs.shape[0], 1), target, dtype=obs.dtype)

    def planner(with_prior: bool) -> DMDMPCPlanner:
        return DMDMPCPlanner(
            model,
            action_dim=1,
            horizon=4,
            num_samples=20,
            num_iterations=1,
            utility="elite",
            elite_fraction=0.01,  # a single elite
            prior=prior if with_prior else None,
            prior_fraction=0.05,
            dtype=F64,
            seed=0,
        )

    guided = planner(True)
    assert guided.num_prior_samples == 1
    result = guided.plan(th.zeros(3, 1, dtype=F64))
    assert result.iterations == 1
    assert th.allclose(result.mean, th.full((3, 4, 1), target, dtype=F64), rtol=0, atol=1e-12)
    assert th.allclose(result.expected_return, th.zeros(3, dtype=F64), atol=1e-12)
    unguided = planner(False).plan(th.zeros(3, 1, dtype=F64))
    assert float((unguided.mean - target).abs().max()) > 0.01  # random samples alone do not hit it


@pytest.mark.parametrize("shift", ["repeat_last", "zero"])
def test_shift_moves_the_plan_one_step(shift: str, step_target) -> None:
    planner = DMDMPCPlanner(
        step_target([0.5, -0.5]),
        action_dim=2,
        horizon=4,
        num_samples=50,
        num_iterations=2,
        shift=shift,
        seed=0,
    )
    result = planner.plan(th.zeros(2, 1))
    assert planner.mean is not None
    assert th.equal(planner.mean[:, :-1], result.mean[:, 1:])
    expected_last = th.zeros_like(result.mean[:, -1]) if shift == "zero" else result.mean[:, -1]
    assert th.equal(planner.mean[:, -1], expected_last)
    assert float(result.mean[:, -1].abs().min()) > 0.0


def test_shift_prior_reseeds_the_mean_from_the_prior(step_target) -> None:
    def prior(obs: th.Tensor) -> th.Tensor:
        return th.full((obs.shape[0], 2), -0.25, dtype=obs.dtype)

    planner = DMDMPCPlanner(
        step_target([0.5, 0.5]),
        action_dim=2,
        horizon=3,
        num_samples=30,
        num_iterations=1,
        gamma_mean=1e-6,  # the update barely moves the mean: what it started from shows
        prior=prior,
        prior_fraction=0.0,
        shift="prior",
        seed=0,
    )
    for _ in range(2):
        result = planner.plan(th.zeros(2, 1))
        assert th.allclose(result.mean, th.full((2, 3, 2), -0.25), atol=1e-5)


def test_terminal_value_is_added_with_discount_to_the_horizon() -> None:
    class Observed:
        """Counts steps in its state; observations are the state times 10."""

        def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            return (
                states + 1.0,
                th.ones(states.shape[0], dtype=states.dtype),
                th.zeros(states.shape[0], dtype=th.bool),
            )

        def observe(self, states: th.Tensor) -> th.Tensor:
            return 10.0 * states

    seen: list[th.Tensor] = []

    def value(obs: th.Tensor) -> th.Tensor:
        seen.append(obs)
        return th.full((obs.shape[0],), 7.0, dtype=obs.dtype)

    gamma, horizon = 0.9, 4
    planner = DMDMPCPlanner(
        Observed(), action_dim=1, horizon=horizon, discount=gamma, terminal_value=value, dtype=F64, seed=0
    )
    returns = planner.evaluate(th.zeros(2, 1, dtype=F64), th.zeros(2, 3, horizon, 1, dtype=F64))
    expected = sum(gamma**h for h in range(horizon)) + gamma**horizon * 7.0
    assert th.allclose(returns, th.full((2, 3), expected, dtype=F64))
    assert th.all(seen[-1] == 10.0 * horizon)  # the critic saw observations of the last state


def test_terminations_stop_rewards_and_terminal_value() -> None:
    """The step that terminates still counts; later rewards (even NaN ones) and the terminal value do not."""

    def model(states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        step = states[:, 0] + 1.0
        ends_at = states[:, 1]
        reward = th.where(step > ends_at, th.nan, 1.0)  # garbage after the end
        return th.stack([step, ends_at], 1), reward, step >= ends_at

    planner = DMDMPCPlanner(model, action_dim=1, horizon=5, discount=0.5, terminal_value=lambda s: th.ones(len(s)))
    states = th.tensor([[0.0, 2.0], [0.0, 9.0]])
    returns = planner.evaluate(states, th.zeros(2, 1, 5, 1))
    assert th.allclose(returns[0], th.tensor([1.0 + 0.5]))  # two rewards, then terminated
    assert th.allclose(returns[1], th.tensor([sum(0.5**h for h in range(5)) + 0.5**5]))


def test_particles_average_stochastic_rollouts() -> None:
    """``num_particles`` rollouts per sequence (ordered environment, sequence, particle) are averaged."""

    class Noisy:
        def __init__(self) -> None:
            self.generator = th.Generator().manual_seed(0)

        def __call__(self, states: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            noise = th.randn(states.shape[0], generator=self.generator, dtype=states.dtype)
            reward = -((actions[:, 0] - 0.5) ** 2) + noise + states[:, 0]
            return states, reward, th.zeros(states.shape[0], dtype=th.bool)

    b, m, p, horizon = 2, 3, 500, 2
    states = th.tensor([[0.0], [10.0]], dtype=F64)
    sequences = th.rand((b, m, horizon, 1), generator=th.Generator().manual_seed(1), dtype=F64) * 2 - 1
    model = Noisy()
    planner = DMDMPCPlanner(model, action_dim=1, horizon=horizon, num_particles=p, dtype=F64)
    returns = planner.evaluate(states, sequences)

    # by hand, with the same noise stream
    model.generator.manual_seed(0)
    rows = states.repeat_interleave(m * p, dim=0)
    actions = sequences.repeat_interleave(p, dim=1).reshape(b * m * p, horizon, 1)
    total = th.zeros(b * m * p, dtype=F64)
    for h in range(horizon):
        rows, reward, _ = model(rows, actions[:, h])
        total += reward
    assert th.allclose(returns, total.reshape(b, m, p).mean(2), rtol=0, atol=1e-12)
    # the average is close to the noise-free return (std of the noise part: sqrt(2 / 500) = 0.06)
    exact = (-((sequences[..., 0] - 0.5) ** 2)).sum(2) + horizon * states
    assert float((returns - exact).abs().max()) < 0.3
