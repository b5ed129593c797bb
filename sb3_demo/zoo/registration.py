"""Add the demorl algorithms to an unmodified rl_zoo3, one rl_zoo3 module at a time.

The start-up hook (``demorl_zoo_hook``) calls :func:`register_module` right after each of these rl_zoo3
modules has been executed:

- ``rl_zoo3.utils``: ``ALGOS["demorl_sac"] = DeMoSAC`` (and the others of :data:`~sb3_demo.zoo.ZOO_ALGOS`),
  so ``--algo demorl_sac`` is among argparse's choices of train/enjoy/record_video;
- ``rl_zoo3.hyperparams_opt``: the Optuna samplers and converters used by ``-optimize`` and ``--trial-id``;
- ``rl_zoo3.exp_manager``: ``ExperimentManager`` looks up ``hyperparams/{algo}.yml`` inside rl_zoo3; for our
  algorithms (only when that file does not exist there and no ``-conf`` was given) it reads our file instead.
  Names a yml can use in ``replay_buffer_class``/``policy_kwargs`` strings (``AugmentedReplayBuffer``,
  ``sb3_demo``) are added to the module's globals, where rl_zoo3 ``eval``-s those strings. ``objective`` and
  ``read_hyperparameters`` are wrapped, for our algorithms only, so that sampled planner settings are merged
  into the yml's ``planner_kwargs`` / ``replay_buffer_kwargs`` instead of replacing them.

Everything is idempotent: :func:`register_all` (used by ``python -m sb3_demo.train`` and by
:func:`sb3_demo.zoo.register`) may run after the hook has.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sb3_demo.zoo import ZOO_ALGOS, hyperparams_path

_PATCHED = "_sb3_demo_patched"


def algorithm_class(algo: str) -> type:
    """The class registered as ``algo`` (imported on demand)."""
    module_name, _, class_name = ZOO_ALGOS[algo].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def register_algorithms(algos: dict[str, Any]) -> None:
    """Add our algorithms to rl_zoo3's ``ALGOS`` dict (name -> class).

    One that cannot be imported is left out with a ``RuntimeWarning``; the others are still registered.
    """
    failures = []
    for name in ZOO_ALGOS:
        try:
            algos[name] = algorithm_class(name)
        except Exception as exc:  # one broken algorithm must not take the others (or rl_zoo3) down
            failures.append(f"{name} ({type(exc).__name__}: {exc})")
    if failures:
        warnings.warn(
            f"sb3_demo could not register {', '.join(failures)} with rl_zoo3; the other demorl algorithms work",
            RuntimeWarning,
            stacklevel=2,
        )


def register_optimizers(samplers: dict[str, Callable], converters: dict[str, Callable]) -> None:
    """Add our Optuna samplers and converters to rl_zoo3's ``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``."""
    from sb3_demo.zoo.optimize import CONVERTERS, SAMPLERS

    for name in ZOO_ALGOS:
        if name in SAMPLERS:
            samplers[name] = SAMPLERS[name]
            converters[name] = CONVERTERS[name]


def rl_zoo3_default_configs(exp_manager_module: Any, algo: str) -> set[str]:
    """The paths ``ExperimentManager`` uses for ``algo`` when no ``-conf`` is given (package or repository layout)."""
    here = Path(exp_manager_module.__file__).parent
    return {str(here / f"hyperparams/{algo}.yml"), str(here.parent / f"hyperparams/{algo}.yml")}


def patch_experiment_manager(exp_manager_module: Any) -> None:
    """Point ``ExperimentManager`` at our hyperparameter files and merge sampled planner settings (our algos only)."""
    import sb3_demo
    from sb3_demo.buffers import AugmentedReplayBuffer
    from sb3_demo.zoo.optimize import current_base_hyperparams, merge_hyperparams

    # rl_zoo3 eval()-s policy_kwargs / replay_buffer_class / replay_buffer_kwargs strings in this module's globals
    exp_manager_module.AugmentedReplayBuffer = AugmentedReplayBuffer
    exp_manager_module.sb3_demo = sb3_demo

    manager = exp_manager_module.ExperimentManager
    if getattr(manager, _PATCHED, False):
        return

    original_init = manager.__init__
    original_objective = manager.objective
    original_read = manager.read_hyperparameters

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if self.algo in ZOO_ALGOS and self.config in rl_zoo3_default_configs(exp_manager_module, self.algo):
            if not Path(self.config).exists():  # rl_zoo3 has no file for it: use ours (``-conf`` still wins)
                self.config = str(hyperparams_path(self.algo))

    @functools.wraps(original_objective)
    def objective(self: Any, trial: Any) -> float:
        if self.algo not in ZOO_ALGOS:
            return original_objective(self, trial)
        with current_base_hyperparams(self._hyperparams):
            return original_objective(self, trial)

    @functools.wraps(original_read)
    def read_hyperparameters(self: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.algo not in ZOO_ALGOS or not (self.storage and self.study_name and self.trial_id is not None):
            return original_read(self)
        # rl_zoo3 would replace the yml's planner_kwargs by the trial's (and skip --trial-id 0); merge them instead
        trial_id = self.trial_id
        self.trial_id = None
        try:
            hyperparams, _ = original_read(self)
        finally:
            self.trial_id = trial_id
        trial_params = self.load_trial(self.storage, self.study_name, trial_id)
        print(f"Merging the hyperparameters of trial {trial_id} of study {self.study_name!r}: {trial_params}")
        hyperparams = merge_hyperparams(hyperparams, trial_params)
        if self.custom_hyperparams is not None:  # the command line has the last word, as in rl_zoo3
            hyperparams.update(self.custom_hyperparams)
        saved_hyperparams = OrderedDict([(key, hyperparams[key]) for key in sorted(hyperparams)])
        return hyperparams, saved_hyperparams

    manager.__init__ = __init__
    manager.objective = objective
    manager.read_hyperparameters = read_hyperparameters
    setattr(manager, _PATCHED, True)


_STEPS: dict[str, Callable[[Any], None]] = {
    "rl_zoo3.utils": lambda module: register_algorithms(module.ALGOS),
    "rl_zoo3.hyperparams_opt": lambda module: register_optimizers(
        module.HYPERPARAMS_SAMPLER, module.HYPERPARAMS_CONVERTER
    ),
    "rl_zoo3.exp_manager": patch_experiment_manager,
}


def register_module(module_name: str, module: Any) -> None:
    """The registration step for one freshly imported rl_zoo3 module (called by the start-up hook).

    :param module_name: ``"rl_zoo3.utils"``, ``"rl_zoo3.hyperparams_opt"`` or ``"rl_zoo3.exp_manager"``
    :param module: that module
    :raises ValueError: for another module name
    """
    step = _STEPS.get(module_name)
    if step is None:
        raise ValueError(f"module_name must be one of {list(_STEPS)}, got {module_name!r}")
    step(module)


def register_all() -> None:
    """Import rl_zoo3's train-time modules and run every registration step (idempotent)."""
    for module_name in _STEPS:
        register_module(module_name, importlib.import_module(module_name))
