"""`iclbench leaderboard`: the ranking rule, every output file, and `--check` against stale builds."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from fixtures.submission_kit import results_doc, static_submission

from iclbench.cli import main
from iclbench.leaderboard.build import LeaderboardError, build, check, load_entries, rank
from iclbench.leaderboard.page import thin
from iclbench.leaderboard.plots import limits, style
from iclbench.leaderboard.ranking import FAMILIES, RANKING_EXAMPLE, RANKING_RULE
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
    got = {e.name: (e.rank, e.score) for e in entries}
    # by hand: the linear pool is a, b, c, d, e (f lacks kappa1's nominal length), the other pools a, c, d, e, f.
    # Win rates (4 others, a tie counts half): a is 25 % on linear (ties c and e), 50 % on logistic (beats e,
    # ties c and f), 37.5 % on every other family (ties c, e and f); e is 0 % on logistic (+5 dB loses to all);
    # d (-300 dB, raised to float32's -138.5 dB floor) beats everyone everywhere; b and f are not in every pool.
    assert got == {
        "d": (1, 100.0),
        "a": (2, (25 + 50 + 37.5 * (len(FAMILIES) - 2)) / len(FAMILIES)),
        "c": (2, (25 + 50 + 37.5 * (len(FAMILIES) - 2)) / len(FAMILIES)),
        "e": (4, (25 + 0 + 37.5 * (len(FAMILIES) - 2)) / len(FAMILIES)),
        "b": (None, None),
        "f": (None, None),
    }
    assert [e.name for e in entries] == ["d", "a", "c", "e", "b", "f"]
    linear = {e.name: (e.family_ranks["linear"], e.family_scores["linear"]) for e in entries}
    assert linear == {
        "d": (1, 100.0),
        "b": (2, 75.0),
        "a": (3, 25.0),
        "c": (3, 25.0),
        "e": (3, 25.0),
        "f": (None, None),
    }
    f = next(e for e in entries if e.name == "f")
    assert f.scores["linear/kappa1"] is None and f.scores["linear/kappa10"] == -10.0
    assert f.task_ranks["linear/kappa10"] == 3 and f.task_ranks["linear/kappa1"] is None


def test_solver_rows(tmp_path: Path) -> None:
    gd = results_doc("gd", every(-30.0), steps=[-float(k) for k in range(1, 21)])
    ista = results_doc("ista", every(-30.0), steps=[-float(k) for k in range(1, 21)])
    for name, task in ista["tasks"].items():  # 3 steps on the lasso tasks, 20 elsewhere
        if FAMILY[name] == "lasso":
            for m in task["lengths"].values():
                m["steps_rel_err_db"] = [-1.0, -2.0, -3.0]
    newton = results_doc("newton", every(-30.0), steps=[-1.0, -2.0, -3.0])
    docs = write_baselines(tmp_path / "b", gd, ista, newton)
    subs = tmp_path / "submissions"
    doc = json.loads((static_submission(subs / "tiny-gd", every(-5.0)) / "results.json").read_text())
    for task in doc["tasks"].values():  # per-layer errors of an 8-layer model
        for m in task["lengths"].values():
            m["steps_rel_err_db"] = [-0.5 * k for k in range(1, 9)]
    (subs / "tiny-gd" / "results.json").write_text(json.dumps(doc))
    entries = {e.name: e for e in rank(load_entries(subs, docs))}
    cuts = {n: (e.kind, e.budget, e.ranked) for n, e in entries.items() if n != "tiny-gd"}
    assert cuts == {
        **{s: ("reference", None, False) for s in ("gd", "ista", "newton")},  # at their last step
        **{f"{s} @1 step": ("baseline", 1, True) for s in ("gd", "ista", "newton")},
        **{f"{s} @{k} steps": ("baseline", k, True) for s in ("gd", "ista") for k in (4, 16)},
        **{f"{s} @8 steps": ("baseline", 8, False) for s in ("gd", "ista")},  # the submission's own depth
    }  # newton runs 3 steps: cut at 1 only
    assert entries["gd @16 steps"].scores["linear/kappa1"] == -16.0
    assert entries["ista @16 steps"].scores["lasso/fixed"] == -3.0  # 3 steps there: its last
    assert entries["ista @8 steps"].family_scores["linear"] is None
    assert entries["ista @8 steps"].task_ranks == {t: None for t in TASKS}
    assert entries["gd"].rank is None and entries["gd"].family_ranks == {f: None for f in set(FAMILY.values())}

    build(subs, docs, tmp_path / "out")  # a cut row's detail file holds the curves cut at its budget
    full, cut = (json.loads((tmp_path / "out" / "models" / f"{k}.json").read_text()) for k in ("base-gd", "base-gd-at4"))
    assert full["steps"]["linear/kappa1"]["40"]["step"] == list(range(1, 21))
    assert cut["steps"]["linear/kappa1"]["40"] == {"step": [1, 2, 3, 4], "db": [-1.0, -2.0, -3.0, -4.0]}
    assert cut["plots"] == full["plots"]


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
    assert names == ["iter", "tiny-gd", "lin", "zero"]  # scores: test_scores_in_build_order; then unranked rows
    readme = (out / "README.md").read_text()
    assert "## Ranking rule" in readme and "## Overall" in readme and RANKING_EXAMPLE in readme
    for fam in set(FAMILY.values()):
        assert f"## {fam}" in readme
    assert "| 2      | tiny-gd" in readme

    summary = json.loads((out / "leaderboard.json").read_text())
    assert [m["name"] for m in summary["models"]] == names
    assert summary["suite_version"] == SUITE_VERSION and summary["ranking_rule"] == RANKING_RULE
    tiny = summary["models"][1]
    assert tiny["kind"] == "submission" and tiny["parameters"] == 1 and tiny["code"] == "https://example.org/tiny-gd"
    kappa1 = tiny["tasks"]["linear/kappa1"]
    assert kappa1["db"] == -15.0 and kappa1["ci90_db"] == [-18.0, -12.0] and kappa1["rank"] == 3
    assert set(kappa1["by_length"]) == {str(n) for n in TASKS["linear/kappa1"].spec.lengths}
    assert "steps_rel_err_db" not in (out / "leaderboard.json").read_text()  # curves go to the detail files
    assert summary["models"][3]["kind"] == "reference" and summary["models"][3]["rank"] is None

    # the CSV: one row per model, task and scored prompt length, with the interval; no per-step rows
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert list(rows[0]) == ["model", "kind", "task", "family", "n", "nominal", "db", "ci90_low_db", "ci90_high_db",
                             "task_rank"]
    mine = [r for r in rows if r["model"] == "tiny-gd"]
    assert len(mine) == sum(len(t.spec.lengths) for t in TASKS.values())
    kappa1 = [r for r in mine if r["task"] == "linear/kappa1" and r["n"] == "40"]
    assert kappa1[0]["nominal"] == "True" and [float(kappa1[0][k]) for k in ("db", "ci90_low_db", "ci90_high_db")] == [
        -15.0,
        -18.0,
        -12.0,
    ]
    assert len(rows) == sum(len(t["by_length"]) for m in summary["models"] for t in m["tasks"].values() if t)

    # each model's detail file: metadata, command and per-step curves (iter's 15 steps, all kept)
    for m in summary["models"]:
        assert m["detail"] == f"models/{m['key']}.json" and (out / m["detail"]).is_file()
    tiny = json.loads((out / "models" / "sub-tiny-gd.json").read_text())
    assert tiny["meta"]["architecture"] == "<script>alert(1)</script> GD" and tiny["steps"] == {}
    assert "iclbench validate " in tiny["command"] and "submissions/tiny-gd --rerun" in tiny["command"]
    it = json.loads((out / "models" / "base-iter.json").read_text())
    assert "iclbench run --model iter --out" in it["command"]
    assert it["steps"]["linear/kappa1"]["40"] == {"step": list(range(1, 16)), "db": [-2.0 * k for k in range(1, 16)]}

    plots = {p.name for p in (out / "plots").iterdir()}
    assert {f"task-{t.replace('/', '--')}.svg" for t in TASKS} <= plots
    assert {f"steps-{t.replace('/', '--')}.svg" for t in TASKS} <= plots  # "iter" reports steps on every task
    assert {"lasso-shift.svg", "model-sub-tiny-gd.svg", "model-base-iter-steps.svg", "model-base-zero.svg"} <= plots
    assert "model-sub-tiny-gd-steps.svg" not in plots
    assert it["plots"] == {"lengths": "plots/model-base-iter.svg", "steps": "plots/model-base-iter-steps.svg"}

    page = (out / "index.html").read_text()
    for e in entries:
        assert f'id="row-{e.key}"' in page and f'href="models/{e.key}.json"' in page
    assert page.count("<script") == 1 and '<script src="site.js">' in page and "alert(1)" not in page
    assert "Ranking rule" in page and SUITE_VERSION in page and summary["built"] in page
    assert "data:" not in page and "<img" not in page.replace('<img loading="lazy"', "")  # plots load on demand
    for link in re.findall(r'(?:href|src)="([^"]*)"', page):  # relative inside the folder, or a submitter's https
        assert link.startswith(("https://", "#")) or not ("://" in link or link.startswith("/") or ".." in link), link


def test_scores_in_build_order(board: tuple[Path, Path, Path]) -> None:
    subs, baselines, _ = board
    scores = {e.name: e.score for e in rank(load_entries(subs, baselines))}
    # linear pool: lin (-40 dB) beats iter (-25) beats tiny-gd (-15): iter 50 %; elsewhere iter beats tiny-gd: 100 %
    iter_score = (50 + 100 * (len(FAMILIES) - 1)) / len(FAMILIES)
    assert scores == {"iter": iter_score, "tiny-gd": 0.0, "lin": None, "zero": None}


def test_strings_of_a_results_file_cannot_reach_the_page_as_markup(tmp_path: Path) -> None:
    """run.finished is only typed as a string: a day is shown when it is one, nothing otherwise, always escaped."""
    subs = tmp_path / "submissions"
    for name, finished in (("odd-date", '"><!--<script>alert(1)</script>'), ("real-date", "2026-05-04T10:00:00+00:00")):
        folder = static_submission(subs / name, every(-5.0), name=name)
        doc = json.loads((folder / "results.json").read_text())
        doc["run"]["finished"] = finished
        (folder / "results.json").write_text(json.dumps(doc))
    build(subs, tmp_path / "baselines", tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<!--" not in page and "alert(1)" not in page
    dates = {m["name"]: m["date"] for m in json.loads((tmp_path / "out" / "leaderboard.json").read_text())["models"]}
    assert dates == {"odd-date": None, "real-date": "2026-05-04"}


def test_zero_submissions_and_zero_baselines(tmp_path: Path) -> None:
    assert build(tmp_path / "submissions", tmp_path / "baselines", tmp_path / "out") == []
    assert (tmp_path / "out" / "leaderboard.json").is_file()
    assert check(tmp_path / "submissions", tmp_path / "baselines") == []
    with pytest.raises(LeaderboardError, match="nope.md: no such findings page"):
        build(tmp_path / "submissions", tmp_path / "baselines", tmp_path / "out", findings=tmp_path / "nope.md")


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
    assert "1 submission(s), 3 baseline row(s)" in captured.out and "1 invalid submission folder(s) left out" in captured.out
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


@pytest.mark.usefixtures("session_fingerprints")  # the sets from the session's cache, not generated in this process
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


def test_step_curves_are_thinned() -> None:
    assert thin(0) == [] and thin(15) == list(range(1, 16))
    steps = thin(1024)
    assert steps[:16] == list(range(1, 17)) and steps[-1] == 1024 and len(steps) <= 16 + 32 + 1
    assert steps == sorted(set(steps)) and 40 < len(steps)
    ratios = [b / a for a, b in zip(steps[16:], steps[17:])]
    assert max(ratios) < 1.25  # log-spaced: no big jump between kept steps


def test_plot_series_stay_apart_and_axes_fit_the_ranked_models() -> None:
    looks = [(style(i)["color"], style(i)["ls"], style(i)["marker"]) for i in range(40)]
    assert len(set(looks)) == 40 and len({(c, ls) for c, ls, _ in looks}) == 40  # colour and line style alone differ
    ranked = [("a", [1, 2], [-5.0, -12.0], "submission"), ("b", [1, 2], [-2.0, -8.0], "baseline")]
    exact = ("solver", [1, 2], [-300.0, -300.0], "reference")
    lo, hi = limits([*ranked, exact], floor=-138.5)
    assert -14.0 < lo < -12.0 and -2.0 < hi < 0.0  # the reference at -300 dB does not stretch the axis
    lo, _ = limits([*ranked, ("c", [1], [-150.0], "submission")], floor=-138.5)
    assert -150.0 < lo < -138.5  # an error below the round-off floor counts at the floor (drawn on the edge)
    _, hi = limits([*ranked, ("d", [1], [80.0], "submission")], floor=-138.5)
    assert hi < 25.0  # a blow-up is drawn on the edge, not scaled to
    assert limits([exact], floor=-138.5)[0] < -138.5  # references alone: their own range, floored
