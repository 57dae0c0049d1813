"""The ranking rule on real results: rows, gap-closed scores over every length, pool independence, paired
resolution and rank ranges, verification gating, the optimizer-equivalent depth and the worked example.

The submissions are the committed ones; the baselines' numbers come from `fixtures.baseline_snapshot` (their
results files are built by CI, not committed). Per-prompt samples, which resolve comparisons, are synthetic
(`fixtures.samples`) or, in one test, real runs of two committed submissions on one task."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures import baseline_snapshot
from fixtures.samples import write_samples
from fixtures.submission_kit import results_doc, static_submission

from iclbench import evaluate, samples
from iclbench.leaderboard import levels
from iclbench.leaderboard.build import attach_samples, load_entries, tables
from iclbench.leaderboard.ranking import (
    COMPARATORS,
    FAMILY_TASKS,
    FLOOR_DB,
    RANKING_EXAMPLE,
    REFERENCES,
    SOLVERS,
    Entry,
    cell_score,
    depth,
    family_order,
    lasso_gap_db,
    rank,
    resolve,
    site_summary,
)
from iclbench.metrics import interval
from iclbench.submissions.rerun import db_close
from iclbench.submissions.verify import FORMAT
from iclbench.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = ROOT / "submissions"
LINKS = {"repository": "https://example.org/repo", "submitting": "https://example.org/s", "findings": "findings.html"}


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    """The baselines' results (`fixtures.baseline_snapshot`), by model name."""
    return baseline_snapshot.docs()


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory, docs: dict[str, dict]) -> Path:
    """A folder of the baselines' results files."""
    folder = tmp_path_factory.mktemp("baselines")
    for name, doc in docs.items():
        (folder / f"{name}.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def board(baselines: Path) -> dict[str, Entry]:
    """The committed submissions and the baselines, ranked, by name."""
    return {e.name: e for e in rank(load_entries(SUBMISSIONS, baselines))}


def ranked_with(tmp_path: Path, docs: dict[str, dict], *extra: dict) -> dict[str, Entry]:
    """The committed submissions and `docs` (with `extra` results) as baselines, ranked, by name."""
    folder = tmp_path / "baselines"
    folder.mkdir(parents=True)
    for doc in [*docs.values(), *extra]:
        (folder / f"{doc['model']['name']}.json").write_text(json.dumps(doc))
    return {e.name: e for e in rank(load_entries(SUBMISSIONS, folder))}


def renamed(doc: dict, name: str) -> dict:
    doc = copy.deepcopy(doc)
    doc["model"]["name"] = doc["model"]["source"] = name
    return doc


def unsupported(doc: dict, *tasks: str, name: str | None = None) -> dict:
    """`doc` with `tasks` declared unsupported (and renamed to `name`)."""
    doc = copy.deepcopy(doc)
    for t in tasks:
        doc["tasks"][t] = {"status": "unsupported", "spec": doc["tasks"][t]["spec"]}
    return renamed(doc, name) if name else doc


def nominal_only(e: Entry, fam: str) -> float:
    """The family score a nominal-length-only rule would give (the gap-closed score at each task's nominal length)."""
    cells = []
    for t in FAMILY_TASKS[fam]:
        db, n = e.scores[t], TASKS[t].spec.nominal
        cells.append(0.0 if db is None else float(cell_score(db, e.floor_db, levels.levels()[t][n])))
    return 100 * sum(cells) / len(cells)


def test_rows_references_comparators_and_cuts(board: dict[str, Entry]) -> None:
    for name in [*REFERENCES, *SOLVERS]:
        e = board[name]
        assert e.kind == "reference" and not e.ranked
        assert set(e.family_ranks.values()) == {None} and set(e.task_ranks.values()) == {None}
    assert board["logistic-optimum"].scores["logistic/kappa1"] == -300.0  # the logistic target itself
    for name in COMPARATORS:  # k steps at the step tuned for k: ranked
        assert board[name].kind == "comparator" and board[name].ranked
    assert board["gd@4"].family_ranks["linear"] is not None
    cut = board["gd@8"]  # the looped models' 8 layers: 8 steps of gd@16's curve, shown beside them, not ranked
    assert cut.kind == "cut" and cut.budget == 8 and not cut.ranked and cut.family_ranks["lasso"] is None
    assert cut.scores["linear/kappa1"] == board["gd@16"].results["tasks"]["linear/kappa1"]["lengths"]["40"][
        "steps_rel_err_db"][7]
    logistic = [e.name for e in family_order(list(board.values()), "logistic") if e.family_ranks["logistic"]]
    assert "logistic-optimum" not in logistic and logistic[0] == "newton@16"


def test_scores_are_pool_independent(tmp_path: Path, docs: dict[str, dict], board: dict[str, Entry]) -> None:
    """Adding five copies of a weak model changes no other model's score, and the order of no two others."""
    weak = results_doc("weak", {t: -0.5 for t in TASKS})
    copies = [renamed(weak, f"weak-{i}") for i in range(5)]
    after = ranked_with(tmp_path, docs, *copies)
    for name, e in board.items():
        a = after[name]
        assert (a.task_scores, a.family_scores, a.length_scores) == (e.task_scores, e.family_scores, e.length_scores)
    for fam in FAMILY_TASKS:
        before_order = [e.name for e in family_order(list(board.values()), fam)]
        after_order = [e.name for e in family_order(list(after.values()), fam)]
        assert [name for name in after_order if not name.startswith("weak")] == before_order


def test_lista_cp_ranks_below_the_looped_lsa_on_lasso(board: dict[str, Entry]) -> None:
    """lista-cp (+112 dB on lasso/random; scored at n = 10 only) below both looped LSAs, which it beat on win rate."""
    lista_cp = board["lista-cp"]
    assert lista_cp.scores["lasso/random"] > 100
    order = [e.name for e in family_order(list(board.values()), "lasso")]
    for looped in ("looped-lsa-norm-lasso", "looped-lsa-norm-lasso-random"):
        assert lista_cp.family_scores["lasso"] < board[looped].family_scores["lasso"]
        assert order.index(looped) < order.index("lista-cp")
    assert lista_cp.length_scores["lasso"][5] == 0.0  # a length not scored counts 0, like the zero predictor
    assert lista_cp.task_scores["lasso/random"] == 0.0  # the divergence costs every length of the task
    assert nominal_only(lista_cp, "lasso") > nominal_only(board["looped-lsa-norm-lasso-random"], "lasso")


def test_a_blow_up_at_short_lengths_loses(tmp_path: Path, docs: dict[str, dict], board: dict[str, Entry]) -> None:
    """lsa-4l-kappa100 (+198 dB at n = 5 on kappa100) against the same errors, but -1 dB where it blows up."""
    blown = board["lsa-4l-kappa100"]
    assert blown.results["tasks"]["linear/kappa100"]["lengths"]["5"]["rel_err"]["db"] > 190
    tamed = renamed(blown.results, "lsa-4l-kappa100-tamed")
    for task in tamed["tasks"].values():
        for m in task.get("lengths", {}).values():
            if m["rel_err"]["db"] > 0:  # +198, +84 and +72 dB at n = 5 and 10, +0.1 dB on noisy at n = 5
                m["rel_err"]["db"] = -1.0
    ranked = ranked_with(tmp_path, docs, tamed)
    t = ranked["lsa-4l-kappa100-tamed"]
    assert t.scores == blown.scores  # the same at every nominal length: a nominal rule could not tell them apart
    assert t.family_scores["linear"] > blown.family_scores["linear"]
    order = [e.name for e in family_order(list(ranked.values()), "linear")]
    assert order.index("lsa-4l-kappa100-tamed") < order.index("lsa-4l-kappa100")
    worst = min(blown.length_scores["linear"], key=blown.length_scores["linear"].get)
    assert worst == 5 and blown.length_scores["linear"][5] < t.length_scores["linear"][5]


@pytest.mark.parametrize(("model", "task", "family"), [("lista-cp", "lasso/random", "lasso"), ("ols", "linear/noisy", "linear")])
def test_declaring_a_task_unsupported_never_helps(
    tmp_path: Path, docs: dict[str, dict], model: str, task: str, family: str
) -> None:
    name = f"{model}-as-submitted"  # ols is a reference: ranked here under another name
    others = {k: v for k, v in docs.items() if k != model}
    before = ranked_with(tmp_path / "a", others, unsupported(docs[model], name=name))[name]
    after = ranked_with(tmp_path / "b", others, unsupported(docs[model], task, name=name))[name]
    assert after.task_scores[task] is None and after.family_scores[family] <= before.family_scores[family]
    for fam in FAMILY_TASKS:
        if fam != family:
            assert after.family_scores[fam] == before.family_scores[fam]


def test_no_subset_of_unsupported_tasks_helps(board: dict[str, Entry]) -> None:
    """Property: for random models and random sets of tasks declared unsupported, no score rises."""
    rng = random.Random(0)
    entries = list(board.values())
    names = sorted(e.name for e in entries if e.ranked)
    for _ in range(25):
        victim = board[rng.choice(names)]
        scored = [t for t in TASKS if victim.scores[t] is not None]
        drop = rng.sample(scored, rng.randint(1, len(scored)))
        doc = unsupported(victim.results, *drop)
        clone = Entry(victim.key, victim.name, victim.kind, doc, victim.meta, victim.command)
        after = {e.name: e for e in rank([clone if e is victim else copy.copy(e) for e in entries])}[victim.name]
        for fam in FAMILY_TASKS:
            assert (after.family_scores[fam] or 0) <= (victim.family_scores[fam] or 0)
        assert all(after.task_scores[t] is None for t in drop)


def test_resolution_and_rank_ranges() -> None:
    """Two scores are told apart only where the 90 % interval of their paired replicates' difference excludes 0;
    a rank runs from 1 + those told apart above to the pool's size minus those told apart below."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.05, 1000)  # the prompts' common difficulty: paired replicates move together
    scores = {
        "a": (0.90, 0.90 + shared + rng.normal(0, 0.002, 1000)),
        "b": (0.80, 0.80 + shared + rng.normal(0, 0.002, 1000)),  # 0.1 below a, far outside the paired noise
        "c": (0.799, 0.799 + shared + rng.normal(0, 0.002, 1000)),  # 0.001 below b: inside it
        "d": (0.5, None),  # no samples: told apart from nothing
    }
    assert resolve(scores) == {"a": (1, 2), "b": (2, 4), "c": (2, 4), "d": (1, 4)}
    lo, hi = interval(scores["b"][1] - scores["c"][1])
    assert lo < 0 < hi and scores["b"][0] > scores["c"][0]  # b scores higher, but the interval holds 0: a tie
    assert interval(scores["a"][1] - np.roll(scores["b"][1], 1))[0] < 0  # unpaired, the same 0.1 is not resolved


def test_no_decided_win_inside_the_paired_interval(tmp_path: Path) -> None:
    """On real per-prompt errors: two committed kernel models 0.04 dB apart at kernel/relu's nominal length (a
    win under the former 0.01 dB tie), which `iclbench compare` cannot tell apart there, tie on that task."""
    names = ("kernel-exp-attn-relu-4h", "kernel-exp-attn-softmax-4h")
    entries = []
    for name in names:
        res = evaluate(str(SUBMISSIONS / name / "model.py"), ["kernel/relu"], out=tmp_path, log_samples=True,
                       progress=False)
        doc = json.loads((SUBMISSIONS / name / "results.json").read_text())
        doc = unsupported(doc, *[t for t in TASKS if t != "kernel/relu"])
        entry = Entry(f"sub-{name}", name, "submission", doc, {}, "")
        assert attach_samples(entry, res.samples_path) == []
        entries.append(entry)
    a, b = rank(entries)
    gap = a.scores["kernel/relu"] - b.scores["kernel/relu"]
    assert 0.01 < abs(gap) < 0.1
    row = next(r for r in samples.compare(samples.load(tmp_path / f"{names[0]}.json"),
                                          samples.load(tmp_path / f"{names[1]}.json"), ["kernel/relu"]))
    assert row["ci90_db"][0] < 0 < row["ci90_db"][1]  # iclbench compare: no clear difference
    assert a.task_scores["kernel/relu"] != b.task_scores["kernel/relu"]
    assert a.task_ranks["kernel/relu"] == b.task_ranks["kernel/relu"] == (1, 2)
    reps = [e.boot for e in (a, b)]
    assert set(reps[0]) == {("kernel/relu", n) for n in TASKS["kernel/relu"].spec.lengths}


def test_samples_must_be_the_rows(tmp_path: Path) -> None:
    """Samples of other files, data or errors than the row's results are refused, naming the file."""
    doc = results_doc("m", {"kernel/linear": -10.0})
    entry = Entry("m", "m", "baseline", doc, {}, "")
    good = write_samples(tmp_path / "good.samples.safetensors", doc)
    assert attach_samples(entry, good) == [] and len(entry.boot) == len(TASKS["kernel/linear"].spec.lengths)
    replicates = entry.boot["kernel/linear", 14]
    assert abs(float(np.median(replicates)) + 10.0) < 0.5  # centred on the results file's error
    other = copy.deepcopy(doc)
    other["tasks"]["kernel/linear"]["lengths"]["14"] = {"rel_err": {"db": -12.0}}
    stale = write_samples(tmp_path / "stale.samples.safetensors", other)
    (problem,) = attach_samples(Entry("m", "m", "baseline", doc, {}, ""), stale)
    assert "stale.samples.safetensors: kernel/linear n=14 differs from m's results" in problem
    renamed_doc = renamed(doc, "someone-else")
    other_model = write_samples(tmp_path / "x.samples.safetensors", renamed_doc)
    (problem,) = attach_samples(Entry("m", "m", "baseline", doc, {}, ""), other_model)
    assert "samples of 'someone-else'" in problem
    assert attach_samples(entry, tmp_path / "missing.samples.safetensors") == []  # none: nothing resolved


def test_a_failed_verification_is_shown_marked_and_not_ranked(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    scores = {t: -10.0 for t in FAMILY_TASKS["linear"]}
    failed = static_submission(subs / "failed-one", {t: -30.0 for t in scores}, name="failed")
    static_submission(subs / "unverified-one", scores, name="unverified")
    doc = json.loads((failed / "results.json").read_text())
    report = {"format": FORMAT, "verdict": "fail", "date": "2026-11-30T00:00:00+00:00", "model": doc["model"]}
    (failed / "verification.json").write_text(json.dumps(report))
    entries = {e.name: e for e in rank(load_entries(subs, tmp_path / "none"))}
    f, u = entries["failed"], entries["unverified"]
    assert f.verification == "failed 2026-11-30" and not f.ranked and f.family_ranks["linear"] is None
    assert f.family_scores["linear"] > u.family_scores["linear"]  # shown with its scores, better, yet not ranked
    assert u.verification == "not verified" and u.ranked and u.family_ranks["linear"] == (1, 1)
    table = tables(list(entries.values()))["linear"]
    assert "failed 2026-11-30" in table and "not verified" in table
    assert [e.name for e in family_order(list(entries.values()), "linear")] == ["unverified", "failed"]


def test_floors_follow_the_dtype() -> None:
    assert FLOOR_DB["float32"] == pytest.approx(-138.47, abs=0.01) and FLOOR_DB["float64"] == -300.0
    assert cell_score(-200.0, FLOOR_DB["float32"], -138.47) == 1.0  # below float32's round-off: the whole gap
    assert cell_score(-69.235, FLOOR_DB["float32"], -138.47) == pytest.approx(0.5)
    assert cell_score(+112.0, FLOOR_DB["float32"], -12.0) == 0.0 and cell_score(-0.0, FLOOR_DB["float32"], -12.0) == 0.0
    assert cell_score(-150.0, FLOOR_DB["float64"], -100.0) == 1.0  # clipped at the reference


def test_levels_are_the_best_exact_references(docs: dict[str, dict]) -> None:
    """The pinned levels are those of the baselines' results (the snapshot), within a re-run's tolerance."""
    found = levels.levels_from(docs)
    pinned = levels.levels()
    for task, by_n in found.items():
        for n, v in by_n.items():
            assert db_close(v["db"], pinned[task][int(n)], "float32"), (task, n)
    assert found["ar/uniform"]["5"]["source"] in ("ols", "ridge") and "true-w" not in levels.SOURCES
    assert pinned["logistic/kappa1"][20] == pytest.approx(FLOOR_DB["float32"], abs=0.01)


def synthetic(name: str, kind: str, task: str, level: float, steps: list[float]) -> Entry:
    doc = results_doc(name, {task: level}, steps=steps)
    return Entry(name, name, kind, doc, {}, "")


def test_depth_counts_the_running_best_and_its_two_edges() -> None:
    """Tiny synthetic curves: the first step whose running best reaches the model; "> K" when the budget ends
    first, "never" when the solution the optimizer converges to is worse than the model."""
    task = "linear/noisy"  # gd converges to ols
    gd = synthetic("gd@16", "comparator", task, -5.0, [-1.0, -4.0, -7.0, -6.0, -5.0])  # bottoms at step 3
    newton = synthetic("newton", "reference", task, -8.0, [-2.0, -8.0])
    ols = synthetic("ols", "reference", task, -5.0, [-5.0])
    ridge = synthetic("ridge", "reference", task, -8.0, [-8.0])
    solvers, limits = {"gd@16": gd, "newton": newton}, {"ols": ols, "ridge": ridge}
    model = synthetic("m", "submission", task, -6.5, [-3.0, -6.5])
    assert depth(model, task, solvers, limits) == {"gd": 3, "newton": 2, "ista": None}
    model.results["tasks"][task]["lengths"]["40"]["rel_err"]["db"] = -7.5  # below gd's best and ols's -5 dB
    assert depth(model, task, solvers, limits)["gd"] == "never"
    limits["ols"] = synthetic("ols", "reference", task, -9.0, [-9.0])  # the limit below: gd gets there later
    assert depth(model, task, solvers, limits)["gd"] == "> 5"
    flat = synthetic("f", "submission", task, -3.0, None)  # no per-layer errors: no depth
    assert depth(flat, task, solvers, limits) is None


def test_depth_on_sparse_linear_counts_ista_up_to_the_exact_lasso() -> None:
    """On garg/sparse-linear (ista only runs there, and converges to lasso-exact): a model better than the exact
    lasso is "never" reached, one within ista's curve is reached at its step."""
    task = "garg/sparse-linear"
    ista = synthetic("ista", "reference", task, -10.0, [-2.0, -6.0, -10.0])
    limits = {"lasso-exact": synthetic("lasso-exact", "reference", task, -12.0, [-12.0])}
    model = synthetic("m", "submission", task, -20.0, [-5.0, -20.0])
    assert depth(model, task, {"ista": ista}, limits)["ista"] == "never"
    model.results["tasks"][task]["lengths"]["10"]["rel_err"]["db"] = -8.0
    assert depth(model, task, {"ista": ista}, limits)["ista"] == 3


def test_worked_example_matches_the_committed_results(board: dict[str, Entry]) -> None:
    e = board["lsa-4l-kappa100"]
    stated = {t: float(v) for t, v in re.findall(r"(linear/\w+) (-?[0-9.]+) %", RANKING_EXAMPLE)}
    assert stated == {t: round(e.task_scores[t], 2) for t in FAMILY_TASKS["linear"]}
    assert f"a linear score of {e.family_scores['linear']:.2f} %" in RANKING_EXAMPLE
    pool = sum(x.family_ranks["linear"] is not None for x in board.values())
    assert f"one of {pool} models ranked in the family" in RANKING_EXAMPLE
    kappa100, level = e.results["tasks"]["linear/kappa100"]["lengths"], levels.levels()["linear/kappa100"]
    for n in ("5", "10"):
        assert f"{kappa100[n]['rel_err']['db']:+.1f} dB at n = {n}" in RANKING_EXAMPLE
    numbers = [f"{kappa100[n]['rel_err']['db']:.2f}" for n in ("20", "40", "80")]
    numbers += [f"{v:.2f}" for v in level.values()]
    numbers += [f"{100 * float(cell_score(kappa100[str(n)]['rel_err']['db'], e.floor_db, v)):.2f}"
                for n, v in level.items()]
    numbers.append(f"{100 * float(cell_score(e.scores['linear/kappa100'], e.floor_db, level[40])):.2f} %")
    assert all(number in RANKING_EXAMPLE for number in numbers), [x for x in numbers if x not in RANKING_EXAMPLE]


def test_summary_columns(board: dict[str, Entry]) -> None:
    entries = rank(list(board.values()))
    summary = site_summary(entries, "2026-01-01", "0" * 64, LINKS)
    assert set(summary) == {
        "suite_version", "iclbench_version", "built", "inputs_sha256", "ranking_rule", "ranking_example", "links",
        "kinds", "families", "tasks", "models",
    }
    model_keys = {
        "key", "name", "kind", "ranked", "budget_steps", "coverage", "resolved", "families", "tasks", "lasso_gap_db",
        "parameters", "date", "paper", "code", "verification", "command", "detail",
    }
    task_keys = {"db", "ci90_db", "score", "rank", "by_length", "depth", "error_rate", "in_pool"}
    family_keys = {"rank", "pool", "score", "worst_length", "by_length", "coverage"}
    for m in summary["models"]:
        assert set(m) == model_keys and all(set(t) == task_keys for t in m["tasks"].values())
        assert all(set(f) == family_keys for f in m["families"].values())
    models = {m["name"]: m for m in summary["models"]}
    looped = models["looped-lsa-norm-lasso"]
    e = board["looped-lsa-norm-lasso"]
    assert looped["lasso_gap_db"]["random"] == round(e.scores["lasso/random"] - e.scores["lasso/fixed"], 2)
    assert lasso_gap_db(e, 40)["random"] == pytest.approx(
        e.results["tasks"]["lasso/random"]["lengths"]["40"]["rel_err"]["db"]
        - e.results["tasks"]["lasso/fixed"]["lengths"]["40"]["rel_err"]["db"]
    )
    logistic = models["lsa-norm-4l-logistic"]["tasks"]["logistic/kappa1"]
    assert logistic["depth"]["gd"] is not None and logistic["depth"]["ista"] is None  # ista does not run there
    sub = models["lsa-4l-kappa100"]
    assert sub["coverage"] == [4, len(TASKS)] and sub["families"]["linear"]["coverage"] == [4, 4]
    pool = sum(m["families"]["linear"]["rank"] is not None for m in summary["models"])
    assert sub["families"]["linear"]["pool"] == pool
    assert sub["families"]["kernel"] == {"rank": None, "pool": summary["models"][0]["families"]["kernel"]["pool"],
                                         "score": None, "worst_length": None, "by_length": {}, "coverage": [0, 3]}
    assert set(sub["tasks"]["linear/kappa100"]["by_length"]) == {"5", "10", "20", "40", "80"}
    assert sub["tasks"]["linear/kappa100"]["by_length"]["5"]["score"] == 0.0  # +198 dB: none of the gap
    assert models["gd@4"]["budget_steps"] is None and models["gd@8"]["budget_steps"] == 8
