"""The replay-buffer augmentor: fractions, caps, ages, and the real part left as SB3 has it."""

import pickle

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_demo.buffers import AugmentedReplayBuffer

OBS = spaces.Box(-10, 10, (3,), np.float32)
ACT = spaces.Box(-1, 1, (1,), np.float32)


def _fill(buf: AugmentedReplayBuffer, n: int, value: float = 0.0) -> None:
    for _ in range(n):
        obs = np.full((buf.n_envs, 3), value, np.float32)
        buf.add(obs, obs, np.zeros((buf.n_envs, 1)), np.zeros(buf.n_envs), np.zeros(buf.n_envs), [{}] * buf.n_envs)


def _imagine(buf: AugmentedReplayBuffer, n: int, value: float = 1.0) -> None:
    obs = np.full((n, 3), value, np.float32)
    buf.add_imagined(obs, obs, np.zeros((n, 1), np.float32), np.zeros(n), np.zeros(n))


@pytest.mark.parametrize("n_envs", [1, 2])
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5])
def test_imagined_fraction_holds_in_sampled_batches(n_envs: int, fraction: float) -> None:
    buf = AugmentedReplayBuffer(1000, OBS, ACT, device="cpu", n_envs=n_envs, imagined_fraction=fraction)
    _fill(buf, 100, value=0.0)
    _imagine(buf, 300, value=1.0)
    batch = buf.sample(256)
    assert batch.observations.shape == (256, 3)
    imagined = int((batch.observations[:, 0] == 1.0).sum())
    assert imagined == round(fraction * 256)


def test_no_imagined_data_means_all_real() -> None:
    buf = AugmentedReplayBuffer(1000, OBS, ACT, device="cpu", imagined_fraction=0.5)
    _fill(buf, 50)
    assert buf.num_imagined_in_batch(64) == 0
    assert buf.sample(64).observations.shape == (64, 3)


def test_cap_overwrites_oldest() -> None:
    buf = AugmentedReplayBuffer(1000, OBS, ACT, device="cpu", imagined_fraction=0.5, imagined_buffer_size=10)
    _imagine(buf, 8, value=1.0)
    _imagine(buf, 8, value=2.0)
    assert buf.imagined_size() == 10
    assert (buf.imagined_observations[:, 0] == 2.0).sum() == 8


def test_age_limit_drops_stale_model_data() -> None:
    buf = AugmentedReplayBuffer(1000, OBS, ACT, device="cpu", imagined_fraction=0.5, imagined_max_age=20)
    _fill(buf, 10)
    _imagine(buf, 50, value=1.0)
    assert buf.num_imagined_in_batch(100) == 50
    _fill(buf, 21)  # now older than 20 real transitions
    assert buf.num_imagined_in_batch(100) == 0
    assert (buf.sample(100).observations[:, 0] == 0.0).all()


def test_fresh_model_data_follows_every_change_between_samples() -> None:
    # the fresh rows are cached between changes: each add, imagined add and age-cap change must show
    buf = AugmentedReplayBuffer(1000, OBS, ACT, device="cpu", imagined_fraction=0.5, imagined_max_age=20)
    _fill(buf, 10)
    _imagine(buf, 50, value=1.0)
    _fill(buf, 15)
    assert set(buf.sample(100).observations[50:, 0].tolist()) == {1.0}
    _imagine(buf, 50, value=2.0)
    assert set(buf.sample(400).observations[200:, 0].tolist()) == {1.0, 2.0}
    _fill(buf, 6)  # the first 50 are now 21 real transitions old
    assert set(buf.sample(100).observations[50:, 0].tolist()) == {2.0}
    buf.imagined_max_age = None
    assert set(buf.sample(400).observations[200:, 0].tolist()) == {1.0, 2.0}


def test_a_full_turn_of_the_model_store_is_seen_and_pickling_keeps_no_cache() -> None:
    buf = AugmentedReplayBuffer(
        1000, OBS, ACT, device="cpu", imagined_fraction=0.5, imagined_buffer_size=50, imagined_max_age=20
    )
    _fill(buf, 10)
    _imagine(buf, 50, value=1.0)
    _fill(buf, 21)
    assert buf.num_imagined_in_batch(100) == 0  # all stale
    _imagine(buf, 50, value=3.0)  # a full turn: the write position is where it was
    assert set(buf.sample(100).observations[50:, 0].tolist()) == {3.0}
    copy = pickle.loads(pickle.dumps(buf))
    assert "_fresh_indices" not in copy.__getstate__()
    assert set(copy.sample(100).observations[50:, 0].tolist()) == {3.0}


def test_non_finite_imagined_transitions_are_dropped() -> None:
    buf = AugmentedReplayBuffer(1000, OBS, ACT, device="cpu", imagined_fraction=0.5)
    obs = np.zeros((4, 3), np.float32)
    nxt = obs.copy()
    nxt[1, 0] = np.nan
    buf.add_imagined(obs, nxt, np.zeros((4, 1), np.float32), np.array([0, 0, np.inf, 0]), np.zeros(4))
    assert buf.imagined_size() == 2
    _fill(buf, 5)
    assert th.isfinite(buf.sample(64).next_observations).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(imagined_fraction=1.0), "imagined_fraction"),
        (dict(imagined_fraction=-0.1), "imagined_fraction"),
        (dict(imagined_buffer_size=0), "imagined_buffer_size"),
        (dict(imagined_max_age=0), "imagined_max_age"),
    ],
)
def test_invalid_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AugmentedReplayBuffer(100, OBS, ACT, device="cpu", **kwargs)


def test_wrong_imagined_shape_is_named() -> None:
    buf = AugmentedReplayBuffer(100, OBS, ACT, device="cpu")
    with pytest.raises(ValueError, match="obs has shape"):
        buf.add_imagined(np.zeros((2, 4)), np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(2), np.zeros(2))
