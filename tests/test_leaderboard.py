"""`iclbench leaderboard`: the ranking rule, every output file, and `--check` against stale builds."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import pytest
from fixtures.samples import write_samples
from fixtures.submission_kit import results_doc, static_submission

from iclbench.cli import main
from iclbench.leaderboard.build import LeaderboardError, build, check, links, load_entries, rank
from iclbench.leaderboard.page import thin
from iclbench.leaderboard.plots import limits, style
from iclbench.leaderboard.levels import levels
from iclbench.leaderboard.ranking import (
    RANKING_EXAMPLE,
    RANKING_RULE,
    depth,
    depth_curve,
    family_order,
    unranked_reason,
)
from iclbench.samples import SUFFIX
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


def at_levels(name: str, fraction: float, tasks: list[str] | None = None) -> dict:
    """A results document whose error at every length of `tasks` (all by default) is `fraction` of the task's
    reference level in dB: a score of `fraction` there (clipped to 0..1)."""
    doc = results_doc(name, {t: 0.0 for t in (tasks or TASKS)})
    for t, entry in doc["tasks"].items():
        if entry["status"] == "ok":
            entry["lengths"] = {str(n): {"rel_err": {**entry["lengths"][str(n)]["rel_err"], "db": fraction * level}}
                                for n, level in levels()[t].items()}
    return doc


def test_ranking_rule(tmp_path: Path) -> None:
    no_n40 = at_levels("f", 0.5)
    kappa1 = no_n40["tasks"]["linear/kappa1"]
    kappa1["unsupported_lengths"] = [40]
    del kappa1["lengths"]["40"]
    diverges = at_levels("e", 0.5)
    diverges["tasks"]["logistic/kappa1"]["lengths"]["20"]["rel_err"]["db"] = 112.0
    docs = [
        at_levels("exact", 1.0),
        at_levels("half", 0.5),
        at_levels("beyond", 2.0),  # below the reference: clipped at 100 %
        at_levels("worse", -0.5),  # above 0 dB everywhere: none of the gap
        at_levels("kappa1-only", 0.5, ["linear/kappa1"]),
        diverges,
        no_n40,
    ]
    entries = rank(load_entries(tmp_path / "none", write_baselines(tmp_path / "b", *docs)))
    scores = {e.name: e.family_scores for e in entries}
    # by hand: a cell scores its fraction of the gap; a task averages its 5 (kernel: 4) lengths, a family its tasks
    assert scores["exact"] == scores["beyond"] == {f: 100.0 for f in FAMILY.values()}
    assert scores["half"] == {f: 50.0 for f in FAMILY.values()} and scores["worse"] == {f: 0.0 for f in FAMILY.values()}
    assert scores["kappa1-only"] == {f: 12.5 if f == "linear" else None for f in FAMILY.values()}  # 0.5 / 4 tasks
    assert scores["e"]["logistic"] == pytest.approx(50 * (4 / 5 + 1) / 2)  # +112 dB costs one length of 10
    assert scores["f"]["linear"] == pytest.approx(100 * (0.4 + 3 * 0.5) / 4)  # n=40 unscored: 0 of 5 lengths
    e = next(x for x in entries if x.name == "e")
    assert e.length_scores["logistic"] == {n: 25.0 if n == 20 else 50.0 for n in (5, 10, 20, 40, 80)}
    assert e.task_scores["logistic/kappa1"] == pytest.approx(40.0)
    assert e.task_scores["linear/noisy"] == pytest.approx(50.0)
    # without per-prompt samples nothing is told apart: every rank spans its pool
    linear = [x for x in entries if x.family_ranks["linear"]]
    assert len(linear) == 7 and {x.family_ranks["linear"] for x in linear} == {(1, 7)}
    # with samples, the paired intervals tell the levels apart; equal scores tie
    samples = tmp_path / "with-samples"
    write_baselines(samples, *docs)
    for doc in docs:
        write_samples(samples / f"{doc['model']['name']}{SUFFIX}", doc)
    ranked = {x.name: x for x in rank(load_entries(tmp_path / "none", samples))}
    assert ranked["beyond"].family_ranks["kernel"][0] == 1 and ranked["exact"].family_ranks["kernel"][1] == 2
    assert {ranked[n].family_ranks["kernel"] for n in ("half", "e", "f")} == {(3, 5)}  # equal errors: a tie
    assert ranked["worse"].family_ranks["kernel"] == (6, 6)
    assert ranked["half"].family_ranks["logistic"] == ranked["f"].family_ranks["logistic"] == (3, 4)
    assert ranked["e"].family_ranks["logistic"] == (5, 5)  # one length of ten lost: told apart below them
    order = [x.name for x in family_order(list(ranked.values()), "linear")]
    assert order == ["beyond", "exact", "e", "half", "f", "kappa1-only", "worse"]  # by score, then name


def test_solver_rows(tmp_path: Path) -> None:
    gd16 = results_doc("gd@16", every(-16.0), steps=[-float(k) for k in range(1, 17)])
    ista16 = results_doc("ista@16", every(-16.0), steps=[-float(k) for k in range(1, 17)])
    for name, task in ista16["tasks"].items():  # 3 steps on the lasso tasks, 16 elsewhere
        if FAMILY.get(name) == "lasso":
            for m in task["lengths"].values():
                m["steps_rel_err_db"] = [-1.0, -2.0, -3.0]
    newton = results_doc("newton", every(-30.0), steps=[-1.0, -2.0, -3.0])
    gd = results_doc("gd", every(-30.0), steps=[-0.5 * k for k in range(1, 61)])
    docs = write_baselines(tmp_path / "b", gd16, ista16, newton, gd, results_doc("gd@4", every(-4.0), steps=[-4.0] * 4))
    subs = tmp_path / "submissions"
    doc = json.loads((static_submission(subs / "tiny-gd", every(-5.0)) / "results.json").read_text())
    for task in doc["tasks"].values():  # per-layer errors of an 8-layer model, on the tasks it scores
        for m in task.get("lengths", {}).values():
            m["steps_rel_err_db"] = [-0.5 * k for k in range(1, 9)]
    (subs / "tiny-gd" / "results.json").write_text(json.dumps(doc))
    entries = {e.name: e for e in rank(load_entries(subs, docs))}
    rows = {n: (e.kind, e.budget, e.ranked) for n, e in entries.items() if n != "tiny-gd"}
    assert rows == {
        **{s: ("reference", None, False) for s in ("gd", "newton")},  # at their last step
        **{s: ("comparator", None, True) for s in ("gd@4", "gd@16", "ista@16")},
        **{f"{s}@8": ("cut", 8, False) for s in ("gd", "ista")},  # the submission's own depth, from the @16 curves
    }  # newton@16 is not in this folder: no newton cut
    assert entries["gd@8"].scores["linear/kappa1"] == -8.0
    assert entries["ista@8"].scores["lasso/fixed"] == -3.0  # 3 steps there: its last
    assert entries["ista@8"].family_scores["linear"] is not None  # scored, shown, never ranked
    assert entries["ista@8"].task_ranks == {t: None for t in TASKS}
    assert entries["gd"].family_ranks == {f: None for f in set(FAMILY.values())}
    assert unranked_reason(entries["gd@8"]).startswith("a cut at a submission's depth")
    solvers = {n: entries[n] for n in ("gd@16", "gd", "newton")}
    assert depth_curve("linear/kappa1", ("gd@16", "gd"), solvers) == [-float(k) for k in range(1, 17)] + [
        -0.5 * k for k in range(17, 61)]  # 16 tuned steps, then gd's own run beyond them
    deep = copy.deepcopy(entries["tiny-gd"])
    deep.scores = {t: -20.0 for t in TASKS}
    assert depth(deep, "linear/kappa1", solvers, {})["gd"] == 40  # gd's own 40th step: -20 dB
    assert depth(entries["tiny-gd"], "linear/kappa1", solvers, {}) == {"gd": 5, "newton": "> 3", "ista": None}

    build(subs, docs, tmp_path / "out")  # a cut row's detail file holds the curves cut at its budget
    models = tmp_path / "out" / "models"
    full, cut = (json.loads((models / f"{k}.json").read_text()) for k in ("base-gd-16", "base-gd-8"))
    assert full["steps"]["linear/kappa1"]["40"]["step"] == list(range(1, 17))
    assert cut["steps"]["linear/kappa1"]["40"] == {"step": list(range(1, 9)), "db": [-float(k) for k in range(1, 9)]}
    assert cut["plots"] == full["plots"] and cut["why"].startswith("a cut") and full["why"] is None


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


REPOSITORY = "https://example.org/iclbench"


def test_build_writes_every_output(board: tuple[Path, Path, Path]) -> None:
    subs, baselines, out = board
    entries = build(subs, baselines, out, repository=REPOSITORY)
    names = [e.name for e in entries]
    assert names == ["tiny-gd", "iter", "lin", "zero"]  # by kind (submissions, baselines, references), then name
    readme = (out / "README.md").read_text()
    assert "## Ranking rule" in readme and RANKING_RULE in readme and "## Overall" not in readme
    for fam in set(FAMILY.values()):
        assert f"## {fam}" in readme
    linear = readme[readme.index("## linear"):readme.index("## logistic")]
    rows = [line for line in linear.splitlines() if line.startswith("|")][2:]
    assert [row.split("|")[2].strip() for row in rows] == ["lin", "iter", "tiny-gd", "zero"]
    assert "| 1–3    | lin" in linear  # no per-prompt samples: nothing told apart, every rank spans the pool

    summary = json.loads((out / "leaderboard.json").read_text())
    assert [m["name"] for m in summary["models"]] == names
    assert summary["suite_version"] == SUITE_VERSION and summary["ranking_rule"] == RANKING_RULE
    assert summary["links"] == {"repository": REPOSITORY, "submitting": f"{REPOSITORY}/blob/HEAD/SUBMITTING.md",
                                "findings": f"{REPOSITORY}/blob/HEAD/docs/findings.md"}
    tiny = summary["models"][0]
    assert tiny["kind"] == "submission" and tiny["parameters"] == 1 and tiny["code"] == "https://example.org/tiny-gd"
    kappa1 = tiny["tasks"]["linear/kappa1"]
    assert kappa1["db"] == -15.0 and kappa1["ci90_db"] == [-18.0, -12.0] and kappa1["rank"] == [1, 3]
    assert set(kappa1["by_length"]) == {str(n) for n in TASKS["linear/kappa1"].spec.lengths}
    assert kappa1["by_length"]["40"]["score"] == round(100 * 15 / 138.47, 2)  # -15 dB of the floor's -138.47
    assert "steps_rel_err_db" not in (out / "leaderboard.json").read_text()  # curves go to the detail files
    assert summary["models"][3]["kind"] == "reference" and summary["models"][3]["families"]["linear"]["rank"] is None

    # the CSV: one row per model, task and scored prompt length, with the interval, level and score
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert list(rows[0]) == ["model", "kind", "task", "family", "n", "nominal", "db", "ci90_low_db", "ci90_high_db",
                             "level_db", "score", "task_score", "task_rank"]
    mine = [r for r in rows if r["model"] == "tiny-gd"]
    assert len(mine) == sum(len(t.spec.lengths) for t in TASKS.values())
    (row,) = [r for r in mine if r["task"] == "linear/kappa1" and r["n"] == "40"]
    assert row["nominal"] == "True"
    assert [float(row[k]) for k in ("db", "ci90_low_db", "ci90_high_db")] == [-15.0, -18.0, -12.0]
    assert float(row["level_db"]) == levels()["linear/kappa1"][40] and row["task_rank"] == "1–3"
    assert float(row["task_score"]) == kappa1["score"]
    assert len(rows) == sum(len(t["by_length"]) for m in summary["models"] for t in m["tasks"].values())

    # each model's detail file, and the same as a script (the page loads it, from file:// too)
    for m in summary["models"]:
        assert m["detail"] == f"models/{m['key']}.json" and (out / m["detail"]).is_file()
        script = (out / m["detail"].replace(".json", ".js")).read_text()
        assert script.startswith("iclbenchDetail(")
        assert json.loads(script[15:-3]) == json.loads((out / m["detail"]).read_text())
    tiny = json.loads((out / "models" / "sub-tiny-gd.json").read_text())
    assert tiny["meta"]["architecture"] == "<script>alert(1)</script> GD" and tiny["steps"] == {}
    assert "</script>" not in (out / "models" / "sub-tiny-gd.js").read_text()  # cannot close the script element
    assert "iclbench validate " in tiny["command"] and "submissions/tiny-gd --rerun" in tiny["command"]
    assert tiny["kind_label"] == "submission" and tiny["why"] is None
    it = json.loads((out / "models" / "base-iter.json").read_text())
    assert "iclbench run --model iter --out" in it["command"]
    assert it["steps"]["linear/kappa1"]["40"] == {"step": list(range(1, 16)), "db": [-2.0 * k for k in range(1, 16)]}

    plots = {p.name for p in (out / "plots").iterdir()}
    assert {f"task-{t.replace('/', '--')}.svg" for t in TASKS} <= plots
    assert {f"steps-{t.replace('/', '--')}.svg" for t in TASKS} <= plots  # "iter" reports steps on every task
    assert {"lasso-shift.svg", "model-sub-tiny-gd.svg", "model-base-iter-steps.svg", "model-base-zero.svg"} <= plots
    assert "model-sub-tiny-gd-steps.svg" not in plots
    assert it["plots"] == {"lengths": "plots/model-base-iter.svg", "steps": "plots/model-base-iter-steps.svg"}
    lin = (out / "plots" / "model-base-lin.svg").read_text()
    assert "linear" in lin and "kernel" not in lin and "not scored" not in lin  # only the families it is scored on

    page = (out / "index.html").read_text()
    for e in entries:
        assert f'id="row-{e.key}"' in page and f'href="models/{e.key}.json"' in page
    assert page.count("<script") == 1 and '<script src="site.js">' in page and "alert(1)" not in page
    assert "Ranking rule" in page and SUITE_VERSION in page and summary["built"] in page
    assert "data:" not in page and "<img" not in page.replace('<img loading="lazy"', "")  # plots load on demand
    assert f'href="{REPOSITORY}/blob/HEAD/SUBMITTING.md"' in page and 'href="findings.html"' not in page
    for link in re.findall(r'(?:href|src)="([^"]*)"', page):  # relative inside the folder, or https
        assert link.startswith(("https://", "#")) or not ("://" in link or link.startswith("/") or ".." in link), link


def test_links_without_a_repository(board: tuple[Path, Path, Path]) -> None:
    """A local build (no repository URL) links to the checkout the site is built in, one folder up."""
    local = {"repository": "..", "submitting": "../SUBMITTING.md", "findings": "findings.html"}
    assert links(None, findings=True) == local
    assert links(REPOSITORY + "/", findings=False)["findings"] == f"{REPOSITORY}/blob/HEAD/docs/findings.md"


def test_scores_in_build_order(board: tuple[Path, Path, Path]) -> None:
    subs, baselines, _ = board
    entries = {e.name: e for e in rank(load_entries(subs, baselines))}
    tiny, it, lin = entries["tiny-gd"], entries["iter"], entries["lin"]
    assert all(it.family_scores[f] > tiny.family_scores[f] for f in FAMILY.values())  # -25 dB against -15 dB
    assert lin.family_scores["linear"] > it.family_scores["linear"] and lin.family_scores["kernel"] is None
    assert entries["zero"].family_scores == {f: 0.0 for f in FAMILY.values()}  # scored, never ranked
    assert entries["zero"].family_ranks == {f: None for f in FAMILY.values()}


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
    assert (baselines / "zero.samples.safetensors").is_file()  # per-prompt samples: they resolve comparisons
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
