"""zoo_hyperparams/*.yml: every entry loads as RL Zoo loads it, builds its algorithm, and says what was measured."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import yaml

from sb3_demo.zoo import ZOO_ALGOS

YML_DIR = Path(__file__).resolve().parents[2] / "zoo_hyperparams"
YML_FILES = sorted(YML_DIR.glob("*.yml"))
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
COMMAND = re.compile(r"^#\s+python (benchmarks/\S+\.py|-m \S+) ", re.MULTILINE)
# RL Zoo's keys that are not constructor arguments of the algorithm
ZOO_ONLY_KEYS = ("n_timesteps", "n_envs", "normalize", "noise_type", "noise_std", "vec_env_wrapper", "callback")


def entries(path: Path) -> dict[str, Any]:
    table = yaml.safe_load(path.read_text())  # what rl_zoo3's ExperimentManager does
    assert isinstance(table, dict) and table, f"{path.name} has no entries"
    return table


def comment_above(path: Path, key: str) -> str:
    lines = path.read_text().splitlines()
    index = (
        lines.index(f"{key}:")
        if f"{key}:" in lines
        else next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
    )
    return "\n".join(reversed(list(itertools.takewhile(lambda line: line.startswith("#"), reversed(lines[:index])))))


def all_entries() -> list[tuple[Path, str]]:
    return [(path, key) for path in YML_FILES for key in entries(path)]


def test_the_yml_files_are_the_ones_this_test_knows() -> None:
    assert {path.stem for path in YML_FILES} >= set(ZOO_ALGOS)


@pytest.mark.parametrize(("path", "key"), all_entries(), ids=lambda x: getattr(x, "name", x))
def test_every_entry_states_what_was_measured(path: Path, key: str) -> None:
    comment = comment_above(path, key)
    assert comment.startswith("# tuned"), f"{path.name}:{key}: status comment must start with '# tuned'"
    assert DATE.search(comment), f"{path.name}:{key}: no date of the measurement"
    assert "seed" in comment, f"{path.name}:{key}: no seeds"
    assert re.search(r"\d", comment.split("\n", 1)[0] + comment), f"{path.name}:{key}: no measured number"
    if key == "default":
        return  # its comment names the entries it was measured as (next test)
    assert COMMAND.search(comment), f"{path.name}:{key}: no command that reproduces the number"


@pytest.mark.parametrize("path", YML_FILES, ids=lambda p: p.name)
def test_a_default_entry_is_a_setting_measured_on_two_envs(path: Path) -> None:
    table = entries(path)
    if "default" not in table:
        return
    # the default was measured on every env entry with exactly its settings (the budget aside), and on those
    # whose own settings won there and whose comment gives the default's number there; two or more envs
    settings = {k: v for k, v in table["default"].items() if k != "n_timesteps"}
    measured = [
        key
        for key, entry in table.items()
        if key != "default"
        and (
            {k: v for k, v in entry.items() if k != "n_timesteps"} == settings
            or re.search(r"^# the default's settings here: .*\d", comment_above(path, key), re.MULTILINE)
        )
    ]
    assert len(measured) >= 2, f"{path.name}: default measured on {measured} only"
    for key in measured:
        assert key in comment_above(path, "default")


def constructor_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in entry.items() if k not in ZOO_ONLY_KEYS}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"])  # RL Zoo's convention
    return kwargs


@pytest.mark.parametrize(
    ("algo", "env_id"),
    [(algo, key) for algo in sorted(ZOO_ALGOS) for key in entries(YML_DIR / f"{algo}.yml") if key != "default"],
)
def test_every_demorl_entry_builds_its_algorithm(algo: str, env_id: str) -> None:
    from sb3_demo.zoo.registration import algorithm_class

    entry = entries(YML_DIR / f"{algo}.yml")[env_id]
    assert entry["n_timesteps"] > 0
    env = gym.make(env_id)
    try:
        model = algorithm_class(algo)(env=env, device="cpu", seed=0, **constructor_kwargs(entry))
        assert model.model_kwargs == entry.get("model_kwargs", {})
        for key, value in entry["planner_kwargs"].items():
            assert model.planner_kwargs[key] == value
    finally:
        env.close()
