"""Start-up hook that registers sb3_demo's algorithms with RL Zoo (rl_zoo3) when, and only when, rl_zoo3 is used.

``sb3_demo_zoo.pth`` (installed next to the packages by ``pip install`` and ``pip install -e``) imports this
module at interpreter start-up. It only puts an import watcher on ``sys.meta_path``: nothing else is imported,
so a Python process that never imports rl_zoo3 pays a few microseconds and never loads torch or sb3_demo.

When one of the watched rl_zoo3 modules has finished executing, ``sb3_demo.zoo.registration`` is imported and
adds the demorl algorithms to it (``ALGOS``, the Optuna samplers/converters, the hyperparameter lookup of
``ExperimentManager``). Any error there becomes a ``RuntimeWarning``: a broken sb3_demo never breaks rl_zoo3.

Set ``SB3_DEMO_ZOO_HOOK=0`` to switch the hook off.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # no `import typing` at start-up; mypy and ruff read this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# rl_zoo3 modules whose import triggers a registration step, in the order rl_zoo3 imports them
WATCHED_MODULES = ("rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager")
DISABLE_VARIABLE = "SB3_DEMO_ZOO_HOOK"

_failed = False


def _register(module_name: str, module: ModuleType) -> None:
    """Run sb3_demo's registration step for a freshly imported rl_zoo3 module; warn instead of raising."""
    global _failed
    if _failed:
        return
    try:
        from sb3_demo.zoo.registration import register_module

        register_module(module_name, module)
    except Exception as exc:  # a broken sb3_demo must never break rl_zoo3
        _failed = True
        import warnings

        warnings.warn(
            f"sb3_demo could not register its algorithms with rl_zoo3 ({type(exc).__name__}: {exc}); "
            f"rl_zoo3 works without demorl_sac/demorl_td3. Set {DISABLE_VARIABLE}=0 to skip this hook.",
            RuntimeWarning,
            stacklevel=2,
        )


class _PostImportLoader:
    """Wraps a module's loader and runs :func:`_register` once the module has been executed."""

    def __init__(self, loader: Loader, module_name: str) -> None:
        self._loader = loader
        self._module_name = module_name

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _register(self._module_name, module)

    def __getattr__(self, name: str) -> object:  # get_data, get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class RLZooImportWatcher:
    """A ``sys.meta_path`` finder that wraps the loaders of :data:`WATCHED_MODULES` (and finds nothing itself)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in WATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, RLZooImportWatcher):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec: ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PostImportLoader(spec.loader, fullname)  # type: ignore[assignment]  # duck-typed Loader
        return spec


def install() -> None:
    """Put the watcher first on ``sys.meta_path`` (once), unless ``SB3_DEMO_ZOO_HOOK=0``."""
    if os.environ.get(DISABLE_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if any(isinstance(finder, RLZooImportWatcher) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, RLZooImportWatcher())


install()
