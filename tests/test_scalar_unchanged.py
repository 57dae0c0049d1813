"""Every scalar task's numbers are unchanged: baselines re-scored on all prompts equal the committed snapshot.

`fixtures/baseline_snapshot.json` holds the baselines' committed results (rounded to 4 decimals in dB).
`ridge` (linear, lasso and kernel tasks) and `averaging` (linear and logistic tasks) between them cover
every scalar task; both are exact closed forms, so a change in any scalar task's data, target, metric or
the baselines' arithmetic moves some of these numbers. Errors at float64 round-off (below `ROUND_OFF_DB`,
where the last bits of a LAPACK solve decide the number and differ between CPUs) must stay there.
"""

from __future__ import annotations

import json

import pytest
from fixtures import baseline_snapshot

from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks import TASKS, select

pytestmark = pytest.mark.usefixtures("session_fingerprints")  # the sets are generated once, in a separate process
SCALAR = [name for name, task in TASKS.items() if task.spec.m == 1]
ROUND_OFF_DB = -100.0


def test_ridge_and_averaging_cover_every_scalar_task_and_reproduce_the_snapshot() -> None:
    committed = json.loads(baseline_snapshot.SNAPSHOT.read_text())["models"]
    covered = set()
    for name in ("ridge", "averaging"):
        doc = run(load_model(name), select(SCALAR), RunConfig(device="cpu"), progress=False)
        for task in SCALAR:
            entry, want = doc["tasks"][task], committed[name]["tasks"][task]
            if want is None:
                assert entry["status"] == "unsupported", (name, task)
                continue
            covered.add(task)
            assert set(entry["lengths"]) == set(want), (name, task)
            for n, m in entry["lengths"].items():
                got, committed_n = baseline_snapshot.metric(m, False), want[n]
                if committed_n["db"] < ROUND_OFF_DB:
                    assert got["db"] < ROUND_OFF_DB, (name, task, n)
                else:
                    assert got == {k: v for k, v in committed_n.items() if k != "steps"}, (name, task, n)
    assert covered == set(SCALAR)
