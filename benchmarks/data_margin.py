"""How far each task's data sit from a float32 rounding boundary, in float64 ulps.

Generation computes in float64 and rounds every drawn or derived value to float32
(`iclbench.tasks.spec.f32`). A route that changed a float64 value by fewer ulps than its
distance to the nearest float32 rounding boundary would still round it to the same float32
number. This prints, per task, the smallest such distance over every rounded value: the
margin that protects the fingerprints from a last-bit difference in the few operations not
covered by `iclbench.tasks.portable` (NumPy's Gaussian tail, Python's `pow`).

    python benchmarks/data_margin.py
"""

from __future__ import annotations

import sys

import numpy as np

from iclbench import tasks
from iclbench.tasks import family, garg, kernel, lasso, linear, logistic, spec

MODULES = (spec, family, garg, kernel, lasso, linear, logistic)


def boundary_distance_ulps(a: np.ndarray) -> float:
    """The smallest distance of float64 values to a float32 rounding midpoint, in float64 ulps."""
    v = np.asarray(a, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v != 0)]
    if v.size == 0:
        return float("inf")
    r = v.astype(np.float32)
    below = np.nextafter(r, np.float32(-np.inf)).astype(np.float64)
    above = np.nextafter(r, np.float32(np.inf)).astype(np.float64)
    r64 = r.astype(np.float64)
    gap = np.minimum(np.abs(v - (r64 + below) / 2), np.abs((r64 + above) / 2 - v))
    return float(np.min(gap / np.spacing(np.abs(v))))


def main() -> int:
    original = spec.f32
    seen: list[float] = []

    def recording_f32(a: np.ndarray) -> np.ndarray:
        seen.append(boundary_distance_ulps(a))
        return original(a)

    for module in MODULES:
        module.f32 = recording_f32
    print(f"{'task':18} {'rounded values':>15} {'margin (float64 ulps)':>22}")
    try:
        for name, task in tasks.TASKS.items():
            seen.clear()
            data = task.generate()
            count = sum(t.numel() for t in data.tensors().values())
            print(f"{name:18} {count:>15,} {min(seen):>22,.0f}")
    finally:
        for module in MODULES:
            module.f32 = original
    return 0


if __name__ == "__main__":
    sys.exit(main())
