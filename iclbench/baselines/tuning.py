"""Tuning a baseline's constant on a grid, per task and prompt length, on the training stream: the choice of the
best grid point and the file that stores the choices (`tune_ridge`; the pattern of `tune_lasso` and `tune_gd`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch


def best_on_grid(name: str, n: int, grid: Sequence[float], errors: Sequence[float], lowest_is_a_limit: bool) -> float:
    """The grid point of least error for task `name` at length `n`; a `RuntimeError` when it is at an edge of the grid
    (the optimum may lie beyond it), except at the lowest point when `lowest_is_a_limit` (0: nothing below)."""
    best = min(range(len(grid)), key=errors.__getitem__)
    if best == len(grid) - 1 or (best == 0 and not lowest_is_a_limit):
        raise RuntimeError(f"{name} n={n}: the best value {grid[best]:g} is at the edge of the grid")
    print(f"{name} n={n}: {grid[best]:g} (relative query error {errors[best]:.4g})")
    return grid[best]


def store(path: Path, document: dict[str, Any], check: bool) -> int:
    """Write `document` (JSON) to `path`, or with `check` compare it with the stored one; the exit status."""
    if not check:
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {path}")
        return 0
    if json.loads(path.read_text()) != document:
        print(f"MISMATCH: {path} is not what re-tuning gives", file=sys.stderr)
        return 1
    print(f"{path} is reproduced")
    return 0


def main(argv: list[str] | None, module: str, doc: str, path: Path, tuned: Callable[[], dict[str, Any]]) -> int:
    """The command line of a tuning module `module` (docstring `doc`): tune (`tuned` gives the document to store), then
    write `path`, or with `--check` compare (`store`)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="re-tune and compare with the stored values")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small batched solves: threads cost more than they save
    return store(path, tuned(), args.check)
