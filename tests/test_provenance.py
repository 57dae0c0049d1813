"""Provenance in results, and the NumPy random streams the suite's data are drawn from."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import torch

from iclbench import tasks
from iclbench.plugins import load_model
from iclbench.provenance import provenance
from iclbench.runner import RunConfig, run

ROOT = Path(__file__).resolve().parents[1]


def test_numpy_streams_are_the_ones_the_suite_was_drawn_from() -> None:
    """The first draws of the stream of a task seed (linear/kappa1's), as NumPy produced them for suite data.

    If this fails, this NumPy draws other numbers from `Generator(PCG64(SeedSequence(...)))`, so every
    task's data would change: that needs a new suite version (and a new bound on numpy in pyproject.toml).
    """
    rng = lambda: np.random.Generator(np.random.PCG64(np.random.SeedSequence(1001, spawn_key=(0,))))  # noqa: E731
    assert rng().standard_normal(4).tolist() == [
        -0.8072367449685911,
        1.8263527463215385,
        -0.5859938234163369,
        0.17360497673615566,
    ]
    assert rng().random(4).tolist() == [0.9220399342568576, 0.6106200616112307, 0.4028184542484341, 0.7609097363382923]
    assert rng().integers(0, 1000, 4).tolist() == [239, 922, 901, 610]


def test_pyproject_bounds_numpy_below_the_next_major_version() -> None:
    """NumPy may change `Generator` streams only across a major version, so the bound stops at the next one."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "numpy>=1.26,<3" in deps
    assert int(np.__version__.split(".")[0]) < 3


def test_provenance_names_the_cpu_libraries_and_threads() -> None:
    p = provenance()
    assert isinstance(p["cpu"], str) and p["cpu"]
    assert p["threads"] == torch.get_num_threads()
    assert p["numpy_version"] == np.__version__
    assert p["numpy_blas"] and p["numpy_lapack"] and isinstance(p["numpy_simd"], list)
    assert p["torch_blas"] and p["torch_lapack"]
    if torch.backends.mkl.is_available():
        assert p["torch_blas"] == "mkl" and p["torch_mkl"]
    assert p["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_results_record_the_provenance(tmp_path: Path) -> None:
    doc = run(load_model("zero"), tasks.select(["lasso/fixed"]), RunConfig("cpu", prompts=16), tmp_path / "r.json")
    assert doc["run"]["provenance"] == provenance()
    assert doc["run"]["device_name"] == provenance()["cpu"]
