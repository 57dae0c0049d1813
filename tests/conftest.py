"""Shared fixtures: a private evaluation-set cache for the test session (shared by its xdist workers), and the
sizes of timed tests; the order of the modules (the longest first) and the memory each test leaves behind."""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

from iclbench import cache


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test session shared by its xdist workers (each worker has a base folder of its own)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) across this session's xdist workers."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the tests' disk cache apart from the user's (`~/.cache/iclbench`); the session's workers share it
    (a cached set is written atomically and verified on every load)."""
    folder = _shared(tmp_path_factory) / "iclbench-cache"
    folder.mkdir(exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("ICLBENCH_CACHE", str(folder))
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


FIRST = ("test_workflows.py", "test_kernel_paths.py", "test_distributed.py", "test_committed.py", "test_routes.py",
         "test_leaderboard.py")
"""The modules that take longest (tens of seconds each, mostly in fresh processes), run first: xdist hands out whole
modules (`--dist loadfile`, without its reordering by test count, which would put these last), and one of them
started last would leave the other workers idle until it ends."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules of `FIRST` first, in its order; the others after them in the order given (pytest-randomly's)."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or None)
except (OSError, TypeError):  # no C library to load by that name (Windows)
    _LIBC = None
M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter: blocks from this size up are mapped on their own and unmapped when freed."""
if hasattr(_LIBC, "mallopt"):
    # glibc raises this threshold (up to 32 MiB) each time a mapped block is freed, after which temporaries of
    # that size come from the heap and are kept, scattered, when freed: a worker that runs hundreds of tests would
    # hold the sum of the largest temporaries it has seen. A fixed threshold turns the raising off.
    _LIBC.mallopt(M_MMAP_THRESHOLD, 4 << 20)


def _release_free_memory() -> None:
    """Hand the memory that the C allocator holds free back to the system (glibc's `malloc_trim`; elsewhere nothing)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


@pytest.fixture(autouse=True)
def _sets_forgotten() -> None:
    """Each test starts with no evaluation set in memory (those it uses come from the cache folder) and leaves the
    memory it freed to the system."""
    yield
    cache.clear_memory()
    _release_free_memory()


@pytest.fixture(scope="session")
def session_fingerprints(_private_cache: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The fingerprint of every evaluation set as this session generates it, once per set.

    In a separate process, which writes each set that matches its pinned fingerprint to the
    session's cache folder, where the tests' `cache.eval_set` then reads it (sets the session
    has already generated are read from there too): the tests' own process never holds more
    than the sets it uses. The first xdist worker to ask generates them; the others read its answer.
    """
    shared = _shared(tmp_path_factory)
    answer = shared / "fingerprints.json"
    with _locked(shared / "fingerprints.lock"):
        if not answer.exists():
            out = subprocess.run([sys.executable, "-c", GENERATE], capture_output=True, text=True, check=True)
            answer.write_text(out.stdout)
    return json.loads(answer.read_text())


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
