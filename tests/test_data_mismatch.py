"""Data that do not match the registry, or results of another suite version, are reported loudly with what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.submission_kit import results_doc, static_submission

from iclbench import results, tasks
from iclbench.submissions import schema as submission
from iclbench.cli import main
from iclbench.leaderboard.build import LeaderboardError, load_entries
from iclbench.plugins import load_model
from iclbench.submissions.rerun import rerun_and_compare
from iclbench.runner import RunConfig, run

SMALL = ["lasso/fixed", "lasso/random"]  # the quickest to generate


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite cut to the small tasks, their registry fingerprints set to what this machine generates."""
    monkeypatch.setattr(tasks, "TASKS", {name: tasks.TASKS[name] for name in SMALL})
    for name in SMALL:
        monkeypatch.setitem(tasks.FINGERPRINTS, name, tasks.get(name).generate().fingerprint())


def test_list_verify_exits_1_on_a_mismatch(pinned: None, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["list", "--verify"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count(" ok") == 2 and captured.err == ""
    actual = tasks.FINGERPRINTS["lasso/random"]
    monkeypatch.setitem(tasks.FINGERPRINTS, "lasso/random", "0" * 64)
    assert main(["list", "--verify"]) == 1
    captured = capsys.readouterr()
    assert f"MISMATCH {actual[:16]}" in captured.out and captured.out.count(" ok") == 1
    assert '"numpy_blas"' in captured.out  # the machine's provenance, to paste in a report
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "for lasso/random do not match" in err[0]
    assert "--data DIR" in err[0] and "iclbench export" in err[0] and "provenance" in err[0]


def test_run_warns_records_and_validation_refuses(pinned: None, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(tasks.FINGERPRINTS, "lasso/fixed", "0" * 64)
    args = ["run", "--quiet", "--model", "zero", "--tasks", *SMALL, "--out", str(tmp_path)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "for lasso/fixed do not match" in err and "lasso/random" not in err
    assert "not eligible for the leaderboard" in err and "--data DIR" in err and "run.provenance" in err
    doc = results.read(tmp_path / "zero.json")
    assert doc["run"]["data_mismatch"] == ["lasso/fixed"]
    assert doc["tasks"]["lasso/fixed"]["fingerprint_ok"] is False and doc["tasks"]["lasso/random"]["fingerprint_ok"]
    problems = submission.check_results(doc, "zero.json")
    assert any("tasks['lasso/fixed'].fingerprint" in p and "--data DIR" in p for p in problems), problems


ZERO = """
from iclbench import Model

class Zero(Model):
    name = "zero-file"
    def predict(self, batch):
        return batch.x_query.new_zeros(batch.x_query.shape[:2])
"""


def test_rerun_checks_the_fingerprints_of_its_data(pinned: None, tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "model.py"
    model.write_text(ZERO)
    submitted = run(load_model(str(model)), tasks.select(SMALL), RunConfig("cpu"), progress=False)
    assert rerun_and_compare(model, submitted, SMALL) == []
    submitted["tasks"]["lasso/random"]["fingerprint"] = "1" * 64
    assert rerun_and_compare(model, submitted, SMALL) == [
        f"lasso/random: the re-run's evaluation set has fingerprint {tasks.FINGERPRINTS['lasso/random'][:16]}..., "
        "results.json has 1111111111111111...: the results were scored on other data"
    ]
    monkeypatch.setitem(tasks.FINGERPRINTS, "lasso/fixed", "0" * 64)
    problems = rerun_and_compare(model, submitted, ["lasso/fixed"])
    assert len(problems) == 1 and "not the suite's 0000000000000000...: this machine does not reproduce" in problems[0]
    assert "--data DIR" in problems[0]


def test_resume_refuses_results_of_another_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "zero.json"
    old = results_doc("zero", {})
    old["suite_version"] = "v0"
    results.write(out, old)
    args = ["run", "--quiet", "--model", "zero", "--tasks", "lasso/fixed", "--out", str(tmp_path), "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"made on suite 'v0'; this is suite {tasks.SUITE_VERSION!r}: re-run without --resume" in err[0]
    assert json.loads(out.read_text()) == old  # untouched


def test_leaderboard_names_both_suite_versions(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    static_submission(subs / "old-one", {})
    path = subs / "old-one" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "suite_version": "v0"}))
    with pytest.raises(LeaderboardError) as info:
        load_entries(subs, tmp_path / "none")
    assert f"results.json: made on suite 'v0'; this is suite {tasks.SUITE_VERSION!r}" in str(info.value)
