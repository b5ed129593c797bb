"""The start-up hook: rl_zoo3 lists demorl algorithms by itself, costs nothing otherwise, survives a broken sb3_demo."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from zoo_helpers import run_python, subprocess_env

import sb3_demo.zoo
from sb3_demo.zoo import HYPERPARAMS_DIR, ZOO_ALGOS, hyperparams_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_rl_zoo3_train_lists_demorl_algos_without_importing_sb3_demo_by_hand(tmp_path: Path) -> None:
    # a fresh interpreter that imports rl_zoo3.train and nothing of ours
    code = (
        "import sys\n"
        "assert 'sb3_demo' not in sys.modules and 'torch' not in sys.modules\n"
        "import rl_zoo3.train\n"
        "from rl_zoo3.utils import ALGOS\n"
        "from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER, HYPERPARAMS_CONVERTER\n"
        "print(ALGOS['demorl_sac'].__name__, ALGOS['demorl_td3'].__name__, ALGOS['demorl_ars'].__name__)\n"
        "ours = [name for name in ALGOS if name.startswith('demorl_')]\n"
        "print(all(name in HYPERPARAMS_SAMPLER and name in HYPERPARAMS_CONVERTER for name in ours))\n"
    )
    proc = run_python(["-c", code], cwd=tmp_path)
    assert proc.stdout.split() == ["DeMoSAC", "DeMoTD3", "DeMoARS", "True"]
    assert "could not register" not in proc.stderr
    # and argparse offers them as --algo choices
    help_text = run_python(["-m", "rl_zoo3.train", "--help"], cwd=tmp_path).stdout
    choices = re.search(r"--algo \{([^}]*)\}", help_text)
    assert choices is not None, help_text
    assert {"demorl_sac", "demorl_td3", "demorl_ars", "sac", "td3"} <= set(choices.group(1).split(","))


def test_startup_costs_nothing_when_rl_zoo3_is_not_used(tmp_path: Path) -> None:
    proc = run_python(["-X", "importtime", "-c", "pass"], cwd=tmp_path)
    modules = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "demorl_zoo_hook" in modules, "the start-up hook is not installed (reinstall the package)"
    heavy = [m for m in modules if m.split(".")[0] in ("torch", "sb3_demo", "rl_zoo3", "stable_baselines3", "numpy")]
    assert heavy == []


@pytest.mark.parametrize("failure", ["import_error", "registration_error"])
def test_a_broken_sb3_demo_warns_and_rl_zoo3_still_works(tmp_path: Path, failure: str) -> None:
    # a broken sb3_demo shadows the real one
    package = tmp_path / "shadow" / "sb3_demo"
    (package / "zoo").mkdir(parents=True)
    if failure == "import_error":
        (package / "__init__.py").write_text("raise ImportError('simulated broken sb3_demo')\n")
    else:
        (package / "__init__.py").write_text("")
        (package / "zoo" / "__init__.py").write_text("")
        (package / "zoo" / "registration.py").write_text(
            "def register_module(name, module):\n    raise RuntimeError('simulated registration bug')\n"
        )
    code = (
        "import rl_zoo3.train\n"
        "from rl_zoo3.utils import ALGOS\n"
        "from rl_zoo3.exp_manager import ExperimentManager\n"
        "print('sac' in ALGOS, 'demorl_sac' in ALGOS, hasattr(ExperimentManager, '_sb3_demo_patched'))\n"
    )
    env = subprocess_env(PYTHONPATH=str(tmp_path / "shadow"))
    proc = run_python(["-c", code], cwd=tmp_path, env=env)
    assert proc.stdout.split() == ["True", "False", "False"]
    assert proc.stderr.count("sb3_demo could not register its algorithms with rl_zoo3") == 1  # warned once
    assert "simulated" in proc.stderr


def test_hook_can_be_switched_off_and_register_is_explicit(tmp_path: Path) -> None:
    code = (
        "import rl_zoo3.utils as u\n"
        "before = 'demorl_sac' in u.ALGOS\n"
        "import sb3_demo.zoo\n"
        "sb3_demo.zoo.register()\n"
        "sb3_demo.zoo.register()\n"
        "print(before, 'demorl_sac' in u.ALGOS)\n"
    )
    proc = run_python(["-c", code], cwd=tmp_path, env=subprocess_env(SB3_DEMO_ZOO_HOOK="0"))
    assert proc.stdout.split() == ["False", "True"]


def test_experiment_manager_finds_our_yml_and_conf_overrides(tmp_path: Path) -> None:
    sb3_demo.zoo.register()
    from rl_zoo3.exp_manager import ExperimentManager

    def manager(algo: str, config: str | None = None) -> ExperimentManager:
        return ExperimentManager(argparse.Namespace(), algo, "Pendulum-v1", str(tmp_path), config=config)

    assert manager("demorl_sac").config == str(hyperparams_path("demorl_sac"))
    assert manager("demorl_td3").config == str(hyperparams_path("demorl_td3"))
    assert manager("demorl_sac", config="mine.yml").config == "mine.yml"
    assert manager("sac").config.endswith("rl_zoo3/hyperparams/sac.yml")  # other algos untouched
    hyperparams, _ = manager("demorl_sac").read_hyperparameters()
    assert hyperparams["model"] == "ensemble" and hyperparams["model_kwargs"]["deterministic"] is True
    # eval()-ed yml strings can name our replay buffer
    import rl_zoo3.exp_manager as exp_manager_module

    from sb3_demo import AugmentedReplayBuffer

    assert eval("AugmentedReplayBuffer", vars(exp_manager_module)) is AugmentedReplayBuffer


def test_hyperparams_path_rejects_unknown_algos() -> None:
    with pytest.raises(ValueError, match="demorl_sac"):
        hyperparams_path("sac")


@pytest.mark.parametrize("algo", sorted(ZOO_ALGOS))
def test_the_package_reads_the_repositorys_yml_files(algo: str) -> None:
    path = hyperparams_path(algo)
    assert (REPO_ROOT / "zoo_hyperparams" / f"{algo}.yml").read_text() == path.read_text()
    assert path.parent == HYPERPARAMS_DIR


def test_one_broken_algorithm_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    from sb3_demo.zoo import registration

    monkeypatch.setitem(registration.ZOO_ALGOS, "demorl_broken", "sb3_demo.no_such_module:Nothing")
    algos: dict[str, type] = {}
    with pytest.warns(RuntimeWarning, match="could not register demorl_broken"):
        registration.register_algorithms(algos)
    assert [algos[name].__name__ for name in ("demorl_sac", "demorl_td3", "demorl_ars")] == [
        "DeMoSAC",
        "DeMoTD3",
        "DeMoARS",
    ]
    assert "demorl_broken" not in algos
    with pytest.raises(ValueError, match="module_name must be one of"):
        registration.register_module("rl_zoo3.enjoy", None)
