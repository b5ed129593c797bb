"""Shared test set-up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch as th


@pytest.fixture(autouse=True, scope="session")
def sb3_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """SB3's ``learn()`` creates an (empty) log folder under the system temp dir on every call unless
    ``SB3_LOGDIR`` names one: point it at pytest's temp dir, so the test run leaves nothing behind."""
    previous = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3_logs"))
    yield
    if previous is None:
        del os.environ["SB3_LOGDIR"]
    else:
        os.environ["SB3_LOGDIR"] = previous


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Small matrices gain nothing from threads, and the test machines are shared: use one, then restore.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)
