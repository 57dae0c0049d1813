"""`iclbench leaderboard`: the ranking rule, every output file, and `--check` against stale builds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fixtures.submission_kit import results_doc, static_submission

from iclbench.cli import main
from iclbench.leaderboard.build import LeaderboardError, build, check, load_entries, rank
from iclbench.tasks import SUITE_VERSION, TASKS

FAMILY = {name: t.spec.family for name, t in TASKS.items()}


def every(db: float, **family_db: float) -> dict[str, float]:
    """`db` on every task, or `family_db[family]` on that family's tasks."""
    return {name: family_db.get(fam, db) for name, fam in FAMILY.items()}


def write_baselines(folder: Path, *docs: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (folder / f"{doc['model']['name']}.json").write_text(json.dumps(doc))
    return folder


def test_ranking_rule(tmp_path: Path) -> None:
    no_nominal = results_doc("f", every(-10.0))
    kappa1 = no_nominal["tasks"]["linear/kappa1"]
    kappa1["unsupported_lengths"] = [40]
    del kappa1["lengths"]["40"]
    docs = [
        results_doc("a", every(-10.0)),
        results_doc("b", {n: -20.0 for n, fam in FAMILY.items() if fam == "linear"}),
        results_doc("c", every(-10.0)),
        results_doc("d", every(-300.0)),
        results_doc("e", every(-10.0, logistic=5.0)),
        no_nominal,
    ]
    entries = rank(load_entries(tmp_path / "none", write_baselines(tmp_path / "b", *docs)))
    got = {e.name: (e.rank, round(e.overall, 6)) for e in entries}
    # by hand: the mean over 4 families of the mean over each family's tasks; unsupported = 0 dB; floor -100 dB
    assert got == {
        "d": (1, -100.0),
        "a": (2, -10.0),
        "c": (2, -10.0),
        "f": (4, -9.375),
        "e": (5, -6.25),
        "b": (6, -5.0),
    }
    assert [e.name for e in entries] == ["d", "a", "c", "f", "e", "b"]
    linear = {e.name: (e.family_ranks["linear"], e.family_scores["linear"]) for e in entries}
    assert linear == {
        "d": (1, -100.0),
        "b": (2, -20.0),
        "a": (3, -10.0),
        "c": (3, -10.0),
        "e": (3, -10.0),
        "f": (6, -7.5),
    }
    f = next(e for e in entries if e.name == "f")
    assert f.scores["linear/kappa1"] is None and f.scores["linear/kappa10"] == -10.0


def test_step_budget_rows(tmp_path: Path) -> None:
    long = results_doc("long", every(-30.0), steps=[-float(k) for k in range(1, 21)])
    mixed = results_doc("mixed", every(-30.0), steps=[-float(k) for k in range(1, 21)])
    for name, task in mixed["tasks"].items():  # 3 steps on the lasso tasks, 20 elsewhere
        if FAMILY[name] == "lasso":
            for m in task["lengths"].values():
                m["steps_rel_err_db"] = [-1.0, -2.0, -3.0]
    short = results_doc("short", every(-30.0), steps=[-1.0, -2.0, -3.0])
    docs = write_baselines(tmp_path / "b", long, mixed, short)
    entries = {e.name: e for e in rank(load_entries(tmp_path / "none", docs))}
    assert set(entries) == {"long", "mixed", "short", "long @12 steps", "mixed @12 steps"}  # short: no cut needed
    assert entries["long @12 steps"].overall == -12.0  # the 12th step
    assert entries["mixed @12 steps"].family_scores == {
        "linear": -12.0,
        "logistic": -12.0,
        "lasso": -3.0,
        "kernel": -12.0,
    }
    assert entries["long"].overall == -30.0


def test_invalid_inputs_are_named(tmp_path: Path) -> None:
    limited = results_doc("limited", every(-1.0))
    limited["run"].update(prompts=10, limited=True)
    old = results_doc("old", every(-1.0))
    old["suite_version"] = "v0"
    subs = tmp_path / "submissions"
    static_submission(subs / "Bad_Name", every(-1.0))
    static_submission(subs / "another-one", every(-1.0), name="limited")
    with pytest.raises(LeaderboardError) as info:
        load_entries(subs, write_baselines(tmp_path / "b", limited, old))
    message = str(info.value)
    assert "limited.json: a limited run (--prompts 10)" in message
    assert "old.json: made on suite 'v0'" in message
    assert "'Bad_Name' is not a valid submission id" in message
    assert "two models are called 'limited'" not in message  # the invalid baseline is not an entry
    with pytest.raises(LeaderboardError, match="two models are called 'limited': names must be unique"):
        load_entries(subs, write_baselines(tmp_path / "b2", results_doc("limited", every(-1.0))))


@pytest.fixture
def board(tmp_path: Path) -> tuple[Path, Path, Path]:
    subs = tmp_path / "submissions"
    static_submission(subs / "tiny-gd", every(-15.0, logistic=-2.0), architecture="<script>alert(1)</script> GD")
    baselines = write_baselines(
        tmp_path / "board" / "baselines",
        results_doc("zero", every(0.0)),
        results_doc("lin", {n: -40.0 for n, f in FAMILY.items() if f == "linear"}),
        results_doc("iter", every(-25.0), steps=[-2.0 * k for k in range(1, 16)]),
    )
    return subs, baselines, tmp_path / "board"


def test_build_writes_every_output(board: tuple[Path, Path, Path]) -> None:
    subs, baselines, out = board
    entries = build(subs, baselines, out)
    names = [e.name for e in entries]
    assert names == ["iter", "iter @12 steps", "tiny-gd", "lin", "zero"]  # scores: test_scores_in_build_order
    readme = (out / "README.md").read_text()
    assert "## Ranking rule" in readme and "## Overall" in readme
    for fam in set(FAMILY.values()):
        assert f"## {fam}" in readme
    assert "| 3      | tiny-gd" in readme

    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    mine = [r for r in rows if r["model"] == "tiny-gd"]
    n_lengths = sum(len(t.spec.lengths) for t in TASKS.values())
    assert len(mine) == 2 * n_lengths  # rel_err and rel_err_db at every length of every task
    kappa1 = [r for r in mine if r["task"] == "linear/kappa1" and r["n"] == "40" and r["metric"] == "rel_err_db"]
    assert float(kappa1[0]["value"]) == -15.0 and kappa1[0]["nominal"] == "True"
    steps = [r for r in rows if r["model"] == "iter" and r["metric"] == "steps_rel_err_db"]
    assert len(steps) == 15 * n_lengths
    assert not any(r["model"].endswith("steps") for r in rows)

    summary = json.loads((out / "leaderboard.json").read_text())
    assert [m["name"] for m in summary["models"]] == names
    assert summary["suite_version"] == SUITE_VERSION and summary["models"][2]["meta"]["name"] == "tiny-gd"

    plots = {p.name for p in (out / "plots").iterdir()}
    assert {f"task-{t.replace('/', '--')}.svg" for t in TASKS} <= plots
    assert {f"steps-{t.replace('/', '--')}.svg" for t in TASKS} <= plots  # "iter" reports steps on every task
    assert {"lasso-shift.svg", "model-sub-tiny-gd.svg", "model-base-iter-steps.svg", "model-base-zero.svg"} <= plots
    assert "model-sub-tiny-gd-steps.svg" not in plots

    page = (out / "index.html").read_text()
    for e in entries:
        assert f'id="row-{e.key}"' in page and f'id="model-{e.key}"' in page
    assert page.count("<script") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt; GD" in page
    assert "iclbench validate " in page and "submissions/tiny-gd --rerun" in page
    assert "iclbench run --model iter --out" in page
    assert "Ranking rule" in page and SUITE_VERSION in page and summary["built"] in page
    assert "http://" not in page.replace('"http://www.w3.org', "") and "<link" not in page


def test_scores_in_build_order(board: tuple[Path, Path, Path]) -> None:
    subs, baselines, _ = board
    scores = {e.name: e.overall for e in rank(load_entries(subs, baselines))}
    expected = {"iter @12 steps": -24.0, "iter": -25.0, "tiny-gd": (-15 - 2 - 15 - 15) / 4, "lin": -10.0, "zero": 0.0}
    assert scores == expected


def test_zero_submissions_and_zero_baselines(tmp_path: Path) -> None:
    assert build(tmp_path / "submissions", tmp_path / "baselines", tmp_path / "out") == []
    assert (tmp_path / "out" / "index.html").is_file()
    assert check(tmp_path / "submissions", tmp_path / "baselines") == []


def test_one_invalid_folder_is_left_out(board: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The build leaves an invalid folder out, names it in one line and exits 0; --check exits 1 naming it."""
    subs, baselines, out = board
    args = ["--submissions", str(subs), "--baselines", str(baselines), "--out", str(out)]
    assert check(subs, baselines) == [] and main(["leaderboard", "--check", *args]) == 0
    assert "every folder valid" in capsys.readouterr().out
    assert not (out / "index.html").exists()  # --check builds nothing where the site goes

    broken = static_submission(subs / "second-model", every(-1.0), name="second")
    (broken / "submission.yaml").write_text("name: [unclosed\n")
    (problem,) = check(subs, baselines)
    assert problem.startswith(f"{broken}: left out, 1 problem(s): {broken / 'submission.yaml'}: not readable YAML")
    assert main(["leaderboard", "--check", *args]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: {problem}\n" and "INVALID, 1 problem(s)" in captured.out

    assert main(["leaderboard", *args]) == 0  # the rest is built and published
    captured = capsys.readouterr()
    assert captured.err == f"warning: {problem}\n"
    assert "1 submission(s), 4 baseline row(s)" in captured.out and "1 invalid submission folder(s) left out" in captured.out
    names = [m["name"] for m in json.loads((out / "leaderboard.json").read_text())["models"]]
    assert "tiny-gd" in names and "second" not in names

    left_out: list[str] = []
    assert [e.name for e in load_entries(subs, baselines, left_out) if e.kind == "submission"] == ["tiny-gd"]
    assert left_out == [problem]
    with pytest.raises(LeaderboardError, match="not readable YAML"):  # without a list, as strict as ever
        load_entries(subs, baselines)

    (baselines / "zero.json").write_text("{")  # the baselines are CI's own: a broken one stops the build
    assert main(["leaderboard", *args]) == 1
    assert "zero.json: not readable JSON" in capsys.readouterr().err
    assert any("zero.json: not readable JSON" in p for p in check(subs, baselines))


def test_cli_runs_baselines_then_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baselines, out = tmp_path / "baselines", tmp_path / "out"
    args = [
        "leaderboard",
        "--run-baselines",
        "zero",
        "no-such-baseline",
        "--device",
        "cpu",
        "--submissions",
        str(tmp_path / "submissions"),
        "--baselines",
        str(baselines),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "baseline not scored: no-such-baseline" in captured.err
    assert "0 submission(s), 1 baseline row(s)" in captured.out
    zero = json.loads((baselines / "zero.json").read_text())
    assert all(
        t["status"] == "ok" and t["lengths"][str(t["spec"]["nominal"])]["rel_err"]["db"] == 0.0
        for t in zero["tasks"].values()
    )
