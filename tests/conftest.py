"""Shared fixtures: a private evaluation-set cache for the test session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests' disk cache apart from the user's (`~/.cache/iclbench`)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ICLBENCH_CACHE", str(tmp_path_factory.mktemp("iclbench-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def one_thread() -> None:
    """Run a module's tiny-tensor tests on one thread (fastest for them, above all on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
