"""RL Zoo (rl_zoo3) integration: ``python -m rl_zoo3.train --algo demorl_sac`` on an unmodified rl-zoo3.

rl-zoo3 has no plugin mechanism, so sb3_demo ships a start-up hook (``sb3_demo_zoo.pth`` + the tiny
``demorl_zoo_hook`` module) that waits for rl_zoo3 to be imported and then runs
:mod:`sb3_demo.zoo.registration`: the demorl algorithms are added to ``rl_zoo3.utils.ALGOS``, to the
Optuna samplers/converters of ``rl_zoo3.hyperparams_opt``, and ``ExperimentManager`` finds their default
hyperparameter files in the repository's ``zoo_hyperparams/{algo}.yml`` (which a wheel carries as
``sb3_demo/zoo/hyperparams/``). ``-conf`` still overrides.

Without the hook (e.g. ``SB3_DEMO_ZOO_HOOK=0``), call :func:`register` yourself, or use
``python -m sb3_demo.train`` (the same command line as ``rl_zoo3.train``).

This module imports neither rl_zoo3 nor torch; :func:`register` does.
"""

from __future__ import annotations

from pathlib import Path

# A wheel (``pip install .``) carries the repository's zoo_hyperparams/*.yml in sb3_demo/zoo/hyperparams/ (copied
# by setup.py's build step); a source checkout or an editable install reads the repository's zoo_hyperparams/.
_PACKAGED_DIR = Path(__file__).resolve().parent / "hyperparams"
_SOURCE_DIR = Path(__file__).resolve().parents[2] / "zoo_hyperparams"
HYPERPARAMS_DIR = _PACKAGED_DIR if _PACKAGED_DIR.is_dir() else _SOURCE_DIR

# rl_zoo3 algorithm name -> "module:Class". Extension point: a new algorithm needs one line here, a
# hyperparameter file ``zoo_hyperparams/<name>.yml`` and (for -optimize) an entry in ``optimize.SAMPLERS``.
ZOO_ALGOS: dict[str, str] = {
    "demorl_sac": "sb3_demo.algorithms:DeMoSAC",
    "demorl_td3": "sb3_demo.algorithms:DeMoTD3",
    "demorl_ars": "sb3_demo.ars:DeMoARS",
}


def hyperparams_path(algo: str) -> Path:
    """The default hyperparameter file of one of our rl_zoo3 algorithms.

    :param algo: a key of :data:`ZOO_ALGOS` (e.g. ``"demorl_sac"``)
    :raises ValueError: for an algorithm sb3_demo does not register
    """
    if algo not in ZOO_ALGOS:
        raise ValueError(f"algo must be one of {sorted(ZOO_ALGOS)}, got {algo!r}")
    return HYPERPARAMS_DIR / f"{algo}.yml"


def register() -> None:
    """Register the demorl algorithms with rl_zoo3 now (idempotent; the start-up hook normally does it)."""
    from sb3_demo.zoo.registration import register_all

    register_all()


__all__ = ["HYPERPARAMS_DIR", "ZOO_ALGOS", "hyperparams_path", "register"]
