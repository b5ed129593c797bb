"""Random streams and predict's plan state in the planning core: each planner draws from its own generator
(its samples, a stochastic prior's and a stochastic model's), fits from the model's own, and a predict state
is checked before it is used."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC

from sb3_demo import DMDMPCPlanner, EnsembleDynamics
from sb3_demo.common.plan_state import plan_predict, start_plan
from sb3_demo.common.policy_planner import make_policy_planner
from sb3_demo.common.seeding import PREDICT_PLANNER, ROLLOUT_PLANNER, reseeded, stream_generator, stream_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLANNER = dict(horizon=3, num_samples=16, num_iterations=1, num_particles=2, prior_fraction=0.25)


def small_model(seed: int = 0) -> EnsembleDynamics:
    return EnsembleDynamics(3, 1, num_members=3, num_elites=2, hidden_sizes=(16,), seed=seed)


def test_stream_seeds_differ_by_name_and_repeat_by_seed() -> None:
    assert stream_seed(3, ROLLOUT_PLANNER) == stream_seed(3, ROLLOUT_PLANNER)
    assert stream_seed(3, ROLLOUT_PLANNER) != stream_seed(3, PREDICT_PLANNER)
    assert stream_seed(3, ROLLOUT_PLANNER) != stream_seed(4, ROLLOUT_PLANNER)
    assert 0 <= stream_seed(None, ROLLOUT_PLANNER) < 2**63
    g = stream_generator(3, ROLLOUT_PLANNER)
    before = th.rand(2, generator=g)
    with reseeded(g, 7):
        inside = th.rand(2, generator=g)
    assert th.equal(inside, th.rand(2, generator=th.Generator().manual_seed(7)))
    after = th.rand(2, generator=g)
    again = stream_generator(3, ROLLOUT_PLANNER)
    th.rand(2, generator=again)
    assert th.equal(after, th.rand(2, generator=again)) and not th.equal(before, after)


def test_the_planner_passes_its_generator_to_the_model_and_the_prior_samples_from_it() -> None:
    """A stochastic model and SAC's stochastic prior draw from the planner's stream: the model's own
    generator and torch's global one stay where they were, and the same stream gives the same plan."""
    sac = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[16]), seed=0)
    model = small_model()
    space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    states = th.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])
    plans = []
    for _ in range(2):
        planner = make_policy_planner(model, sac.policy, space, PLANNER, critic=None, seed=5, stream=ROLLOUT_PLANNER)
        model_stream = model.generator.get_state()
        global_stream = th.random.get_rng_state()
        plans.append(planner.plan(states, deterministic=False).action)
        assert th.equal(model.generator.get_state(), model_stream)
        assert th.equal(th.random.get_rng_state(), global_stream)
    th.testing.assert_close(plans[0], plans[1], rtol=0, atol=0)


def test_fits_draw_from_the_fit_generator_which_survives_pickling() -> None:
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(64, 3)).astype(np.float32), rng.normal(size=(64, 1)).astype(np.float32)
    model = small_model()
    sampling = model.generator.get_state()
    model.fit(obs, act, obs + 0.1 * act, rng.normal(size=64).astype(np.float32), max_epochs=2)
    assert th.equal(model.generator.get_state(), sampling)
    copy = pickle.loads(pickle.dumps(model))
    assert th.equal(copy.fit_generator.get_state(), model.fit_generator.get_state())


def test_predict_state_is_checked_and_carries_the_warm_start() -> None:
    planner = DMDMPCPlanner(small_model(), action_dim=1, seed=0, **PLANNER)
    states = th.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])
    step, state = plan_predict(planner, states, None, None, True, 11)
    again, same = plan_predict(planner, states, None, None, True, 11)
    assert th.equal(step.result.action, again.result.action)
    assert all(np.array_equal(x, y) for x, y in zip(state, same, strict=True))
    assert state[0].shape == (2, PLANNER["horizon"], 1)
    start_plan(planner, state, np.array([True, False]), 2)
    assert planner.state is not None
    assert th.equal(planner.state.mean[0], th.zeros_like(planner.state.mean[0]))
    np.testing.assert_array_equal(planner.state.mean[1].numpy(), state[0][1])
    with pytest.raises(ValueError, match="shape"):
        start_plan(planner, (state[0][:1], state[1][:1]), None, 2)
    with pytest.raises(ValueError, match="finite"):
        start_plan(planner, (np.full_like(state[0], np.nan), state[1]), None, 2)
    with pytest.raises(ValueError, match="mean, std"):
        start_plan(planner, state[0], None, 2)
