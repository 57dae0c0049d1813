"""The numerical tests pass on torch's other CPU kernel paths, as they must on a machine with other vector units.

torch picks its CPU kernels by the processor's capability (AVX-512, AVX2, or plain scalar code); a test that
holds on one path only (a bitwise equality between two different computations, a tolerance below one path's
round-off) fails on another machine. `ATEN_CPU_CAPABILITY` selects a lower path on this one, so the model,
metric and solver tests run again under each lower path this processor has, in a fresh process: the scalar path
(`default`, the farthest from every vector unit) by default, the paths between with `pytest -m slow`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("test_models.py", "test_causal_lsa.py", "test_vector_labels.py", "test_runner.py", "test_baselines_ar.py",
           "test_baselines_oracles.py", "test_baselines_proximal.py")
"""Tests of tensor code whose results could depend on the kernel path: models, metrics and solvers."""
LOWER = {"AVX512": ("avx2", "default"), "AVX2": ("default",)}
"""The capabilities below each one torch reports (`torch.backends.cpu.get_cpu_capability()`)."""


def _lower_paths() -> list:
    here = torch.backends.cpu.get_cpu_capability()
    paths = LOWER.get(here, ("default",) if here != "DEFAULT" else ())
    return [p if p == "default" else pytest.param(p, marks=pytest.mark.slow) for p in paths]


@pytest.mark.parametrize("capability", _lower_paths())
def test_numerical_tests_pass_on_a_lower_kernel_path(capability: str, tmp_path: Path) -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == capability.upper()  # the path is really taken
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", "no:randomly", "--basetemp", str(tmp_path / "t"),
         *(str(ROOT / "tests" / m) for m in MODULES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
