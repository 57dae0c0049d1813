"""`iclbench leaderboard --run-baselines --jobs N`: baselines side by side, each in its own process, with the
results of one baseline after another and a progress line per baseline and task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iclbench import distributed
from iclbench.cli import main
from iclbench.leaderboard.build import default_jobs, run_baselines

NAMES = ["zero", "gd", "ridge"]  # more than the jobs: the third waits for a free process
TASKS = ["linear/kappa1", "lasso/fixed"]


def scored(folder: Path, name: str) -> dict[str, Any]:
    """A results file without what differs between two runs of the same thing: when, how long, and the state of
    the harness's process (its thread count and loaded libraries: one after another, the run is made in this
    process, whose earlier tests may have changed them; side by side, in a fresh one)."""
    doc = json.loads((folder / f"{name}.json").read_text())
    for key in ("started", "finished"):
        doc["run"].pop(key)
    for key in ("threads", "thread_pools"):
        doc["run"]["provenance"].pop(key)
    for entry in doc["tasks"].values():
        entry.pop("seconds", None)
    return doc


@pytest.mark.usefixtures("session_fingerprints")  # the sets from the session's cache, in every process
def test_parallel_baselines_score_what_one_after_another_scores(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    failures = {}
    for jobs in (1, 2):
        failures[jobs] = run_baselines([*NAMES, "no-such-baseline"], tmp_path / str(jobs), "cpu", jobs, TASKS, 8)
        lines = capfd.readouterr().err.splitlines()
        for name in NAMES:  # a line per task as it is done, then one for the baseline
            prefix = f"run-baselines: {name} "
            done = [line.removeprefix(prefix).split(": ")[0] for line in lines if line.startswith(prefix)]
            assert sorted(done) == sorted(TASKS)
            assert sum(line.startswith(f"run-baselines: {name}: done in ") for line in lines) == 1
        assert any(line.startswith("run-baselines: no-such-baseline: not scored: ") for line in lines)
    assert failures[1] == failures[2] and [f.split(":")[0] for f in failures[1]] == ["no-such-baseline"]
    for name in NAMES:
        one, two = scored(tmp_path / "1", name), scored(tmp_path / "2", name)
        differ = {k: (v, two["run"].get(k)) for k, v in one["run"].items() if v != two["run"].get(k)}
        assert one == two, differ
        assert one["run"]["prompts"] == 8 and sorted(one["tasks"]) == sorted(TASKS)
    threads = {json.loads((tmp_path / "2" / f"{n}.json").read_text())["run"]["provenance"]["threads"] for n in NAMES}
    assert threads == {max(1, default_jobs() // 2)}  # each side-by-side process on its share of the cores
    assert scored(tmp_path / "2", "gd")["tasks"]["linear/kappa1"]["status"] == "ok"
    assert scored(tmp_path / "2", "gd")["tasks"]["lasso/fixed"]["status"] == "unsupported"


def test_jobs_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as stop:
            main(["leaderboard", "--run-baselines", "zero", "--jobs", bad])
        assert stop.value.code == 2
        assert f"--jobs: expected a number of processes (at least 1), got {bad}" in capsys.readouterr().err
    assert default_jobs() >= 1


def test_jobs_are_refused_under_torchrun(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Under torchrun the ranks split each baseline's tasks: baselines side by side as well are refused, at once."""
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert main(["leaderboard", "--run-baselines", "zero", "--jobs", "2"]) == 2
    assert "--jobs" in capsys.readouterr().err
