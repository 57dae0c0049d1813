"""The iterative baselines' numbers are unchanged by how they are computed (gd's closed form, ISTA and FISTA
by blocks of iterates and in the eigenbasis on least squares, the lasso's homotopy by products of another
form): re-scored on the full suite, every dB of the
committed snapshot (`fixtures/baseline_snapshot.json`: each length's error and interval, the per-step curve at
the nominal length to step 128, rounded to 4 decimals) to its rounding. Full size: `pytest -m slow`; the
default run checks the same at 64 prompts against the sequential updates
(`test_baselines_gd_newton.py::test_per_step_errors_are_those_of_the_sequential_updates`).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from fixtures import baseline_snapshot

from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks import TASKS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("session_fingerprints", "one_thread")]
ROUNDING = 0.5e-4 + 1e-6
"""The snapshot's rounding (4 decimals), and a margin far below any change of the algorithm."""
FLOOR = 20 * math.log10(torch.finfo(torch.float32).eps)
"""Errors below float32's resolution (-138 dB: converged steps) are its rounding, not the algorithm's."""


@pytest.mark.parametrize("name", ["gd", "ista", "fista", "lasso-exact"])
def test_full_suite_reproduces_the_committed_numbers(name: str) -> None:
    committed = json.loads(baseline_snapshot.SNAPSHOT.read_text())["models"][name]["tasks"]
    doc = run(load_model(name), list(TASKS.values()), RunConfig(device="cpu"), progress=False)
    compared = 0
    for task, want in committed.items():
        entry = doc["tasks"][task]
        if want is None:
            assert entry["status"] == "unsupported", (task, entry.get("error"))
            continue
        assert entry["status"] == "ok" and set(entry["lengths"]) == set(want), task
        for n, m in entry["lengths"].items():
            err = m["rel_err"]
            got = [err["db"], *err["ci90_db"], *m.get("steps_rel_err_db", [])[: len(want[n].get("steps", []))]]
            expected = [want[n]["db"], *want[n]["ci90_db"], *want[n].get("steps", [])]
            for a, b in zip(got, expected, strict=True):
                assert abs(a - b) <= ROUNDING or max(a, b) < FLOOR, (task, n, a, b)
                compared += 1
            if "error_rate" in want[n]:
                assert abs(m["error_rate"]["value"] - want[n]["error_rate"]) <= ROUNDING, (task, n)
    assert compared >= 3 * sum(len(want) for want in committed.values() if want) > 60  # 3: the dB and its interval
