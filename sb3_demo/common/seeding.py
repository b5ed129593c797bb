"""Named random streams derived from one seed, so that each use of randomness has a generator of its own.

A DeMo algorithm draws random numbers for several independent purposes: the rollout planner (its
samples, its stochastic actor prior's samples and a stochastic model's noise in its rollouts, all from the
planner's generator, see :func:`~sb3_demo.common.policy_planner.make_policy_planner`), ``predict``'s
planner, the imagined transitions (D_MPC), the branched model rollouts (their start states, the actor's
samples and the model's noise) and the actor's exploration noise around planned actions; the learned
model's fits draw from the model's own ``fit_generator``. Each gets a stream of its own, derived from the
algorithm's ``seed`` and the stream's name, so that what one purpose draws (e.g. an evaluation's
``predict``) never moves another (e.g. training's rollouts), and none draws from torch's or numpy's global generators.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch as th

ROLLOUT_PLANNER = "rollout_planner"
PREDICT_PLANNER = "predict_planner"
AUGMENTOR = "augmentor"
MODEL_ROLLOUTS = "model_rollouts"
EXPLORATION = "exploration"
STREAMS = (ROLLOUT_PLANNER, PREDICT_PLANNER, AUGMENTOR, MODEL_ROLLOUTS, EXPLORATION)


def stream_seed(seed: int | None, stream: str) -> int:
    """The seed of the stream ``stream`` derived from ``seed`` (a 63-bit integer).

    :param seed: the algorithm's seed; None draws fresh entropy from the operating system (not from a
        global generator)
    :param stream: the stream's name, e.g. :data:`ROLLOUT_PLANNER`
    """
    entropy = secrets.randbits(64) if seed is None else int(seed) % 2**64
    sequence = np.random.SeedSequence([entropy, zlib.crc32(stream.encode())])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def deterministic_seed(seed: int | None) -> int:
    """The seed a deterministic ``predict`` (or a deterministic guide) draws its noise from at every call:
    the same for every call, and a fixed one (seed 0's) when the algorithm has no seed.

    :param seed: the algorithm's seed
    """
    return stream_seed(0 if seed is None else seed, PREDICT_PLANNER)


def stream_generator(seed: int | None, stream: str, device: th.device | str = "cpu") -> th.Generator:
    """A torch generator on ``device`` seeded with :func:`stream_seed`.

    :param seed: the algorithm's seed (None: fresh entropy)
    :param stream: the stream's name
    :param device: the device of the tensors the generator draws
    """
    generator = th.Generator(device=th.device(device))
    generator.manual_seed(stream_seed(seed, stream))
    return generator


@contextmanager
def reseeded(generators: th.Generator | Sequence[th.Generator], seed: int) -> Iterator[None]:
    """Draw from ``generators`` as if freshly seeded (``seed``, ``seed + 1``, ...), then give them back
    their old states.

    A deterministic ``predict`` plans with this: its noise is the same at every call, and the streams'
    stochastic draws go on where they were.

    :param generators: the generator(s) to borrow
    :param seed: the seed of the first one's borrowed draws
    """
    borrowed = [generators] if isinstance(generators, th.Generator) else list(generators)
    saved = [g.get_state() for g in borrowed]
    for i, generator in enumerate(borrowed):
        generator.manual_seed(seed + i)
    try:
        yield
    finally:
        for generator, state in zip(borrowed, saved, strict=True):
            generator.set_state(state)
