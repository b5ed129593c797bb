"""Build step that ships ``sb3_demo_zoo.pth`` (the RL Zoo start-up hook) at the top of site-packages.

Everything else is configured in pyproject.toml. A ``.pth`` file must sit directly in site-packages, which
package data cannot do, so a ``build`` sub-command copies it:

- ``pip install .`` (a wheel): into the build directory, whose top level becomes site-packages;
- ``pip install -e .`` (PEP 660 editable wheel): setuptools points ``install_lib`` at the editable wheel's
  unpacked tree, whose top level likewise becomes site-packages.

The ``.pth`` imports the top-level module ``demorl_zoo_hook`` (see its docstring), which is a ``py-module``
of the distribution, so it is importable in both kinds of install.
"""

from __future__ import annotations

import os

from setuptools import Command, setup
from setuptools.command.build import build

PTH_FILE = "sb3_demo_zoo.pth"


class build_zoo_hook(Command):
    """Copy ``sb3_demo_zoo.pth`` to the top level of the (editable) wheel."""

    description = "install the RL Zoo start-up hook (.pth)"
    user_options: list = []
    editable_mode = False  # set by setuptools' editable_wheel

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self._outputs: list[str] = []

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def _target_dir(self) -> str:
        if self.editable_mode:
            # editable_wheel sets install_lib to the unpacked editable wheel
            return self.get_finalized_command("install").install_lib
        assert self.build_lib is not None
        return self.build_lib

    def run(self) -> None:
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH_FILE)
        target_dir = self._target_dir()
        self.mkpath(target_dir)
        target = os.path.join(target_dir, PTH_FILE)
        self.copy_file(source, target, preserve_mode=False)
        self._outputs = [target]

    def get_outputs(self) -> list[str]:
        return list(self._outputs)

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return [PTH_FILE]


class build_with_zoo_hook(build):
    sub_commands = [*build.sub_commands, ("build_zoo_hook", None)]


setup(cmdclass={"build": build_with_zoo_hook, "build_zoo_hook": build_zoo_hook})
