"""``import sb3_demo`` registers the leg's gymnasium ids, cheaply and idempotently, for gym.make and RL Zoo."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym

import sb3_demo

REPO = Path(__file__).resolve().parents[2]


def run(code: str, *args: str, cwd: Path | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args, *(["-c", code] if code else [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_import_sb3_demo_registers_the_ids_without_importing_mujoco_or_the_env_modules() -> None:
    code = (
        "import sys, gymnasium as gym, sb3_demo\n"
        "loaded = [m for m in ('mujoco', 'torch', 'sb3_demo.envs.leg2r_env', 'sb3_demo.envs.leg2r_plant') "
        "if m in sys.modules]\n"
        "print(loaded, gym.spec('sb3_demo/Leg2R-v0').kwargs, gym.spec('sb3_demo/Leg2RSim-v0').kwargs)\n"
    )
    assert run(code).stdout.strip() == "[] {'realtime': True} {'realtime': False}"


def test_gym_make_after_import_sb3_demo_alone() -> None:
    code = (
        "import gymnasium as gym, sb3_demo\n"
        "for env_id in ('sb3_demo/Leg2RSim-v0', 'sb3_demo/Leg2R-v0'):\n"
        "    env = gym.make(env_id)\n"
        "    print(env.spec.id, type(env.unwrapped).__name__, env.observation_space.shape)\n"
        "    env.close()\n"
    )
    lines = run(code).stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["sb3_demo/Leg2RSim-v0", "Leg2REnv"],
        ["sb3_demo/Leg2R-v0", "Leg2REnv"],
    ]


def test_registering_twice_neither_warns_nor_fails() -> None:
    specs = {env_id: gym.spec(env_id) for env_id in sb3_demo.envs.ENV_IDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(sb3_demo.envs)
    assert {env_id: gym.spec(env_id) for env_id in sb3_demo.envs.ENV_IDS} == specs


def test_rl_zoo3_gym_packages_sb3_demo_trains_on_the_simulated_leg(tmp_path: Path) -> None:
    args = ["-m", "rl_zoo3.train", "--algo", "sac", "--env", "sb3_demo/Leg2RSim-v0", "--gym-packages", "sb3_demo"]
    args += ["-n", "64", "--num-threads", "1", "--eval-freq", "-1", "--seed", "0", "-f", str(tmp_path / "logs")]
    args += ["-params", "learning_starts:32", "batch_size:16"]
    run("", *args, cwd=tmp_path, timeout=300.0)
    saved = list((tmp_path / "logs" / "sac").rglob("*.zip"))
    assert saved, "rl_zoo3 saved no model"
