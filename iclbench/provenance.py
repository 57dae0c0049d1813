"""What a machine computes with: CPU, BLAS and LAPACK libraries, NumPy, threads (recorded in results)."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_info


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo on Linux, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_libraries() -> dict[str, str]:
    config = torch.__config__.show()
    found = {}
    for lib in ("blas", "lapack"):
        if m := re.search(rf"{lib.upper()}_INFO=(\w+)", config):
            found[f"torch_{lib}"] = m.group(1)
    if m := re.search(r"Math Kernel Library Version (\S+)", config):
        found["torch_mkl"] = m.group(1)
    return found


def _numpy_libraries() -> dict[str, Any]:
    config = np.show_config(mode="dicts")
    deps = config.get("Build Dependencies", {})
    found: dict[str, Any] = {
        f"numpy_{lib}": f"{deps[lib].get('name')} {deps[lib].get('version')}"
        for lib in ("blas", "lapack")
        if lib in deps
    }
    found["numpy_simd"] = config.get("SIMD Extensions", {}).get("found", [])
    return found


def _thread_pools() -> list[str]:
    """The BLAS and OpenMP libraries loaded at run time, with the kernels they chose."""
    keys = ("internal_api", "version", "architecture")
    return [
        " ".join([*(str(p[k]) for k in keys if p.get(k)), f"threads={p['num_threads']}"]) for p in threadpool_info()
    ]


def provenance() -> dict[str, Any]:
    """The machine's CPU, the libraries torch and NumPy compute with, and the thread count."""
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **_torch_libraries(),
        "numpy_version": np.__version__,
        **_numpy_libraries(),
        "thread_pools": _thread_pools(),
    }
