"""Fresh-draw verification: fresh sets, the comparison rule, cheating models caught, honest ones passing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.cheaters import KINDS, write_cheater
from fixtures.submission_kit import results_doc, static_submission

from iclbench import results
from iclbench.cache import eval_set, fresh_sets
from iclbench.cli import main
from iclbench.leaderboard.build import load_entries, rank, tables
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks import TASKS, get, select
from iclbench.submissions.rank_test import Z
from iclbench.submissions.verify import FORMAT, RULE, status, verify

TASK_NAMES = ["lasso/fixed", "kernel/linear"]
"""Two tasks whose sets generate in milliseconds; lasso/fixed has one matrix X0 shared by every prompt."""
SEED = 20261129
PROMPTS = 256
"""Prompts scored per set: results files of 256 prompts, verified on 256 fresh ones (the smallest size at which a
look-up's prompts are all found and an honest model's tests are far from their thresholds)."""
TEMPLATE = str(Path(__file__).parents[1] / "examples" / "template_model.py")


def public_results(model: str, folder: Path | None = None) -> dict:
    """The model's results on the first PROMPTS public prompts of TASK_NAMES (written to folder/results.json when
    given)."""
    out = None if folder is None else folder / "results.json"
    return run(load_model(model), select(TASK_NAMES), RunConfig("cpu", prompts=PROMPTS), out, progress=False)


def cheater(tmp_path: Path, kind: str) -> Path:
    """A folder with a cheating model (`fixtures.cheaters`) for TASK_NAMES."""
    return write_cheater(tmp_path / kind, kind, TASK_NAMES).parent


def test_fresh_sets_are_new_draws_of_the_same_tasks() -> None:
    task = get("lasso/fixed")
    pinned, fresh, again, other = task.generate(), task.generate(SEED), task.generate(SEED), task.generate(SEED + 1)
    assert fresh.fingerprint() == again.fingerprint()
    assert len({pinned.fingerprint(), fresh.fingerprint(), other.fingerprint()}) == 3
    assert {k: t.shape for k, t in fresh.tensors().items()} == {k: t.shape for k, t in pinned.tensors().items()}
    assert torch.equal(fresh.public["X0"], pinned.public["X0"])  # the fixed matrix belongs to the task
    assert not torch.equal(fresh.x_query, pinned.x_query)
    with pytest.raises(ValueError, match="verification seed"):
        task.generate(-1)


def test_fresh_sets_switch_eval_set_in_memory_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLBENCH_CACHE", str(tmp_path / "cache"))
    task = get("kernel/linear")
    pinned = eval_set(task)[1]
    with fresh_sets(SEED):
        data, fingerprint = eval_set(task)
        assert fingerprint == task.generate(SEED).fingerprint() != pinned
        assert eval_set(task)[0] is data  # generated once per block
    assert eval_set(task)[1] == pinned
    assert not [p for p in (tmp_path / "cache").rglob("*") if fingerprint[:16] in p.name]


@pytest.mark.parametrize("kind", KINDS)
def test_cheating_models_fail(tmp_path: Path, kind: str) -> None:
    folder = cheater(tmp_path, kind)
    public = public_results(str(folder / "model.py"))
    for name in TASK_NAMES:
        assert public["tasks"][name]["lengths"][str(TASKS[name].spec.nominal)]["rel_err"]["db"] == -300.0
    report = verify(str(folder / "model.py"), public, SEED, TASK_NAMES, PROMPTS)
    assert report["verdict"] == "fail"
    for name in TASK_NAMES:
        task = report["tasks"][name]
        assert task["verdict"] == "fail" and "better on the public set" in task["reason"]
        for c in task["lengths"].values():
            assert c["public_db"] == c["claimed_db"] == -300.0 and c["fresh_db"] > -1.0  # zero off the public set
            assert c["rank_z"] > 15 and c["tail_z"] > 10 and c["verdict"] == "fail"


@pytest.mark.parametrize("model", ["ridge", TEMPLATE])
def test_honest_models_pass(model: str) -> None:
    public = public_results(model)
    report = verify(model, public, SEED, TASK_NAMES, PROMPTS)
    assert report["verdict"] == "pass", report
    assert report["seed"] == SEED and report["seed_drawn"] is False and report["rule"]["z"] > 5.4
    fingerprints = {name: report["tasks"][name]["fingerprint"] for name in TASK_NAMES}
    assert fingerprints == {name: get(name).generate(SEED).fingerprint() for name in TASK_NAMES}
    for name in TASK_NAMES:
        for n, c in report["tasks"][name]["lengths"].items():
            assert c["claimed_db"] == public["tasks"][name]["lengths"][n]["rel_err"]["db"]
            assert abs(c["public_db"] - c["claimed_db"]) < 1e-6 and c["prompts"] == PROMPTS


def test_a_claim_the_model_does_not_reproduce_fails(tmp_path: Path) -> None:
    public = public_results(TEMPLATE)
    claimed = public["tasks"]["kernel/linear"]["lengths"]["14"]["rel_err"]
    claimed["db"] -= 3.0  # 3 dB better than the model makes it
    report = verify(TEMPLATE, public, SEED, TASK_NAMES, PROMPTS)
    assert report["verdict"] == "fail" and report["tasks"]["lasso/fixed"]["verdict"] == "pass"
    reason = report["tasks"]["kernel/linear"]["reason"]
    assert reason.startswith("results.json is not reproduced: kernel/linear n=14: rel_err.db is ")
    assert "lengths" not in report["tasks"]["kernel/linear"]  # nothing compared with a claim that is not the model's


def test_cli_draws_a_seed_writes_the_report_and_exits_by_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = cheater(tmp_path, "memory-bank")
    public_results(str(folder / "model.py"), folder)
    assert main(["verify", str(folder), "--tasks", *TASK_NAMES, "--prompts", str(PROMPTS), "--quiet"]) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert [line.split(":")[0] for line in out[:2]] == TASK_NAMES and all(": FAIL: n=" in line for line in out[:2])
    assert "FAILED verification (2 task(s)" in out[2] and captured.err == ""  # --quiet: no progress lines
    report = json.loads((folder / "verification.json").read_text())
    assert report["format"] == FORMAT and report["seed_drawn"] is True and 0 <= report["seed"] < 2**128
    assert f"seed {report['seed']}" in out[2]

    honest = tmp_path / "honest"
    honest.mkdir()
    (honest / "model.py").write_text(Path(TEMPLATE).read_text())
    public_results(str(honest / "model.py"), honest)
    out = str(tmp_path / "r.json")
    assert main(["verify", str(honest), "--tasks", *TASK_NAMES, "--prompts", str(PROMPTS), "--out", out]) == 0
    captured = capsys.readouterr()
    assert "verified on fresh data" in captured.out
    assert json.loads((tmp_path / "r.json").read_text())["prompts"] == PROMPTS
    lines = captured.err.splitlines()  # not a terminal: one line per task as it is done
    assert [line.split(": ")[0] for line in lines] == [f"[{i}/2] {name}" for i, name in enumerate(TASK_NAMES, 1)]
    assert all(": pass (n=" in line and line.endswith(" s") for line in lines)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-3"], "--seed -3: expected an integer from 0 to 2^128 - 1"),
        (["--tasks", "nope/none"], "no task matches 'nope/none'"),
        ([], "results.json: not a readable JSON results file"),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.py").write_text(Path(TEMPLATE).read_text())
    if args:
        results.write(folder / "results.json", results_doc("template-knn", {}))
    assert main(["verify", str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("iclbench verify: ") and message in err
    assert not (folder / "verification.json").exists()


def full_report(public: dict, **changes: object) -> dict:
    report = {
        "format": FORMAT,
        "verdict": "pass",
        "seed": 5,
        "seed_drawn": True,
        "date": "2026-11-29T12:00:00+00:00",
        "suite_version": public["suite_version"],
        "model": {k: public["model"][k] for k in ("name", "file_sha256", "checkpoint_sha256")},
        "prompts": None,
        "rule": {"name": RULE, "z": Z},
        "tasks": {name: {"verdict": "pass"} for name in TASKS},
    }
    report.update(changes)
    return report


def test_leaderboard_status_of_a_report() -> None:
    public = results_doc("m", {})
    public["model"]["file_sha256"] = "a" * 64
    assert status(None, public) == "not verified"
    assert status(full_report(public), public) == "verified 2026-11-29"
    assert status(full_report(public, verdict="fail", tasks={}), public) == "failed 2026-11-29"
    stale = full_report(public, model={"name": "m", "file_sha256": "b" * 64, "checkpoint_sha256": None})
    assert status(stale, public) == "not verified"  # made with other files: the submission changed since
    assert status(full_report(public, tasks={"lasso/fixed": {"verdict": "pass"}}), public) == "not verified"
    assert status(full_report(public, prompts=256), public) == "not verified"
    assert status(full_report(public, seed_drawn=False), public) == "not verified"
    assert status(full_report(public, rule={"name": RULE, "z": 5.53}), public) == "not verified"  # an older threshold
    assert status({"format": "something else"}, public) == "not verified"


def test_leaderboard_shows_verification(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    scores = {name: -10.0 for name in TASKS}
    verified = static_submission(subs / "verified-one", scores)
    static_submission(subs / "unverified-one", scores, name="other")
    doc = json.loads((verified / "results.json").read_text())
    (verified / "verification.json").write_text(json.dumps(full_report(doc)))
    entries = {e.name: e for e in rank(load_entries(subs, tmp_path / "no-baselines"))}
    assert entries["tiny-gd"].verification == "verified 2026-11-29"
    assert entries["other"].verification == "not verified"
    linear = tables(list(entries.values()))["linear"]
    assert "| verification " in linear and "verified 2026-11-29" in linear
