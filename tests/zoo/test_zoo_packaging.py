"""The wheel ships the start-up hook at the top of site-packages and the RL Zoo hyperparameter files."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "sb3_demo_zoo.pth", "demorl_zoo_hook.py")


def _setuptools_version() -> tuple[int, ...]:
    return tuple(int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])


@pytest.mark.skipif(_setuptools_version() < (70, 1), reason="an offline wheel build needs setuptools >= 70.1")
def test_wheel_contains_the_hook_and_the_hyperparameters(tmp_path: Path) -> None:
    source = tmp_path / "source"  # build a copy, so no build/ folder appears in the checkout
    source.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "zoo_hyperparams", source / "zoo_hyperparams")
    shutil.copytree(REPO_ROOT / "sb3_demo", source / "sb3_demo", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (wheel,) = tmp_path.glob("sb3_demo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("sb3_demo_zoo.pth").decode().strip().startswith("import ")
        for algo in ("demorl_sac", "demorl_td3"):
            packaged = archive.read(f"sb3_demo/zoo/hyperparams/{algo}.yml")
            assert packaged == (REPO_ROOT / "zoo_hyperparams" / f"{algo}.yml").read_bytes()
    assert {"demorl_zoo_hook.py", "sb3_demo/zoo/registration.py", "sb3_demo/train.py"} <= names
