"""Build step for the RL Zoo integration; everything else is configured in pyproject.toml.

Two things cannot be package data:

- ``sb3_demo_zoo.pth`` (the start-up hook) must sit directly in site-packages;
- ``zoo_hyperparams/*.yml`` live at the repository's top level, where RL Zoo users look for them.

A ``build`` sub-command puts them in place:

- ``pip install .`` (a wheel): the ``.pth`` at the top of the build directory (which becomes site-packages) and
  the yml files in ``sb3_demo/zoo/hyperparams/``, where :mod:`sb3_demo.zoo` looks first;
- ``pip install -e .`` (PEP 660 editable wheel): only the ``.pth``, at the top of the editable wheel (setuptools
  points ``install_lib`` there); :mod:`sb3_demo.zoo` then reads the checkout's ``zoo_hyperparams/``.

The ``.pth`` imports the top-level module ``demorl_zoo_hook`` (a ``py-module`` of the distribution, so it is
importable in both kinds of install).
"""

from __future__ import annotations

import glob
import os

from setuptools import Command, setup
from setuptools.command.build import build

HERE = os.path.dirname(os.path.abspath(__file__))
PTH_FILE = "sb3_demo_zoo.pth"
HYPERPARAMS_SOURCE = "zoo_hyperparams"
HYPERPARAMS_TARGET = os.path.join("sb3_demo", "zoo", "hyperparams")


class build_zoo_files(Command):
    """Copy the start-up hook's ``.pth`` and the RL Zoo hyperparameter files into the (editable) wheel."""

    description = "install the RL Zoo start-up hook (.pth) and hyperparameter files"
    user_options: list = []
    editable_mode = False  # set by setuptools' editable_wheel

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self._outputs: list[str] = []

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self) -> None:
        if self.editable_mode:
            # editable_wheel points install_lib at the unpacked editable wheel, whose top level is site-packages
            self._copy(PTH_FILE, self.get_finalized_command("install").install_lib)
            return
        assert self.build_lib is not None
        self._copy(PTH_FILE, self.build_lib)
        for path in sorted(glob.glob(os.path.join(HERE, HYPERPARAMS_SOURCE, "*.yml"))):
            self._copy(os.path.relpath(path, HERE), os.path.join(self.build_lib, HYPERPARAMS_TARGET))

    def _copy(self, relative_source: str, target_dir: str) -> None:
        self.mkpath(target_dir)
        target = os.path.join(target_dir, os.path.basename(relative_source))
        self.copy_file(os.path.join(HERE, relative_source), target, preserve_mode=False)
        self._outputs.append(target)

    def get_outputs(self) -> list[str]:
        return list(self._outputs)

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return [PTH_FILE, *sorted(glob.glob(os.path.join(HYPERPARAMS_SOURCE, "*.yml")))]


class build_with_zoo_files(build):
    sub_commands = [*build.sub_commands, ("build_zoo_files", None)]


setup(cmdclass={"build": build_with_zoo_files, "build_zoo_files": build_zoo_files})
