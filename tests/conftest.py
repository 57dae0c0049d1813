"""Shared fixtures: a private evaluation-set cache for the test session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests' disk cache apart from the user's (`~/.cache/iclbench`)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ICLBENCH_CACHE", str(tmp_path_factory.mktemp("iclbench-cache")))
    yield
    mp.undo()
