"""The package's public surface: lazy exports that resolve, and a light top-level import."""

import subprocess
import sys

import sb3_demo


def test_all_matches_exports_and_every_name_resolves() -> None:
    assert set(sb3_demo.__all__) == {*sb3_demo._EXPORTS, "__version__"}
    for name in sb3_demo._EXPORTS:
        assert getattr(sb3_demo, name).__name__ == name


def test_planner_import_does_not_pull_in_sb3_mujoco_or_the_envs() -> None:
    code = (
        "import sys, sb3_demo; sb3_demo.DMDMPCPlanner; "
        "print(*(m in sys.modules for m in ('stable_baselines3', 'mujoco', 'sb3_demo.envs.leg2r_env')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]
