"""Shared fixtures: a private evaluation-set cache for the test session, and the sizes of timed tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from iclbench import cache


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests' disk cache apart from the user's (`~/.cache/iclbench`)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ICLBENCH_CACHE", str(tmp_path_factory.mktemp("iclbench-cache")))
    yield
    mp.undo()


GENERATE = """
import json
from iclbench import cache, tasks
fingerprints = {}
for name, task in tasks.TASKS.items():
    fingerprints[name] = cache.eval_set(task)[1]
    cache.clear_memory()
print(json.dumps(fingerprints))
"""


@pytest.fixture(autouse=True)
def _sets_forgotten() -> None:
    """Each test starts with no evaluation set in memory: those it uses come from the cache folder."""
    yield
    cache.clear_memory()


@pytest.fixture(scope="session")
def session_fingerprints(_private_cache: None) -> dict[str, str]:
    """The fingerprint of every evaluation set as this session generates it, once per set.

    In a separate process, which writes each set that matches its pinned fingerprint to the
    session's cache folder, where the tests' `cache.eval_set` then reads it (sets the session
    has already generated are read from there too): the tests' own process never holds more
    than the sets it uses.
    """
    out = subprocess.run([sys.executable, "-c", GENERATE], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def timed(request: pytest.FixtureRequest) -> bool:
    """Whether pytest-benchmark takes timings: only with `--benchmark-enable` (pyproject's options disable it).

    Timed tests run at full size; the default run makes the same checks on a sample, and
    `python benchmarks/baselines.py` repeats the full-size ones.
    """
    config = request.config
    return not config.getoption("benchmark_disable") or config.getoption("benchmark_enable")


@pytest.fixture(scope="module")
def one_thread() -> None:
    """Run a module's tiny-tensor tests on one thread (fastest for them, above all on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
