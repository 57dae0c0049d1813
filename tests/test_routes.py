"""The evaluation data are the same bits on every machine: regenerated under other linear-algebra routes.

Each route is a fresh process whose environment selects another code path on this machine, the way
another CPU or another build would: MKL's conditional-numerical-reproducibility branches
(`MKL_CBWR`), thread counts, OpenBLAS kernels (`OPENBLAS_CORETYPE`, NumPy's BLAS), NumPy without its
SIMD dispatch (`NPY_DISABLE_CPU_FEATURES`) and torch's scalar kernels (`ATEN_CPU_CAPABILITY`). Every
route must reproduce every pinned fingerprint (`pytest -m slow`); the default run regenerates one task of each
kind of data under one route of each kind (the default route itself: tests/test_fingerprints.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import pytest

from iclbench.tasks import FINGERPRINTS

ROUTES: dict[str, dict[str, str]] = {
    "default": {},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
    "mkl-avx2": {"MKL_CBWR": "AVX2"},
    "mkl-avx512": {"MKL_CBWR": "AVX512"},
    "1-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "2-threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
    "openblas-sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "openblas-prescott": {"OPENBLAS_CORETYPE": "Prescott"},
    "numpy-baseline-simd": {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
    "torch-scalar-kernels": {"ATEN_CPU_CAPABILITY": "default"},
}

QUICK_ROUTES = ("mkl-compatible", "openblas-prescott", "numpy-baseline-simd", "torch-scalar-kernels")
"""The default run's routes: one of each kind of code path (MKL, OpenBLAS, NumPy's SIMD, torch's kernels)."""
QUICK_TASKS = ("linear/kappa100", "logistic/kappa1", "lasso/shift0.5", "kernel/exp", "kernel/relu", "ar/noisy",
               "select/noise-mix", "select/reg-cls", "garg/sparse-linear", "garg/decision-tree", "garg/relu2nn",
               "garg/quadratic")
"""The default run's tasks: one of each way the data are made (a Haar rotation and spectrum, a Newton solve, a
mixed matrix, the portable exp, arccos and Cholesky, a recurrence with noise, a noise level drawn per prompt, a
Newton solve on the prompts a draw makes classification prompts, and Garg et al.'s classes: a support from sorted
uniforms, integer draws and comparisons, a product of matrices with ReLU, squares); the slow run takes every task."""

SCRIPT = """
import json, sys
from iclbench import tasks
names = sys.argv[1:] or list(tasks.TASKS)
print(json.dumps({name: tasks.get(name).generate().fingerprint() for name in names}))
"""


def _fingerprints(env: dict[str, str], names: tuple[str, ...] = ()) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MKL_", "OPENBLAS_", "NPY_", "ATEN_"))}
    full.update(env, ICLBENCH_CACHE="off")
    out = subprocess.run([sys.executable, "-c", SCRIPT, *names], env=full, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _check(route: str, got: dict[str, str], names: Iterable[str]) -> None:
    mismatched = sorted(name for name in names if got.get(name) != FINGERPRINTS[name])
    assert not mismatched, f"{route} ({ROUTES[route]}): data differ from the pinned fingerprints for {mismatched}"
    assert set(got) == set(names)


@pytest.fixture(scope="module")
def quick() -> dict[str, dict[str, str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(QUICK_ROUTES, pool.map(lambda r: _fingerprints(ROUTES[r], QUICK_TASKS), QUICK_ROUTES)))


@pytest.mark.parametrize("route", QUICK_ROUTES)
def test_each_kind_of_route_reproduces_the_pinned_fingerprints(quick: dict[str, dict[str, str]], route: str) -> None:
    _check(route, quick[route], QUICK_TASKS)


@pytest.fixture(scope="module")
def by_route() -> dict[str, dict[str, str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(ROUTES, pool.map(_fingerprints, ROUTES.values())))


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_every_route_reproduces_the_pinned_fingerprints(by_route: dict[str, dict[str, str]], route: str) -> None:
    _check(route, by_route[route], FINGERPRINTS)
