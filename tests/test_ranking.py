"""The ranking rule on real results: references, floors, coverage, family views, optimizer-equivalent depth.

The submissions are the committed ones; the baselines' numbers come from `fixtures.baseline_snapshot` (their
results files are built by CI, not committed)."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import pytest
from fixtures import baseline_snapshot
from fixtures.submission_kit import results_doc

from iclbench.leaderboard import findings
from iclbench.leaderboard.build import load_entries, tables
from iclbench.leaderboard.ranking import (
    FAMILY_TASKS,
    FLOOR_DB,
    RANKING_EXAMPLE,
    REFERENCES,
    Entry,
    compare,
    depth,
    family_order,
    lasso_gap_db,
    rank,
    site_summary,
)
from iclbench.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = ROOT / "submissions"


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


def unsupported(doc: dict, *tasks: str, name: str | None = None) -> dict:
    """`doc` with `tasks` declared unsupported (and renamed to `name`)."""
    doc = copy.deepcopy(doc)
    for t in tasks:
        doc["tasks"][t] = {"status": "unsupported", "spec": doc["tasks"][t]["spec"]}
    if name:
        doc["model"]["name"] = name
    return doc


def test_references_are_shown_never_ranked(board: dict[str, Entry]) -> None:
    for name in [*REFERENCES, "gd", "newton", "newton3", "ista", "fista"]:
        e = board[name]
        assert e.kind == "reference" and e.rank is None and e.score is None
        assert set(e.family_ranks.values()) == {None} and set(e.task_ranks.values()) == {None}
    optimum = board["logistic-optimum"]  # computes the logistic target itself: -300 dB on both tasks
    assert optimum.scores["logistic/kappa1"] == -300.0
    logistic = [e.name for e in family_order(list(board.values()), "logistic") if e.family_ranks["logistic"]]
    assert "logistic-optimum" not in logistic and logistic[0] == "newton @16 steps"
    assert board["newton @16 steps"].kind == "baseline" and board["newton @16 steps"].budget == 16
    # comparators at matched budgets are ranked, those at a submission's own depth (8: the looped models) shown only
    assert board["gd @4 steps"].family_ranks["linear"] is not None
    assert board["gd @8 steps"].ranked is False and board["gd @8 steps"].family_ranks["linear"] is None


def test_kernel_linear_floor_does_not_dominate(tmp_path: Path, docs: dict[str, dict], board: dict[str, Entry]) -> None:
    softmax = board["kernel-exp-attn-softmax"]
    base = {t: softmax.scores[t] for t in FAMILY_TASKS["kernel"]}
    solved = results_doc("solved-linear", {**base, "kernel/linear": -149.2})  # kernel/linear to round-off
    better = results_doc("five-db-better", {t: v - 5 for t, v in base.items()})  # 5 dB better on every task
    ranked = ranked_with(tmp_path, docs, solved, better)
    s, b = ranked["solved-linear"], ranked["five-db-better"]
    assert b.family_ranks["kernel"] < s.family_ranks["kernel"]
    assert b.family_scores["kernel"] > s.family_scores["kernel"]
    # the former rule (mean of dB floored at -100) ranked the other way: the floor outweighed 15 dB of gains
    assert (max(-149.2, -100) + base["kernel/exp"] + base["kernel/relu"]) / 3 < sum(v - 5 for v in base.values()) / 3


def test_worked_example_matches_the_committed_results(board: dict[str, Entry]) -> None:
    pool = [e for e in board.values() if e.family_scores["kernel"] is not None]
    assert f"{len(pool)} models, {len(pool) - 1} others" in RANKING_EXAMPLE
    for name in ("kernel-exp-attn-softmax", "newton @4 steps"):
        e = board[name]
        wins = [sum(compare(e, o, t) < 0 for o in pool if o is not e) for t in FAMILY_TASKS["kernel"]]
        errors = ", ".join(f"{e.scores[t]:.2f}" for t in FAMILY_TASKS["kernel"])
        stated = re.search(rf"{re.escape(name)} \(([-0-9., and]+) dB", RANKING_EXAMPLE).group(1)
        assert stated.replace(" and", ",") == errors
        assert f"{e.family_scores['kernel']:.2f} %, rank {e.family_ranks['kernel']}" in RANKING_EXAMPLE
        assert e.family_scores["kernel"] == pytest.approx(100 * sum(wins) / (3 * (len(pool) - 1)))
        assert f"{wins[0]}, {wins[1]} and {wins[2]}" in RANKING_EXAMPLE
        assert f"{sum(e.scores[t] for t in FAMILY_TASKS['kernel']) / 3:.2f}" in RANKING_EXAMPLE


@pytest.mark.parametrize(("model", "task", "family"), [("lista-cp", "lasso/random", "lasso"), ("ols", "linear/noisy", "linear")])
def test_declaring_a_task_unsupported_never_helps(
    tmp_path: Path, docs: dict[str, dict], model: str, task: str, family: str
) -> None:
    name = f"{model}-as-submitted"  # ols is a reference: ranked here under another name
    full = unsupported(docs[model], name=name)
    dropped = unsupported(docs[model], task, name=name)
    before = ranked_with(tmp_path / "a", {k: v for k, v in docs.items() if k != model}, full)[name]
    after = ranked_with(tmp_path / "b", {k: v for k, v in docs.items() if k != model}, dropped)[name]
    assert before.family_scores[family] is not None and before.family_ranks[family] is not None
    assert after.family_scores[family] is None and after.family_ranks[family] is None
    assert after.score is None and after.rank is None
    for fam in FAMILY_TASKS:
        if fam != family:
            assert (after.family_scores[fam], after.family_ranks[fam]) == (before.family_scores[fam], before.family_ranks[fam])
    assert {t: r for t, r in after.task_ranks.items() if t != task} == {t: r for t, r in before.task_ranks.items() if t != task}


def test_no_subset_of_unsupported_tasks_helps(board: dict[str, Entry]) -> None:
    """Property: for random models and random sets of tasks declared unsupported, no score or rank improves."""
    rng = random.Random(0)
    entries = list(board.values())
    names = sorted(e.name for e in entries if e.ranked)
    for _ in range(25):
        victim = board[rng.choice(names)]
        scored = [t for t in TASKS if victim.scores[t] is not None]
        drop = rng.sample(scored, rng.randint(1, len(scored)))
        doc = unsupported(victim.results, *drop)
        clone = Entry(victim.key, victim.name, victim.kind, doc, victim.meta, victim.command, victim.budget)
        after = {e.name: e for e in rank([clone if e is victim else copy.copy(e) for e in entries])}[victim.name]
        before = {e.name: e for e in rank(list(entries))}[victim.name]
        for fam, names_ in FAMILY_TASKS.items():
            if set(drop) & set(names_):
                assert after.family_scores[fam] is None and after.family_ranks[fam] is None
            else:
                assert after.family_scores[fam] == before.family_scores[fam]
                assert after.family_ranks[fam] == before.family_ranks[fam]
        assert after.score is None or after.score == before.score
        for t in TASKS:
            assert after.task_ranks[t] is None if t in drop else after.task_ranks[t] == before.task_ranks[t]


def test_a_model_claimed_for_a_family_is_judged_on_each_task(tmp_path: Path, docs: dict[str, dict]) -> None:
    """A 3-layer LSA trained on linear/kappa10 and claimed for the whole family (the issue's example)."""
    claimed = results_doc(
        "lsa-3l-kappa10", {"linear/kappa1": -8.0, "linear/kappa10": -8.7, "linear/kappa100": 33.8, "linear/noisy": -4.0}
    )
    honest = results_doc("lsa-3l-kappa10-only", {"linear/kappa10": -8.7})
    ranked = ranked_with(tmp_path, docs, claimed, honest)
    c, h = ranked["lsa-3l-kappa10"], ranked["lsa-3l-kappa10-only"]
    pool = [e for e in ranked.values() if e.family_scores["linear"] is not None]
    assert c in pool and h not in pool
    assert c.task_ranks["linear/kappa100"] == 1 + sum(e is not c for e in pool if e.scores["linear/kappa100"] is not None)
    assert c.task_ranks["linear/kappa10"] == h.task_ranks["linear/kappa10"]  # its real score where it was trained
    by_hand = [
        sum(1 - compare(c, o, t) for o in pool if o is not c) / (2 * (len(pool) - 1)) for t in FAMILY_TASKS["linear"]
    ]
    assert c.family_scores["linear"] == pytest.approx(100 * sum(by_hand) / 4)
    assert by_hand[FAMILY_TASKS["linear"].index("linear/kappa100")] == 0.0  # +33.8 dB loses to every model


def test_family_views_have_their_own_ranks(board: dict[str, Entry]) -> None:
    entries = list(board.values())
    for fam in FAMILY_TASKS:
        view = family_order(entries, fam)
        ranked = [e for e in view if e.family_ranks[fam] is not None]
        assert [e.family_ranks[fam] for e in ranked] == sorted(e.family_ranks[fam] for e in ranked)
        assert ranked[0].family_ranks[fam] == 1 and all(e.ranked for e in ranked)
        scores = [e.family_scores[fam] for e in ranked]
        assert scores == sorted(scores, reverse=True)
        rows = [line for line in tables(entries)[fam].splitlines()[2:]]
        assert rows[0].split("|")[2].strip() == ranked[0].name and rows[0].split("|")[1].strip() == "1"
    assert board["lsa-norm-4l-kappa100"].family_ranks["linear"] == 3  # no overall rank: linear tasks only
    assert board["lsa-norm-4l-kappa100"].rank is None and board["lsa-norm-4l-kappa100"].family_ranks["kernel"] is None


def test_order_and_ties_are_deterministic(board: dict[str, Entry]) -> None:
    entries = list(board.values())
    first = [(e.name, e.rank, dict(e.family_ranks)) for e in rank(list(entries))]
    shuffled = list(entries)
    random.Random(1).shuffle(shuffled)
    assert [(e.name, e.rank, dict(e.family_ranks)) for e in rank(shuffled)] == first
    ista1, fista1 = board["ista @1 step"], board["fista @1 step"]  # the same first step: a tie, listed by name
    assert ista1.family_ranks["linear"] == fista1.family_ranks["linear"]
    names = [e.name for e in family_order(entries, "linear")]
    assert names.index("fista @1 step") < names.index("ista @1 step")


def test_floors_follow_the_dtype() -> None:
    assert FLOOR_DB["float32"] == pytest.approx(-138.47, abs=0.01) and FLOOR_DB["float64"] == -300.0
    docs = {dtype: results_doc(dtype, {"linear/kappa1": -200.0}) for dtype in ("float32", "float64")}
    docs["float64"]["run"]["dtype"] = "float64"
    e32, e64 = (Entry(d, d, "submission", docs[d], {}, "") for d in docs)
    e32.scores, e64.scores = {"linear/kappa1": -150.0}, {"linear/kappa1": -200.0}
    assert compare(e32, e64, "linear/kappa1") == 0  # both below float32's floor: round-off, a tie
    e64.scores["linear/kappa1"] = -250.0
    other = Entry("o", "o", "submission", copy.deepcopy(docs["float64"]), {}, "")
    other.scores = {"linear/kappa1": -200.0}
    assert compare(e64, other, "linear/kappa1") == -1  # two float64 runs are told apart down to -300 dB


def test_depth_by_hand() -> None:
    """Tiny synthetic curves: the smallest whole number of steps reaching the model's error."""
    task = "linear/kappa1"
    gd = Entry("gd", "gd", "reference", results_doc("gd", {task: -8.0}, steps=[-1.0, -2.0, -4.0, -8.0]), {}, "")
    newton = Entry("n", "newton", "reference", results_doc("newton", {task: -3.0}, steps=[-1.0, -3.0]), {}, "")
    model = Entry("m", "m", "submission", results_doc("m", {task: -3.0}, steps=[-2.5, -3.0]), {}, "")
    assert depth(model, task, {"gd": gd, "newton": newton}) == {"gd": 3.0, "newton": 2.0, "ista": None}
    model.results["tasks"][task]["lengths"]["40"]["rel_err"]["db"] = -9.0
    assert depth(model, task, {"gd": gd, "newton": newton}) == {"gd": None, "newton": None, "ista": None}
    flat = Entry("f", "f", "submission", results_doc("f", {task: -3.0}), {}, "")  # no per-layer errors
    assert depth(flat, task, {"gd": gd}) is None


def test_depth_agrees_with_the_findings(tmp_path: Path, baselines: Path, board: dict[str, Entry]) -> None:
    numbers = findings.question2(findings.load(SUBMISSIONS, baselines), tmp_path)["models"]
    solvers = {n: board[n] for n in ("gd", "newton", "ista")}
    for model in findings.Q2_MODELS:
        d = depth(board[model], findings.Q2_TASK, solvers)
        assert (d["gd"], d["newton"]) == (numbers[model]["gd_steps_to_match"], numbers[model]["newton_steps_to_match"])
    assert (depth(board["lsa-4l-kappa100"], findings.Q2_TASK, solvers)["gd"], numbers["lsa-4l-kappa100"]["gd_steps_to_match"]) == (27, 27)


def test_summary_columns(board: dict[str, Entry]) -> None:
    entries = rank(list(board.values()))
    summary = site_summary(entries, "2026-01-01", "0" * 64)
    assert set(summary) == {
        "suite_version", "iclbench_version", "built", "inputs_sha256", "ranking_rule", "ranking_example",
        "families", "tasks", "models",
    }
    model_keys = {
        "key", "name", "kind", "budget_steps", "rank", "score", "coverage", "families", "tasks", "lasso_gap_db",
        "parameters", "date", "paper", "code", "verification", "command", "detail",
    }
    task_keys = {"db", "ci90_db", "rank", "by_length", "depth", "error_rate"}
    assert all(set(m) == model_keys and all(set(t) == task_keys for t in m["tasks"].values()) for m in summary["models"])
    models = {m["name"]: m for m in summary["models"]}
    looped = models["looped-lsa-norm-lasso"]
    fixed, rnd = board["looped-lsa-norm-lasso"].scores["lasso/fixed"], board["looped-lsa-norm-lasso"].scores["lasso/random"]
    assert looped["lasso_gap_db"]["random"] == round(rnd - fixed, 2)
    assert lasso_gap_db(board["looped-lsa-norm-lasso"], 40)["random"] == pytest.approx(
        board["looped-lsa-norm-lasso"].results["tasks"]["lasso/random"]["lengths"]["40"]["rel_err"]["db"]
        - board["looped-lsa-norm-lasso"].results["tasks"]["lasso/fixed"]["lengths"]["40"]["rel_err"]["db"]
    )
    logistic = models["lsa-norm-4l-logistic"]["tasks"]["logistic/kappa1"]
    assert logistic["error_rate"] == round(
        board["lsa-norm-4l-logistic"].results["tasks"]["logistic/kappa1"]["lengths"]["20"]["error_rate"]["value"], 4
    )
    assert logistic["depth"]["gd"] is not None and logistic["depth"]["ista"] is None  # ista does not run there
    sub = models["lsa-4l-kappa100"]
    assert sub["coverage"] == [4, len(TASKS)] and sub["families"]["linear"]["coverage"] == [4, 4] and sub["rank"] is None
    assert set(sub["tasks"]["linear/kappa100"]["by_length"]) == {"5", "10", "20", "40", "80"}
    assert models["gd @4 steps"]["budget_steps"] == 4 and models["gd @4 steps"]["tasks"]["linear/kappa1"]["ci90_db"] is None
