"""Optuna samplers and converters for ``python -m rl_zoo3.train --algo demorl_sac -optimize``.

A demorl trial samples SAC's (TD3's, ARS's) own hyperparameters with rl_zoo3's ``sample_sac_params`` /
``sample_td3_params`` / ``sample_ars_params`` and the planner's with :func:`sample_planner_params`: horizon,
number of samples, number of mirror-descent iterations, the utility (exp with a temperature, or elite with
an elite fraction) and, for SAC/TD3, the share of imagined transitions in each batch.

rl_zoo3 applies sampled values with a shallow ``dict.update``, which would replace the yml's whole
``planner_kwargs``; the sampled planner settings are therefore merged into the yml's nested settings
(:func:`merge_hyperparams`), with the yml's values visible through :func:`current_base_hyperparams`
(set by the patched ``ExperimentManager.objective``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

# nested settings whose sampled entries are merged into the yml's instead of replacing them
NESTED_KEYS = ("planner_kwargs", "replay_buffer_kwargs", "model_kwargs", "model_fit_kwargs")
# trial parameter names of the planner (Optuna's flat names) -> where they go
PLANNER_PARAMS = ("horizon", "num_samples", "num_iterations", "utility", "temperature", "elite_fraction")
BUFFER_PARAMS = ("imagined_fraction",)

# search space of the planner (the 2022 reference: horizon 3, 100 samples, 5 iterations, exp utility, kappa 1)
HORIZON_RANGE = (1, 15)
NUM_SAMPLES_CHOICES = (32, 64, 128, 256, 512)
NUM_ITERATIONS_RANGE = (1, 6)
TEMPERATURE_RANGE = (0.03, 30.0)
ELITE_FRACTION_RANGE = (0.02, 0.3)
IMAGINED_FRACTION_RANGE = (0.0, 0.5)

_base_hyperparams: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "sb3_demo_zoo_base_hyperparams", default=None
)


@contextlib.contextmanager
def current_base_hyperparams(hyperparams: dict[str, Any]) -> Iterator[None]:
    """Make the experiment's (yml + command line) hyperparameters the base that sampled settings merge into."""
    token = _base_hyperparams.set(hyperparams)
    try:
        yield
    finally:
        _base_hyperparams.reset(token)


def merge_hyperparams(base: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``sampled``, where the dicts of :data:`NESTED_KEYS` are merged key by key.

    A nested setting given in ``base`` as a string (rl_zoo3 ``eval``-s those later) is replaced, as rl_zoo3 does.
    """
    merged = dict(base)
    for key, value in sampled.items():
        if key in NESTED_KEYS and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def sample_planner_params(trial: Any, augmentation: bool = True) -> dict[str, Any]:
    """Sample the planner's settings as Optuna's flat parameters (see :func:`convert_planner_params`).

    :param trial: an ``optuna.Trial``
    :param augmentation: also sample ``imagined_fraction`` (algorithms with an AugmentedReplayBuffer)
    """
    params: dict[str, Any] = {
        "horizon": trial.suggest_int("horizon", *HORIZON_RANGE),
        "num_samples": trial.suggest_categorical("num_samples", list(NUM_SAMPLES_CHOICES)),
        "num_iterations": trial.suggest_int("num_iterations", *NUM_ITERATIONS_RANGE),
        "utility": trial.suggest_categorical("utility", ["exp", "elite"]),
    }
    if augmentation:
        params["imagined_fraction"] = trial.suggest_float("imagined_fraction", *IMAGINED_FRACTION_RANGE)
    if params["utility"] == "exp":
        params["temperature"] = trial.suggest_float("temperature", *TEMPERATURE_RANGE, log=True)
    else:
        params["elite_fraction"] = trial.suggest_float("elite_fraction", *ELITE_FRACTION_RANGE, log=True)
    return params


def convert_planner_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn flat planner parameters into DeMoSAC/DeMoTD3 arguments (``planner_kwargs``, ``replay_buffer_kwargs``)."""
    converted: dict[str, Any] = {}
    planner_kwargs = {key: params[key] for key in PLANNER_PARAMS if key in params}
    if planner_kwargs:
        converted["planner_kwargs"] = planner_kwargs
    buffer_kwargs = {key: params[key] for key in BUFFER_PARAMS if key in params}
    if buffer_kwargs:
        converted["replay_buffer_kwargs"] = buffer_kwargs
    return converted


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ours = {key: value for key, value in params.items() if key in PLANNER_PARAMS + BUFFER_PARAMS}
    theirs = {key: value for key, value in params.items() if key not in ours}
    return theirs, ours


def convert_demorl_params(params: dict[str, Any]) -> dict[str, Any]:
    """Converter for ``--trial-id``: a stored trial's flat parameters -> constructor arguments.

    The SAC/TD3 part goes through rl_zoo3's ``convert_offpolicy_params``, the planner part through
    :func:`convert_planner_params`. (TD3's sampled ``noise_type`` / ``noise_std`` are not turned back into an
    action-noise object by rl_zoo3 either; they are dropped here.)
    """
    from rl_zoo3.hyperparams_opt import convert_offpolicy_params

    theirs, ours = _split(params)
    theirs.pop("noise_type", None)
    theirs.pop("noise_std", None)
    return {**convert_offpolicy_params(theirs), **convert_planner_params(ours)}


def convert_demorl_ars_params(params: dict[str, Any]) -> dict[str, Any]:
    """Converter for ``--trial-id`` of ``demorl_ars``: rl_zoo3's ``convert_ars_params`` plus the planner's."""
    from rl_zoo3.hyperparams_opt import convert_ars_params

    theirs, ours = _split(params)
    return {**convert_ars_params(theirs), **convert_planner_params(ours)}


def _make_sampler(base_sampler_name: str, augmentation: bool = True) -> Callable[[Any, int, int, dict], dict[str, Any]]:
    def sampler(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        from rl_zoo3 import hyperparams_opt

        rl_params = getattr(hyperparams_opt, base_sampler_name)(trial, n_actions, n_envs, additional_args)
        planner_params = convert_planner_params(sample_planner_params(trial, augmentation=augmentation))
        base = _base_hyperparams.get()
        if base is None:
            return {**rl_params, **planner_params}
        # the yml's planner_kwargs etc. survive rl_zoo3's shallow update
        merged = merge_hyperparams(base, planner_params)
        return {**rl_params, **{key: merged[key] for key in planner_params}}

    sampler.__name__ = f"sample_demorl_{base_sampler_name.removeprefix('sample_')}"
    sampler.__doc__ = f"rl_zoo3's ``{base_sampler_name}`` plus :func:`sample_planner_params`."
    return sampler


sample_demorl_sac_params = _make_sampler("sample_sac_params")
sample_demorl_td3_params = _make_sampler("sample_td3_params")
sample_demorl_ars_params = _make_sampler("sample_ars_params", augmentation=False)

SAMPLERS: dict[str, Callable[..., dict[str, Any]]] = {
    "demorl_sac": sample_demorl_sac_params,
    "demorl_td3": sample_demorl_td3_params,
    "demorl_ars": sample_demorl_ars_params,
}
CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "demorl_sac": convert_demorl_params,
    "demorl_td3": convert_demorl_params,
    "demorl_ars": convert_demorl_ars_params,
}
